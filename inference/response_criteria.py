"""RECIST 1.1 and mRECIST response between time points, from measured lesions (pure numpy).

Lesions are matched across time points by centroid distance in patient millimetres after
the two livers' centroids are aligned (the patient lies differently at every visit; the
liver moves with the breath hold), greedily nearest first, within ``tolerance_mm``. Target
lesions are chosen at baseline by RECIST 1.1 (Eisenhauer 2009, §4.3): measurable (longest
diameter ≥ 10 mm), the largest first, at most 2 per organ and 5 in all — every lesion here
is in the liver, so at most 2. mRECIST (Lencioni & Llovet 2010) measures the viable,
arterially enhancing diameter of the same targets.

Categories (both criteria, on the sum of target diameters): PD when the sum grew by ≥ 20 %
over the nadir *and* by ≥ 5 mm, or a new lesion appeared; CR when no target is left
(sum < 1 mm); PR when the sum fell ≥ 30 % below baseline; else SD. Non-target lesions and
confirmation scans are not modelled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "MATCH_TOLERANCE_MM",
    "LesionObservation",
    "LesionResponse",
    "ResponseAssessment",
    "TimePoint",
    "assess_response",
    "category",
    "choose_targets",
    "match_lesions",
]

MATCH_TOLERANCE_MM = 15.0
"""Largest centroid distance (mm, livers aligned) at which two lesions are the same one."""
MEASURABLE_MM = 10.0
NEW_LESION_MM = 10.0  # a new lesion must be measurable to count (mRECIST: ≥ 1 cm)
MAX_PER_ORGAN, MAX_TARGETS = 2, 5
GONE_MM = 1.0
RULES_TEXT = ("RECIST 1.1 / mRECIST: targets = largest lesions >= 10 mm, 2 per organ, 5 in "
              "all; PD >= +20 % and >= +5 mm over nadir or a new lesion >= 10 mm; CR sum "
              "< 1 mm; PR <= -30 % of baseline; lesions matched by centroid within "
              f"{MATCH_TOLERANCE_MM:.0f} mm after aligning liver centroids")


@dataclass(frozen=True)
class LesionObservation:
    """One lesion as measured at one time point."""

    label: int
    centroid_mm: tuple[float, float, float]
    diameter_mm: float
    viable_diameter_mm: float | None
    organ: str = "liver"


@dataclass(frozen=True)
class TimePoint:
    """One study's lesions; ``when`` sorts chronologically (``YYYYMMDDHHMMSS``)."""

    study_uid: str
    when: str
    liver_centroid_mm: tuple[float, float, float]
    lesions: tuple[LesionObservation, ...]


@dataclass(frozen=True)
class LesionResponse:
    """One lesion of the current study (or one baseline target that disappeared)."""

    status: str  # "target" | "non-target" | "new"
    baseline_label: int | None
    current_label: int | None
    baseline_diameter_mm: float | None
    current_diameter_mm: float
    baseline_viable_mm: float | None
    current_viable_mm: float | None
    distance_mm: float | None

    @property
    def change_pct(self) -> float | None:
        base = self.baseline_diameter_mm
        return None if not base else 100.0 * (self.current_diameter_mm - base) / base


@dataclass(frozen=True)
class ResponseAssessment:
    """Overall RECIST 1.1 and mRECIST result of the latest time point against the earlier."""

    baseline_study_uid: str
    current_study_uid: str
    recist: str
    mrecist: str
    baseline_sum_mm: float
    nadir_sum_mm: float
    current_sum_mm: float
    baseline_viable_sum_mm: float
    nadir_viable_sum_mm: float
    current_viable_sum_mm: float
    new_lesions: int
    lesions: tuple[LesionResponse, ...]
    tolerance_mm: float = MATCH_TOLERANCE_MM
    rules: str = RULES_TEXT

    @property
    def change_from_baseline_pct(self) -> float:
        return _pct(self.current_sum_mm, self.baseline_sum_mm)

    @property
    def viable_change_from_baseline_pct(self) -> float:
        return _pct(self.current_viable_sum_mm, self.baseline_viable_sum_mm)


def _pct(current: float, baseline: float) -> float:
    return 100.0 * (current - baseline) / baseline if baseline > 0 else 0.0


def choose_targets(lesions: Sequence[LesionObservation]) -> list[int]:
    """Labels of the target lesions: largest measurable first, 2 per organ, 5 in all."""
    per_organ: dict[str, int] = {}
    chosen: list[int] = []
    for lesion in sorted(lesions, key=lambda x: -x.diameter_mm):
        if lesion.diameter_mm < MEASURABLE_MM or len(chosen) >= MAX_TARGETS:
            continue
        if per_organ.get(lesion.organ, 0) < MAX_PER_ORGAN:
            per_organ[lesion.organ] = per_organ.get(lesion.organ, 0) + 1
            chosen.append(lesion.label)
    return chosen


def match_lesions(earlier: TimePoint, later: TimePoint,
                  tolerance_mm: float = MATCH_TOLERANCE_MM) -> dict[int, tuple[int, float]]:
    """Earlier label → (later label, distance mm), nearest pairs first, one-to-one."""
    if not earlier.lesions or not later.lesions:
        return {}
    shift = np.subtract(later.liver_centroid_mm, earlier.liver_centroid_mm)
    a = np.asarray([x.centroid_mm for x in earlier.lesions]) + shift
    b = np.asarray([x.centroid_mm for x in later.lesions])
    distances = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=2)
    pairs: dict[int, tuple[int, float]] = {}
    used: set[int] = set()
    for flat in np.argsort(distances, axis=None):
        i, j = np.unravel_index(int(flat), distances.shape)
        if distances[i, j] > tolerance_mm:
            break
        if earlier.lesions[i].label in pairs or int(j) in used:
            continue
        pairs[earlier.lesions[i].label] = (later.lesions[j].label, float(distances[i, j]))
        used.add(int(j))
    return pairs


def category(baseline: float, nadir: float, current: float, new_lesions: int) -> str:
    """The RECIST-family category of one sum of target diameters (mm)."""
    if new_lesions > 0 or (current - nadir >= 0.2 * nadir and current - nadir >= 5.0):
        return "PD"
    if current < GONE_MM:
        return "CR"
    if current <= 0.7 * baseline:
        return "PR"
    return "SD"


def _sums(baseline: TimePoint, point: TimePoint, targets: list[int],
          tolerance_mm: float) -> tuple[float, float]:
    """Sum of whole and viable diameters of the baseline targets found at ``point``."""
    matched = match_lesions(baseline, point, tolerance_mm)
    by_label = {x.label: x for x in point.lesions}
    whole = viable = 0.0
    for target in targets:
        if target in matched:
            lesion = by_label[matched[target][0]]
            whole += lesion.diameter_mm
            viable += lesion.viable_diameter_mm or 0.0
    return whole, viable


def assess_response(timepoints: Sequence[TimePoint],
                    tolerance_mm: float = MATCH_TOLERANCE_MM) -> ResponseAssessment:
    """Categories of the latest time point; the earliest is the baseline, nadirs span all."""
    if len(timepoints) < 2:
        raise ValueError("a response needs a baseline and a follow-up time point")
    ordered = sorted(timepoints, key=lambda t: t.when)
    baseline, current = ordered[0], ordered[-1]
    targets = choose_targets(baseline.lesions)
    sums = [_sums(baseline, tp, targets, tolerance_mm) for tp in ordered]
    base_w = sum(x.diameter_mm for x in baseline.lesions if x.label in targets)
    base_v = sum(x.viable_diameter_mm or 0.0 for x in baseline.lesions if x.label in targets)
    sums[0] = (base_w, base_v)
    nadir_w, nadir_v = min(s[0] for s in sums[:-1]), min(s[1] for s in sums[:-1])
    lesions = _lesion_responses(baseline, current, targets, tolerance_mm)
    new = sum(1 for x in lesions if x.status == "new")
    (cur_w, cur_v) = sums[-1]
    return ResponseAssessment(
        baseline.study_uid, current.study_uid,
        category(base_w, nadir_w, cur_w, new), category(base_v, nadir_v, cur_v, new),
        base_w, nadir_w, cur_w, base_v, nadir_v, cur_v, new, tuple(lesions), tolerance_mm)


def _lesion_responses(baseline: TimePoint, current: TimePoint, targets: list[int],
                      tolerance_mm: float) -> list[LesionResponse]:
    matched = match_lesions(baseline, current, tolerance_mm)
    by_label = {x.label: x for x in current.lesions}
    out: list[LesionResponse] = []
    for lesion in baseline.lesions:
        status = "target" if lesion.label in targets else "non-target"
        found = matched.get(lesion.label)
        now = by_label[found[0]] if found else None
        out.append(LesionResponse(
            status, lesion.label, now.label if now else None, lesion.diameter_mm,
            now.diameter_mm if now else 0.0, lesion.viable_diameter_mm,
            (now.viable_diameter_mm if now else 0.0), found[1] if found else None))
    seen = {pair[0] for pair in matched.values()}
    for lesion in current.lesions:
        if lesion.label not in seen:
            status = "new" if lesion.diameter_mm >= NEW_LESION_MM else "non-target"
            out.append(LesionResponse(status, None, lesion.label, None, lesion.diameter_mm,
                                      None, lesion.viable_diameter_mm, None))
    return out
