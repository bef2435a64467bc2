"""RECIST 1.1 and mRECIST categories from lesion truth, by the criteria's own rules.

An independent reference for the measurement code in ``inference``: targets are the two
largest measurable (≥ 10 mm) lesions of the liver (RECIST 1.1 allows two per organ);
mRECIST measures the enhancing (viable) diameter of the same targets. PR: sum ≤ −30 %
from baseline; PD: sum ≥ +20 % over the nadir and ≥ 5 mm, or any new lesion; CR: every
target gone (RECIST) or no enhancing tumour left (mRECIST).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MEASURABLE_MM = 10.0
MAX_TARGETS = 2
_ORDER = {"CR": 0, "PR": 1, "SD": 2, "PD": 3}


@dataclass(frozen=True)
class Assessment:
    """One follow-up's sums and categories (relative change to baseline, to nadir)."""

    recist_sum_mm: float
    mrecist_sum_mm: float
    recist: str
    mrecist: str
    new_lesions: int


def targets(diameters: Sequence[float]) -> list[int]:
    """Indices of the target lesions: the largest measurable ones, at most two."""
    order = sorted(range(len(diameters)), key=lambda i: -diameters[i])
    return [i for i in order if diameters[i] >= MEASURABLE_MM][:MAX_TARGETS]


def category(baseline: float, nadir: float, current: float, new_lesions: int) -> str:
    """The RECIST-family category of one sum of diameters."""
    if new_lesions > 0:
        return "PD"
    if current - nadir >= 0.2 * nadir and current - nadir >= 5.0:
        return "PD"
    if current < 1.0:
        return "CR"
    if current <= 0.7 * baseline:
        return "PR"
    return "SD"


def assess(baseline: Sequence[tuple[float, float]],
           followups: Sequence[tuple[Sequence[tuple[float, float]], int]]) -> list[Assessment]:
    """Categories per follow-up; lesions are (whole, viable) diameters in baseline order."""
    chosen = targets([whole for whole, _ in baseline])
    sums = [(sum(baseline[i][0] for i in chosen), sum(baseline[i][1] for i in chosen))]
    out = []
    for lesions, new in followups:
        whole = sum(lesions[i][0] if i < len(lesions) else 0.0 for i in chosen)
        viable = sum(lesions[i][1] if i < len(lesions) else 0.0 for i in chosen)
        nadir_w, nadir_v = min(s[0] for s in sums), min(s[1] for s in sums)
        out.append(Assessment(whole, viable, category(sums[0][0], nadir_w, whole, new),
                              category(sums[0][1], nadir_v, viable, new), new))
        sums.append((whole, viable))
    return out


def best(categories: Sequence[str]) -> str:
    """Best overall response (confirmation not modelled: the phantoms have no noise in it)."""
    return min(categories, key=lambda c: _ORDER[c]) if categories else "NE"
