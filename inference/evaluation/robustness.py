"""Robustness: AUC of a model when one input phase is taken away (seed 000's table).

Seed 000 reported the AUC change per dropped phase (PRE −3.8 %, AP −3.1 %, PVP −1.0 %,
DP 0 %) to show which phases the model leans on. How a phase is removed belongs to whoever
produced the scores (``hepatica evaluate --run`` replaces that phase's features by their
training means); this module only compares the scores, on the same patients, with the full
model's: AUC with its DeLong CI, the change, and the paired DeLong test of the difference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from inference.evaluation import discrimination as disc
from inference.evaluation.discrimination import BoolArray, FloatArray

__all__ = ["RobustnessRow", "robustness_table"]


@dataclass(frozen=True)
class RobustnessRow:
    """The model with the inputs of ``dropped`` removed, against the full model."""

    dropped: str
    inputs_removed: tuple[str, ...]
    auc: disc.AucEstimate
    auc_full: float
    change: float  # AUC(dropped) − AUC(full)
    relative_change: float  # change / AUC(full), seed 000's "−3.1 %"
    comparison: disc.DelongComparison  # full vs dropped, paired on the same patients


def robustness_table(
    full: FloatArray,
    dropped: Mapping[str, FloatArray],
    labels: BoolArray,
    inputs_removed: Mapping[str, Sequence[str]],
) -> tuple[RobustnessRow, ...]:
    """One row per condition in ``dropped`` (scores aligned with ``full`` and ``labels``)."""
    rows = []
    for name, scores in dropped.items():
        if scores.shape != full.shape:
            raise ValueError(f"dropped {name!r}: {scores.shape} scores for {full.shape} patients")
        auc = disc.delong_auc(scores, labels)
        test = disc.delong_test(full, scores, labels, ("full", f"without {name}"))
        change = auc.auc - test.auc_a
        relative = change / test.auc_a if test.auc_a > 0 else float("nan")
        rows.append(RobustnessRow(name, tuple(inputs_removed.get(name, ())), auc, test.auc_a,
                                  change, relative, test))
    return tuple(rows)
