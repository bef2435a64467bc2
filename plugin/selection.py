"""Choose which labelled series feed a model, and say why.

The bundle names the phases it needs (``AP``, ``PVP`` …); on CT the CT labels stand in for
them. When several series carry a needed label, the rule is stated and recorded: highest
label confidence, then the most slices, then the highest series number (the latest
acquisition wins a repeat).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dicom_io.phases import PhaseLabel, label_series
from dicom_io.series import SeriesInstances

EQUIVALENT_LABELS: dict[str, tuple[str, ...]] = {
    "PRE": ("PRE", "CT_NC"),
    "AP": ("AP", "CT_AP"),
    "PVP": ("PVP", "CT_PVP"),
    "DP": ("DP", "CT_DP"),
}
"""A bundle's phase → the series labels that may serve it (MR label first)."""


@dataclass(frozen=True)
class LabelledSeries:
    """A series with its phase label and the reason for it."""

    series: SeriesInstances
    label: PhaseLabel

    @property
    def summary(self) -> dict[str, object]:
        return {"series_uid": self.series.series_uid, "number": self.series.series_number,
                "description": self.series.description, "modality": self.series.modality,
                "instances": len(self.series.datasets), "label": self.label.label,
                "confidence": round(self.label.confidence, 3), "reason": self.label.reason}


@dataclass(frozen=True)
class Choice:
    """The series chosen for one needed phase, with the reason (or why none)."""

    phase: str
    chosen: LabelledSeries | None
    reason: str


def label_all(series: Sequence[SeriesInstances]) -> list[LabelledSeries]:
    """Label every series of a study."""
    return [LabelledSeries(s, label_series(s)) for s in series]


def _rank(item: LabelledSeries) -> tuple[float, int, int]:
    return (item.label.confidence, len(item.series.datasets), item.series.series_number or 0)


def choose(labelled: Sequence[LabelledSeries], phase: str,
           exclude: frozenset[str] = frozenset()) -> Choice:
    """The best series for ``phase``; ``exclude`` skips series that already failed."""
    wanted = EQUIVALENT_LABELS.get(phase, (phase,))
    candidates = [s for s in labelled
                  if s.label.label in wanted and s.series.series_uid not in exclude]
    if not candidates:
        return Choice(phase, None, f"no usable series labelled {' or '.join(wanted)}")
    ranked = sorted(candidates, key=_rank, reverse=True)
    best = ranked[0]
    reason = f"labelled {best.label.label} ({best.label.reason})"
    if len(ranked) > 1:
        reason += (f"; chosen over {len(ranked) - 1} other candidate(s) by confidence, then "
                   "slice count, then latest series number")
    return Choice(phase, best, reason)
