"""Label a series with its contrast phase or sequence type, from rules in a data file.

Which series feed which model channel is a protocol decision that differs per site, so
the rules live in ``phase_rules.toml`` (shipped as package data; a site may pass its own)
and every label carries the reason it was chosen, for the job log and the SR.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from dicom_io.series import SeriesInstances

__all__ = [
    "CT_LABELS",
    "MR_LABELS",
    "PhaseLabel",
    "PhaseRules",
    "default_rules",
    "label_series",
    "load_rules",
]

MR_LABELS = frozenset({"PRE", "AP", "PVP", "DP", "HBP", "T2", "DWI", "ADC", "IN_OPP", "OTHER"})
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
    """Parsed rules; build with :func:`load_rules`."""

    other_image_types: frozenset[str]
    derived_keep: frozenset[str]
    confidence: dict[str, float]
    t1_dynamic: re.Pattern[str]
    rules: dict[str, tuple[_Rule, ...]]  # by modality: "MR", "CT"


def load_rules(path: Path | None = None) -> PhaseRules:
    """Parse a rules file (default: the shipped ``phase_rules.toml``); bad rules raise."""
    if path is None:
        text = resources.files("dicom_io").joinpath("phase_rules.toml").read_text("utf-8")
    else:
        text = Path(path).read_text("utf-8")
    data = tomllib.loads(text)
    return PhaseRules(
        other_image_types=frozenset(v.upper() for v in data["image_type"]["other"]),
        derived_keep=frozenset(v.upper() for v in data["image_type"].get("derived_keep", [])),
        confidence={k: float(v) for k, v in data["confidence"].items()},
        t1_dynamic=re.compile(data["fallback"]["t1_dynamic"]),
        rules={
            "MR": _parse_rules(data.get("mr", []), MR_LABELS, "mr"),
            "CT": _parse_rules(data.get("ct", []), CT_LABELS, "ct"),
        },
    )


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
) -> PhaseLabel:
    """Label one series (its first instance's header is enough)."""
    rules = rules or default_rules()
    ds = _first_dataset(series)
    modality = str(ds.get("Modality", "")).upper()
    if modality not in rules.rules:
        return PhaseLabel("OTHER", 0.95, f"modality {modality or 'missing'} is not MR or CT")
    image_type = _image_type_reason(ds, rules)
    if image_type:
        return PhaseLabel("OTHER", 0.95, image_type)
    label = _by_description(ds, modality, rules) or _fallback(ds, modality, rules)
    return _weigh_contrast(label, _has_contrast_agent(ds), rules)


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
    raw = ds.get("ImageType") or []
    values = [str(v).upper() for v in ([raw] if isinstance(raw, str) else raw)]
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


def _fallback(ds: Dataset, modality: str, rules: PhaseRules) -> PhaseLabel:
    description = normalise_description(str(ds.get("SeriesDescription", "")))
    no_agent = not _has_contrast_agent(ds)
    if modality == "CT" and no_agent:
        return PhaseLabel("CT_NC", rules.confidence["fallback_pre"],
                          "no phase in SeriesDescription and no ContrastBolusAgent")
    if modality == "MR" and no_agent and rules.t1_dynamic.search(description):
        return PhaseLabel("PRE", rules.confidence["fallback_pre"],
                          "T1 dynamic without ContrastBolusAgent")
    return PhaseLabel("OTHER", rules.confidence["fallback_other"],
                      "no rule matched the SeriesDescription")


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
