"""Choose which labelled series feed a model, and say why: the one selection path.

Every consumer (segmentation, response models, priors, heatmaps, reader ROI) calls
:func:`select_volume`, so the site's phase rules and the fallback to the next candidate
series reach all of them alike.

The bundle names the phases it needs (``AP``, ``PVP`` …); on CT the CT labels stand in for
them. A dynamic series (several phases in one series) is first split into one candidate per
temporal position. When several series carry a needed label, the rule is stated and
recorded: for the labels in the rules' ``prefer_latest`` (arterial) the latest acquisition
wins (late over early arterial, as LI-RADS prefers); otherwise the highest label
confidence, then the most slices, then the highest series number (a repeat wins).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from pydicom.dataset import Dataset

from dicom_io.phases import (
    PhaseLabel,
    PhaseRules,
    acquisition_seconds,
    default_rules,
    has_contrast_agent,
    label_by_enhancement,
    label_series,
)
from dicom_io.series import (
    GeometryError,
    SeriesInstances,
    place_by_instance_number,
    series_to_volume,
    split_series,
    without_unusable_instances,
)
from dicom_io.volume import Volume

EQUIVALENT_LABELS: dict[str, tuple[str, ...]] = {
    "PRE": ("PRE", "CT_NC"),
    "AP": ("AP", "CT_AP"),
    "PVP": ("PVP", "CT_PVP"),
    "DP": ("DP", "CT_DP"),
}
"""A bundle's phase → the series labels that may serve it (MR label first)."""

_TIMED_REASON = "after ContrastBolusStartTime"
_UNNAMED = "no rule matched the SeriesDescription"
_PRE = {"MR": "PRE", "CT": "CT_NC"}


@dataclass(frozen=True)
class LabelledSeries:
    """A series (or one phase of a dynamic series) with its phase label and the reason."""

    series: SeriesInstances
    label: PhaseLabel

    @property
    def summary(self) -> dict[str, object]:
        return {"series_uid": self.series.series_uid, "number": self.series.series_number,
                "temporal_position": self.series.temporal_position,
                "description": self.series.description, "modality": self.series.modality,
                "instances": len(self.series.datasets), "label": self.label.label,
                "confidence": round(self.label.confidence, 3), "reason": self.label.reason}


@dataclass(frozen=True)
class Choice:
    """The series chosen for one needed phase, with the reason (or why none)."""

    phase: str
    chosen: LabelledSeries | None
    reason: str


def label_all(series: Sequence[SeriesInstances],
              rules: PhaseRules | None = None) -> list[LabelledSeries]:
    """Label every series of a study; multi-phase series become one item per phase."""
    rules = rules or default_rules()
    out: list[LabelledSeries] = []
    for item in series:
        parts = split_series(item)
        if len(parts) == 1:
            out.append(LabelledSeries(item, label_series(item, rules)))
        else:
            out += _label_parts(item, parts, rules)
    return _label_unnamed(out, rules)


def _label_unnamed(items: list[LabelledSeries], rules: PhaseRules) -> list[LabelledSeries]:
    """Study-level evidence for series whose headers alone named no phase.

    A series without contrast agent acquired before the study's bolus start, with the
    sequence of its contrast phases, is the pre-contrast phase. Several still unnamed
    volumes of one grid are ordered in time and labelled by the measured enhancement of
    the aorta and portal vein (:func:`label_by_enhancement`).
    """
    unnamed = [k for k, item in enumerate(items) if item.label.label == "OTHER"
               and item.label.reason.startswith(_UNNAMED)]
    if not unnamed:
        return items
    out = list(items)
    for k in unnamed:
        pre = _pre_contrast(items[k], items)
        if pre is not None:
            out[k] = LabelledSeries(items[k].series, pre)
    still = [k for k in unnamed if out[k].label.label == "OTHER"]
    for group in _same_grid_groups([out[k] for k in still]):
        if len(group) < 2:
            continue
        group.sort(key=_acquired)
        try:
            arrays = [series_to_volume(item.series).array for item in group]
        except GeometryError:
            continue
        measured = label_by_enhancement(arrays, group[0].series.modality, rules)
        for item, label in zip(group, measured, strict=True):
            out[out.index(item)] = LabelledSeries(item.series, label)
    return out


def _pre_contrast(item: LabelledSeries, study: Sequence[LabelledSeries]) -> PhaseLabel | None:
    ds = item.series.first
    modality = item.series.modality.upper()
    if modality not in _PRE or has_contrast_agent(ds):
        return None
    timed = [s for s in study if s.series.modality.upper() == modality
             and _TIMED_REASON in s.label.reason
             and s.series.first.get("SequenceName") == ds.get("SequenceName")]
    starts = [acquisition_seconds(s.series.first.get("ContrastBolusStartTime")) for s in timed]
    known = [t for t in starts if t is not None]
    acquired = acquisition_seconds(ds.get("AcquisitionTime") or ds.get("SeriesTime"))
    if not known or acquired is None or acquired >= min(known):
        return None
    return PhaseLabel(_PRE[modality], 0.8, "no ContrastBolusAgent, acquired "
                      f"{min(known) - acquired:.0f} s before the study's ContrastBolusStartTime, "
                      "same sequence as its contrast phases")


def _same_grid_groups(items: Sequence[LabelledSeries]) -> list[list[LabelledSeries]]:
    groups: dict[tuple[object, ...], list[LabelledSeries]] = {}
    for item in items:
        ds = item.series.first
        key = (item.series.modality, len(item.series.datasets), ds.get("Rows"),
               ds.get("Columns"), str(ds.get("SequenceName", "")))
        groups.setdefault(key, []).append(item)
    return list(groups.values())


def _label_parts(whole: SeriesInstances, parts: list[SeriesInstances],
                 rules: PhaseRules) -> list[LabelledSeries]:
    """Phases of one dynamic series: by delay after the bolus, else by measured enhancement."""
    start = next((str(ds.ContrastBolusStartTime) for ds in whole.datasets
                  if ds.get("ContrastBolusStartTime")), None)
    labels = [label_series(part, rules, bolus_start=start) for part in parts]
    if all(_TIMED_REASON in label.reason for label in labels):
        return [LabelledSeries(p, lab) for p, lab in zip(parts, labels, strict=True)]
    try:
        arrays = [series_to_volume(part).array for part in parts]
    except GeometryError as exc:
        why = f"; phases not measurable: {exc.reason}"
        return [LabelledSeries(p, replace(lab, reason=lab.reason + why))
                for p, lab in zip(parts, labels, strict=True)]
    measured = label_by_enhancement(arrays, whole.modality, rules)
    return [LabelledSeries(p, lab) for p, lab in zip(parts, measured, strict=True)]


def _acquired(item: LabelledSeries) -> float:
    ds = item.series.first
    return acquisition_seconds(ds.get("AcquisitionTime") or ds.get("SeriesTime")) or 0.0


def _rank(item: LabelledSeries, latest_first: bool) -> tuple[float, ...]:
    default = (round(item.label.confidence, 3), len(item.series.datasets),
               item.series.series_number or 0, item.series.temporal_position or 0)
    return (_acquired(item), *default) if latest_first else default


def choose(labelled: Sequence[LabelledSeries], phase: str,
           exclude: frozenset[str] = frozenset(),
           rules: PhaseRules | None = None) -> Choice:
    """The best series for ``phase``; ``exclude`` skips series (UIDs or keys) that failed."""
    rules = rules or default_rules()
    wanted = EQUIVALENT_LABELS.get(phase, (phase,))
    candidates = [s for s in labelled if s.label.label in wanted
                  and s.series.series_uid not in exclude and s.series.key not in exclude]
    if not candidates:
        return Choice(phase, None, f"no usable series labelled {' or '.join(wanted)}")
    latest = bool(rules.prefer_latest.intersection(wanted))
    ranked = sorted(candidates, key=lambda item: _rank(item, latest), reverse=True)
    best = ranked[0]
    reason = f"labelled {best.label.label} ({best.label.reason})"
    if len(ranked) > 1:
        rule = ("latest acquisition (late over early arterial)" if latest else
                "confidence, then slice count, then latest series number")
        reason += f"; chosen over {len(ranked) - 1} other candidate(s) by {rule}"
    return Choice(phase, best, reason)


class NoUsableSeries(LookupError):
    """No series of the study can serve the wanted phase(s); ``reason`` says why."""

    def __init__(self, phases: Sequence[str], reason: str) -> None:
        super().__init__(reason)
        self.phases = tuple(phases)
        self.reason = reason


@dataclass(frozen=True)
class SelectedVolume:
    """The volume that serves one wanted phase, the series it came from and why."""

    phase: str
    """The phase that was served (one of the acceptable ones)."""
    item: LabelledSeries
    volume: Volume
    datasets: tuple[Dataset, ...]
    """The source instance of each z-slice of ``volume``, in array order."""
    reason: str

    @property
    def series_uid(self) -> str:
        return self.item.series.series_uid


def select_volume(labelled: Sequence[LabelledSeries], phases: str | Sequence[str],
                  rules: PhaseRules | None = None,
                  exclude: frozenset[str] = frozenset()) -> SelectedVolume:
    """The usable volume for the first of ``phases`` that the study can serve.

    ``phases`` are acceptable phases in order of preference (a bundle's channel and its
    alternatives). For each, the candidates are ranked by :func:`choose`; a candidate whose
    instances do not stack is first retried without the instances that cannot join its grid
    (the reason is kept), then skipped for the next candidate. Raises
    :class:`NoUsableSeries` with every reason when nothing fits.
    """
    wanted = (phases,) if isinstance(phases, str) else tuple(phases)
    reasons: list[str] = []
    for phase in wanted:
        failed: dict[str, str] = {}
        while True:
            choice = choose(labelled, phase, exclude | frozenset(failed), rules)
            if choice.chosen is None:
                detail = "; ".join(f"series …{uid[-12:]}: {why}" for uid, why in failed.items())
                reasons.append(f"{phase}: {choice.reason}" + (f" ({detail})" if detail else ""))
                break
            try:
                return _stacked(phase, choice)
            except GeometryError as exc:
                failed[choice.chosen.series.key] = exc.reason
    raise NoUsableSeries(wanted, "no usable series for " + " or ".join(wanted) + ": "
                         + "; ".join(reasons))


def _stacked(phase: str, choice: Choice) -> SelectedVolume:
    assert choice.chosen is not None
    item, reason = choice.chosen, choice.reason
    try:
        volume = series_to_volume(item.series)
    except GeometryError as first_error:
        placed = place_by_instance_number(item.series)
        fewer, notes = without_unusable_instances(item.series)
        if not notes and not placed:
            raise
        try:
            volume = series_to_volume(fewer)
        except GeometryError:
            raise first_error from None
        item = LabelledSeries(fewer, item.label)
        reason += "; " + "; ".join([*placed, *notes])
    by_uid = {str(ds.SOPInstanceUID): ds for ds in item.series.datasets}
    datasets = tuple(by_uid[uid] for uid in volume.sop_instance_uids)
    return SelectedVolume(phase, item, volume, datasets, reason)
