"""Label a series with its contrast phase or sequence type, from rules in a data file.

Which series feed which model channel is a protocol decision that differs per site, so
the rules live in ``phase_rules.toml`` (shipped as package data; a site may pass its own)
and every label carries the reason it was chosen, for the job log and the SR.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from dicom_io.series import SeriesInstances

__all__ = [
    "CT_LABELS",
    "MR_LABELS",
    "PhaseLabel",
    "PhaseRules",
    "acquisition_seconds",
    "arterial_index",
    "bolus_delay_s",
    "default_rules",
    "has_contrast_agent",
    "label_by_enhancement",
    "label_by_timing",
    "label_series",
    "load_rules",
    "load_site_rules",
]

MR_LABELS = frozenset({"PRE", "AP", "PVP", "DP", "HBP", "T2", "DWI", "ADC", "IN_OPP", "OTHER"})
"""IN and OPP are one label: a dual-echo acquisition gives both, and models take the pair."""
CT_LABELS = frozenset({"CT_NC", "CT_AP", "CT_PVP", "CT_DP", "OTHER"})
_PRE_CONTRAST = frozenset({"PRE", "CT_NC"})
_POST_CONTRAST = frozenset({"AP", "PVP", "DP", "HBP", "CT_AP", "CT_PVP", "CT_DP"})


@dataclass(frozen=True)
class PhaseLabel:
    """A label, how sure the rules are (0-1), and which rule decided."""

    label: str
    confidence: float
    reason: str


@dataclass(frozen=True)
class _Rule:
    label: str
    pattern: re.Pattern[str]


@dataclass(frozen=True)
class PhaseRules:
    """Parsed rules; build with :func:`load_rules` or :func:`load_site_rules`."""

    other_image_types: frozenset[str]
    derived_keep: frozenset[str]
    confidence: dict[str, float]
    t1_dynamic: re.Pattern[str]
    rules: dict[str, tuple[_Rule, ...]]  # by modality: "MR", "CT"
    image_type_labels: dict[str, str] = field(default_factory=dict)
    timing: dict[str, tuple[float, float]] = field(default_factory=dict)
    hepatobiliary_agent: re.Pattern[str] = re.compile(r"(?i)xetate")
    parameters: tuple[dict[str, Any], ...] = ()
    prefer_latest: frozenset[str] = frozenset()
    min_arterial_ratio: float = 1.15


def _shipped_text() -> str:
    return resources.files("dicom_io").joinpath("phase_rules.toml").read_text("utf-8")


def load_rules(path: Path | None = None) -> PhaseRules:
    """Parse a whole rules file (default: the shipped ``phase_rules.toml``); bad rules raise."""
    text = _shipped_text() if path is None else Path(path).read_text("utf-8")
    return _build_rules(tomllib.loads(text))


def load_site_rules(paths: Sequence[Path]) -> PhaseRules:
    """The shipped rules extended by a site's files, so a site writes only what differs.

    A site file's ``[[mr]]``/``[[ct]]``/``[[mr_parameters]]`` rules are tried *before* the
    shipped ones (a site's protocol names win); its other tables replace the shipped
    values key by key.
    """
    data = tomllib.loads(_shipped_text())
    for path in paths:
        site = tomllib.loads(Path(path).read_text("utf-8"))
        for table, value in site.items():
            if isinstance(value, list):
                data[table] = [*value, *data.get(table, [])]
            elif isinstance(value, dict):
                data[table] = {**data.get(table, {}), **value}
            else:
                data[table] = value
    return _build_rules(data)


def _build_rules(data: dict[str, Any]) -> PhaseRules:
    image_type = data["image_type"]
    timing = dict(data.get("timing", {}))
    agent = str(timing.pop("hepatobiliary_agent", r"(?i)xetate"))
    return PhaseRules(
        other_image_types=frozenset(v.upper() for v in image_type["other"]),
        derived_keep=frozenset(v.upper() for v in image_type.get("derived_keep", [])),
        confidence={k: float(v) for k, v in data["confidence"].items()},
        t1_dynamic=re.compile(data["fallback"]["t1_dynamic"]),
        rules={
            "MR": _parse_rules(data.get("mr", []), MR_LABELS, "mr"),
            "CT": _parse_rules(data.get("ct", []), CT_LABELS, "ct"),
        },
        image_type_labels=_checked_labels(image_type.get("labels", {}), "image_type.labels"),
        timing={_checked(k, "timing"): (float(v[0]), float(v[1])) for k, v in timing.items()},
        hepatobiliary_agent=re.compile(agent),
        parameters=tuple(_checked_parameter(e, n) for n, e in
                         enumerate(data.get("mr_parameters", []), start=1)),
        prefer_latest=frozenset(data.get("selection", {}).get("prefer_latest", [])),
        min_arterial_ratio=float(data.get("enhancement", {}).get("min_arterial_ratio", 1.15)),
    )


def _checked(label: str, table: str) -> str:
    if label not in MR_LABELS | CT_LABELS:
        raise ValueError(f"[{table}]: unknown label {label!r}; expected one of "
                         f"{sorted(MR_LABELS | CT_LABELS)}")
    return label


def _checked_labels(mapping: dict[str, Any], table: str) -> dict[str, str]:
    return {str(k).upper(): _checked(str(v), table) for k, v in mapping.items()}


def _checked_parameter(entry: dict[str, Any], number: int) -> dict[str, Any]:
    _checked(str(entry.get("label")), f"[mr_parameters]] rule {number}")
    return dict(entry)


def _parse_rules(
    entries: list[dict[str, Any]], allowed: frozenset[str], table: str
) -> tuple[_Rule, ...]:
    rules = []
    for number, entry in enumerate(entries, start=1):
        label = str(entry["label"])
        if label not in allowed:
            raise ValueError(f"[[{table}]] rule {number}: unknown label {label!r}; "
                             f"expected one of {sorted(allowed)}")
        try:
            rules.append(_Rule(label, re.compile(str(entry["pattern"]))))
        except re.error as exc:
            raise ValueError(f"[[{table}]] rule {number}: bad pattern: {exc}") from exc
    return tuple(rules)


@lru_cache(maxsize=1)
def default_rules() -> PhaseRules:
    """The shipped rules, parsed once."""
    return load_rules()


def normalise_description(text: str) -> str:
    """Lower case, non-alphanumerics to single spaces: vendor styles then look alike."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


def label_series(
    series: SeriesInstances | Dataset | Sequence[Dataset],
    rules: PhaseRules | None = None,
    *,
    bolus_start: str | None = None,
) -> PhaseLabel:
    """Label one series (its first instance's header is enough).

    ``bolus_start`` (HHMMSS) is the series' ContrastBolusStartTime when the instances at
    hand lack it: the pre-contrast phase of a dynamic series is written before the bolus.
    One phase of a multi-phase series is labelled by its delay first.
    """
    rules = rules or default_rules()
    ds = _first_dataset(series)
    modality = str(ds.get("Modality", "")).upper()
    if modality not in rules.rules:
        return PhaseLabel("OTHER", 0.95, f"modality {modality or 'missing'} is not MR or CT")
    named = _image_type_label(ds, rules)
    if named:
        return named
    image_type = _image_type_reason(ds, rules)
    if image_type:
        return PhaseLabel("OTHER", 0.95, image_type)
    is_part = isinstance(series, SeriesInstances) and series.temporal_position is not None
    timed = label_by_timing(ds, modality, rules, bolus_start) if is_part else None
    label = (timed or _by_description(ds, modality, rules) or _by_parameters(ds, modality, rules)
             or _fallback(ds, modality, rules, bolus_start))
    return _weigh_contrast(label, _has_contrast_agent(ds), rules)


def acquisition_seconds(value: object) -> float | None:
    """Seconds since midnight of a DICOM TM value (HHMMSS.ffffff), None when unreadable."""
    text = str(value or "").strip().replace(":", "")
    match = re.fullmatch(r"(\d{2})(\d{2})?(\d{2})?(\.\d+)?", text)
    if not match:
        return None
    hours, minutes, seconds, fraction = match.groups()
    return (int(hours) * 3600 + int(minutes or 0) * 60 + int(seconds or 0)
            + float(fraction or 0.0))


def bolus_delay_s(ds: Dataset, bolus_start: str | None = None) -> float | None:
    """AcquisitionTime (else SeriesTime) minus ContrastBolusStartTime, in seconds."""
    start = acquisition_seconds(ds.get("ContrastBolusStartTime") or bolus_start)
    acquired = acquisition_seconds(ds.get("AcquisitionTime") or ds.get("SeriesTime"))
    if start is None or acquired is None:
        return None
    return acquired - start


def label_by_timing(ds: Dataset, modality: str, rules: PhaseRules,
                    bolus_start: str | None = None) -> PhaseLabel | None:
    """The phase whose ``[timing]`` band holds the delay after the bolus, if known."""
    delay = bolus_delay_s(ds, bolus_start)
    if delay is None:
        return None
    for label, (low, high) in rules.timing.items():
        if low <= delay < high:
            label = _hepatobiliary_or_delayed(label, ds, rules)
            label = f"CT_{'NC' if label == 'PRE' else label}" if modality == "CT" else label
            if label not in rules_labels(modality):
                return None
            return PhaseLabel(label, rules.confidence.get("timing", 0.85),
                              f"acquired {delay:+.0f} s after ContrastBolusStartTime")
    return None


def rules_labels(modality: str) -> frozenset[str]:
    return MR_LABELS if modality == "MR" else CT_LABELS


def _hepatobiliary_or_delayed(label: str, ds: Dataset, rules: PhaseRules) -> str:
    if label != "HBP":
        return label
    agent = str(ds.get("ContrastBolusAgent", "") or "")
    return "HBP" if rules.hepatobiliary_agent.search(agent) else "DP"


def _image_type_label(ds: Dataset, rules: PhaseRules) -> PhaseLabel | None:
    """A label that an ImageType value names outright (an ADC map is DERIVED yet wanted)."""
    for value in _image_type_values(ds):
        if value in rules.image_type_labels:
            return PhaseLabel(rules.image_type_labels[value], 0.95,
                              f"ImageType contains {value}")
    return None


def _image_type_values(ds: Dataset) -> list[str]:
    raw = ds.get("ImageType") or []
    return [str(v).upper() for v in ([raw] if isinstance(raw, str) else raw)]


def _by_parameters(ds: Dataset, modality: str, rules: PhaseRules) -> PhaseLabel | None:
    """Sequence parameters (b-value, ScanningSequence, TE/TR) when the description is silent."""
    if modality != "MR":
        return None
    for rule in rules.parameters:
        if _parameters_match(ds, rule):
            return PhaseLabel(str(rule["label"]), rules.confidence.get("parameters", 0.7),
                              f"sequence parameters match {_rule_text(rule)}")
    return None


def _number(ds: Dataset, keyword: str) -> float | None:
    try:
        value = ds.get(keyword)
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


def _parameters_match(ds: Dataset, rule: dict[str, Any]) -> bool:
    checks = {"b_value": "DiffusionBValue", "te": "EchoTime", "tr": "RepetitionTime"}
    for prefix, keyword in checks.items():
        low, high = rule.get(f"{prefix}_min"), rule.get(f"{prefix}_max")
        if low is None and high is None:
            continue
        value = _number(ds, keyword)
        if value is None or (low is not None and value < low) or (
                high is not None and value > high):
            return False
    scanning = [str(v).upper() for v in (ds.get("ScanningSequence") or [])] if not isinstance(
        ds.get("ScanningSequence"), str) else [str(ds.ScanningSequence).upper()]
    if "scanning" in rule and str(rule["scanning"]).upper() not in scanning:
        return False
    acquisition = str(ds.get("MRAcquisitionType", "")).upper()
    return "acquisition" not in rule or str(rule["acquisition"]).upper() == acquisition


def _rule_text(rule: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in rule.items() if k != "label")


def _first_dataset(series: SeriesInstances | Dataset | Sequence[Dataset]) -> Dataset:
    if isinstance(series, SeriesInstances):
        return series.first
    if isinstance(series, Dataset):
        return series
    if not series:
        raise ValueError("cannot label an empty series")
    return series[0]


def _image_type_reason(ds: Dataset, rules: PhaseRules) -> str:
    """Why ImageType excludes the series, or '' when it does not."""
    values = _image_type_values(ds)
    hits = [v for v in values if v in rules.other_image_types]
    if hits == ["DERIVED"] and rules.derived_keep.intersection(values):
        return ""
    return f"ImageType contains {hits[0]}" if hits else ""


def _by_description(ds: Dataset, modality: str, rules: PhaseRules) -> PhaseLabel | None:
    description = normalise_description(str(ds.get("SeriesDescription", "")))
    for rule in rules.rules[modality]:
        match = rule.pattern.search(description)
        if match:
            return PhaseLabel(rule.label, rules.confidence["description"],
                              f"SeriesDescription matches {match.group(0)!r}")
    return None


def _fallback(ds: Dataset, modality: str, rules: PhaseRules,
              bolus_start: str | None = None) -> PhaseLabel:
    description = normalise_description(str(ds.get("SeriesDescription", "")))
    no_agent = not _has_contrast_agent(ds)
    # a blank or unknown description says nothing against timing: many sites' descriptions
    # are cryptic or not in English, while the bolus start and acquisition times are reliable
    if rules.t1_dynamic.search(description) or modality == "CT" or not _names_a_sequence(
            description, rules):
        timed = label_by_timing(ds, modality, rules, bolus_start)
        if timed is not None:
            return timed
    if modality == "CT" and no_agent:
        return PhaseLabel("CT_NC", rules.confidence["fallback_pre"],
                          "no phase in SeriesDescription and no ContrastBolusAgent")
    if modality == "MR" and no_agent and rules.t1_dynamic.search(description):
        return PhaseLabel("PRE", rules.confidence["fallback_pre"],
                          "T1 dynamic without ContrastBolusAgent")
    return PhaseLabel("OTHER", rules.confidence["fallback_other"],
                      "no rule matched the SeriesDescription")


def _names_a_sequence(description: str, rules: PhaseRules) -> bool:
    """True when the description names a known sequence (a T2 or a DWI is never timed)."""
    return bool(description) and any(rule.pattern.search(description)
                                     for rules_of in rules.rules.values() for rule in rules_of)


def has_contrast_agent(ds: Dataset) -> bool:
    """ContrastBolusAgent, or the enhanced IODs' agent sequence, is present and not empty."""
    return _has_contrast_agent(ds)


def _has_contrast_agent(ds: Dataset) -> bool:
    """ContrastBolusAgent, or the enhanced IODs' agent sequence, is present and not empty."""
    agent = str(ds.get("ContrastBolusAgent", "") or "").strip()
    return bool(agent) or bool(ds.get("ContrastBolusAgentSequence"))


def _weigh_contrast(label: PhaseLabel, has_agent: bool, rules: PhaseRules) -> PhaseLabel:
    """Adjust confidence by whether the contrast tag agrees with the description."""
    if not label.reason.startswith("SeriesDescription"):
        return label
    conf = rules.confidence
    if label.label in _POST_CONTRAST:
        delta, note = ((conf["contrast_agrees"], "ContrastBolusAgent set") if has_agent
                       else (conf["contrast_absent_after_injection"], "no ContrastBolusAgent"))
    elif label.label in _PRE_CONTRAST:
        delta, note = ((conf["contrast_present_before_injection"],
                        "but ContrastBolusAgent is set") if has_agent
                       else (conf["contrast_agrees"], "no ContrastBolusAgent"))
    else:
        return label
    confidence = min(1.0, max(0.0, label.confidence + delta))
    return PhaseLabel(label.label, round(confidence, 3), f"{label.reason}; {note}")


def arterial_index(array: npt.NDArray[np.floating]) -> float:
    """How far the brightest vessels (the aorta in an arterial phase) outshine the rest.

    p99.5 of the body over the median of its brighter half (enhanced parenchyma, portal
    vein): high when only the arteries are bright, lower once the portal vein and the
    parenchyma catch up. Body = voxels above 10 % of the p99.9 (air and noise excluded).
    """
    values = np.asarray(array, dtype=np.float32).ravel()
    top = float(np.percentile(values, 99.9))
    body = values[values > 0.1 * top] if top > 0 else values
    if body.size < 10:
        return 0.0
    upper = body[body >= np.median(body)]
    reference = float(np.median(upper))
    return float(np.percentile(body, 99.5)) / reference if reference > 0 else 0.0


def label_by_enhancement(arrays: Sequence[npt.NDArray[np.floating]], modality: str,
                         rules: PhaseRules | None = None) -> list[PhaseLabel]:
    """Labels for time-ordered post-contrast volumes whose headers name no phase.

    The volume with the highest :func:`arterial_index` is arterial, and so is any later
    one within 80 % of it (early and late arterial); earlier ones are PRE, the first
    after the arterial ones PVP, the rest DP. With a peak less than
    ``min_arterial_ratio`` over the runner-up the order is unsure: all stay OTHER.
    """
    rules = rules or default_rules()
    indices = [arterial_index(a) for a in arrays]
    names = (("CT_NC", "CT_AP", "CT_PVP", "CT_DP") if modality == "CT"
             else ("PRE", "AP", "PVP", "DP"))
    confidence = rules.confidence.get("enhancement", 0.6)
    ranked = sorted(indices, reverse=True)
    if len(indices) < 2 or ranked[0] < rules.min_arterial_ratio * max(min(indices), 1e-6):
        return [PhaseLabel("OTHER", 0.3, "no phase in the headers and no clear arterial "
                           "peak in the measured enhancement") for _ in arrays]
    peak = int(np.argmax(indices))
    labels, after = [], 0
    for k, index in enumerate(indices):
        if k < peak:
            name = names[0]
        elif k == peak or (index >= 0.8 * indices[peak] and after == 0):
            name = names[1]
        else:
            after += 1
            name = names[2] if after == 1 else names[3]
        labels.append(PhaseLabel(name, confidence, f"measured arterial index {index:.2f} "
                                 f"(peak {indices[peak]:.2f}, position {k + 1} in time)"))
    return labels
