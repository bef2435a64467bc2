"""RECIST 1.1 / mRECIST by the criteria's rules: targets, matching, categories, new lesions."""

from __future__ import annotations

import pytest

from inference.response_criteria import (
    LesionObservation,
    TimePoint,
    assess_response,
    category,
    choose_targets,
    match_lesions,
)


def _tp(uid: str, when: str, lesions: list[tuple[float, float, float, float, float]],
        liver: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> TimePoint:
    return TimePoint(uid, when, liver, tuple(
        LesionObservation(k + 1, (x, y, z), d, v) for k, (x, y, z, d, v) in enumerate(lesions)))


@pytest.mark.parametrize(("baseline", "nadir", "now", "new", "expected"), [
    (100, 100, 70, 0, "PR"), (100, 100, 71, 0, "SD"), (100, 50, 60, 0, "PD"),
    (100, 20, 24, 0, "PR"), (100, 100, 100, 1, "PD"), (100, 100, 0, 0, "CR"),
    (20, 20, 24.5, 0, "SD"),  # +22 % but only +4.5 mm: the 5 mm absolute rule holds PD off
])
def test_category_thresholds(baseline: float, nadir: float, now: float, new: int,
                             expected: str) -> None:
    assert category(baseline, nadir, now, new) == expected


def test_targets_two_per_organ_five_in_all() -> None:
    lesions = [LesionObservation(k, (0, 0, 0), d, d) for k, d in
               enumerate([8.0, 30.0, 12.0, 25.0], start=1)]
    assert choose_targets(lesions) == [2, 4]
    many = [LesionObservation(k, (0, 0, 0), 20.0 + k, None, organ=f"o{k % 4}")
            for k in range(1, 9)]
    assert len(choose_targets(many)) == 5


def test_matching_aligns_livers_and_respects_tolerance() -> None:
    before = _tp("a", "20250101", [(10, 10, 10, 30, 30), (60, 0, 0, 20, 20)])
    after = _tp("b", "20250301", [(72, 5, 1, 18, 10), (21, 14, 10, 25, 20)],
                liver=(10.0, 5.0, 0.0))
    assert {k: v[0] for k, v in match_lesions(before, after).items()} == {1: 2, 2: 1}
    far = _tp("c", "20250301", [(100, 100, 100, 25, 20)])
    assert match_lesions(before, far) == {}


def test_assessment_pr_then_pd_from_nadir_with_new_lesion() -> None:
    base = _tp("b", "20250101", [(0, 0, 0, 50, 40), (60, 0, 0, 30, 30), (0, 60, 0, 8, 8)])
    one = _tp("1", "20250301", [(1, 0, 0, 30, 10), (61, 0, 0, 18, 5)])
    result = assess_response([one, base])  # order by date, not by argument order
    assert (result.recist, result.mrecist) == ("PR", "PR")
    assert result.baseline_sum_mm == 80 and result.current_sum_mm == 48
    assert result.change_from_baseline_pct == pytest.approx(-40.0)
    gone = [x for x in result.lesions if x.baseline_label == 3]
    assert gone[0].status == "non-target" and gone[0].current_label is None
    two = _tp("2", "20250501", [(1, 0, 0, 32, 12), (61, 0, 0, 19, 6), (0, -50, 10, 15, 15)])
    later = assess_response([base, one, two])
    assert later.nadir_sum_mm == 48 and later.new_lesions == 1
    assert (later.recist, later.mrecist) == ("PD", "PD")
    necrotic = _tp("3", "20250501", [(1, 0, 0, 45, 0), (61, 0, 0, 28, 0)])
    both = assess_response([base, necrotic])
    assert (both.recist, both.mrecist) == ("SD", "CR")
