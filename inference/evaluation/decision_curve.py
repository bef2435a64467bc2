"""Decision-curve analysis (Vickers & Elkin 2006), as in seeds 000 and 003.

Net benefit weighs true positives against false positives by the odds of the threshold
probability a clinician would act at: NB(pt) = TP/n − FP/n · pt / (1 − pt).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inference.evaluation.discrimination import BoolArray, FloatArray

__all__ = ["DecisionCurve", "default_thresholds", "net_benefit"]


@dataclass(frozen=True)
class DecisionCurve:
    """Net benefit of the model, of treating everyone and of treating no one (always 0)."""

    thresholds: tuple[float, ...]
    model: tuple[float, ...]
    treat_all: tuple[float, ...]
    treat_none: tuple[float, ...]


def default_thresholds() -> FloatArray:
    """0.01 … 0.99: the range where the odds pt/(1 − pt) stay finite."""
    return np.round(np.arange(1, 100) / 100.0, 2)


def net_benefit(p: FloatArray, y: BoolArray, thresholds: FloatArray | None = None) -> DecisionCurve:
    """Net benefit at each threshold, treating a patient when p ≥ pt."""
    pts = default_thresholds() if thresholds is None else np.asarray(thresholds, np.float64)
    n = float(y.size)
    prevalence = float(y.mean())
    treated = p[None, :] >= pts[:, None]
    tp = (treated & y[None, :]).sum(axis=1) / n
    fp = (treated & ~y[None, :]).sum(axis=1) / n
    odds = pts / (1.0 - pts)
    model = tp - fp * odds
    treat_all = prevalence - (1.0 - prevalence) * odds
    return DecisionCurve(
        tuple(pts.tolist()),
        tuple(model.tolist()),
        tuple(treat_all.tolist()),
        tuple([0.0] * pts.size),
    )
