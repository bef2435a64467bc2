"""Choose which labelled series feed a model, and say why.

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

from dicom_io.phases import (
    PhaseLabel,
    PhaseRules,
    acquisition_seconds,
    default_rules,
    label_by_enhancement,
    label_series,
)
from dicom_io.series import GeometryError, SeriesInstances, series_to_volume, split_series

EQUIVALENT_LABELS: dict[str, tuple[str, ...]] = {
    "PRE": ("PRE", "CT_NC"),
    "AP": ("AP", "CT_AP"),
    "PVP": ("PVP", "CT_PVP"),
    "DP": ("DP", "CT_DP"),
}
"""A bundle's phase → the series labels that may serve it (MR label first)."""

_TIMED_REASON = "after ContrastBolusStartTime"


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
    return out


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
