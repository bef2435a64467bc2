"""Calibration: does a predicted 30 % mean 30 of 100 such patients respond?

Seed 001 reports Hosmer–Lemeshow and Spiegelhalter's Z; the Brier score summarises accuracy of
the probabilities themselves. All functions need scores that are probabilities in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from inference.evaluation.discrimination import BoolArray, FloatArray, clopper_pearson

__all__ = [
    "CalibrationBin",
    "HosmerLemeshow",
    "SpiegelhalterZ",
    "brier_score",
    "calibration_curve",
    "hosmer_lemeshow",
    "spiegelhalter_z",
]


@dataclass(frozen=True)
class CalibrationBin:
    """One point of the calibration plot: mean prediction vs observed rate with exact CI."""

    n: int
    events: int
    mean_predicted: float
    observed: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class HosmerLemeshow:
    """Hosmer–Lemeshow C-hat: risk-ordered groups, chi-square on g − 2 degrees of freedom."""

    statistic: float
    df: int
    p_value: float
    groups: tuple[CalibrationBin, ...]


@dataclass(frozen=True)
class SpiegelhalterZ:
    """Spiegelhalter (1986) Z: a Brier-score test, sensitive to over-/under-confidence."""

    z: float
    p_value: float


def _risk_groups(p: FloatArray, n_groups: int) -> list[NDArray[np.intp]]:
    """Indices split into ``n_groups`` near-equal groups by ascending risk (stable on ties)."""
    order = np.argsort(p, kind="mergesort")
    return [g for g in np.array_split(order, min(n_groups, p.size)) if g.size]


def _bin(p: FloatArray, y: BoolArray, idx: NDArray[np.intp]) -> CalibrationBin:
    """Summary of one group of patients."""
    events = int(y[idx].sum())
    ci = clopper_pearson(events, int(idx.size))
    return CalibrationBin(
        int(idx.size), events, float(p[idx].mean()), ci.estimate, ci.ci_low, ci.ci_high
    )


def calibration_curve(p: FloatArray, y: BoolArray, n_bins: int = 10) -> tuple[CalibrationBin, ...]:
    """Equal-size risk groups, so every point rests on the same number of patients."""
    return tuple(_bin(p, y, idx) for idx in _risk_groups(p, n_bins))


def hosmer_lemeshow(p: FloatArray, y: BoolArray, n_groups: int = 10) -> HosmerLemeshow:
    """Σ (O − E)² / (E (1 − E/n)) over risk groups; groups with zero variance add nothing."""
    groups = calibration_curve(p, y, n_groups)
    statistic = 0.0
    for g in groups:
        expected = g.mean_predicted * g.n
        variance = expected * (1.0 - g.mean_predicted)
        if variance > 0:
            statistic += (g.events - expected) ** 2 / variance
    df = len(groups) - 2
    p_value = float(stats.chi2.sf(statistic, df)) if df > 0 else float("nan")
    return HosmerLemeshow(float(statistic), df, p_value, groups)


def spiegelhalter_z(p: FloatArray, y: BoolArray) -> SpiegelhalterZ:
    """Z = Σ (y − p)(1 − 2p) / sqrt(Σ (1 − 2p)² p (1 − p)); two-sided normal p-value."""
    yf = y.astype(np.float64)
    numerator = float(np.sum((yf - p) * (1 - 2 * p)))
    variance = float(np.sum((1 - 2 * p) ** 2 * p * (1 - p)))
    if variance <= 0:
        return SpiegelhalterZ(float("nan"), float("nan"))
    z = numerator / np.sqrt(variance)
    return SpiegelhalterZ(float(z), float(2 * stats.norm.sf(abs(z))))


def brier_score(p: FloatArray, y: BoolArray) -> float:
    """Mean squared difference between predicted probability and outcome (0 is perfect)."""
    return float(np.mean((p - y.astype(np.float64)) ** 2))
