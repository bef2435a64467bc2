"""Follow-up studies agree with RECIST 1.1 / mRECIST by the criteria's own rules."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pydicom
import pytest

from dicom_io.synthetic import PhantomSpec
from dicom_io.synthetic.response import best, category, targets
from dicom_io.synthetic.timepoints import plan_courses, write_timepoints

SMALL = PhantomSpec(rows=112, columns=112, slices=24, pixel_spacing_mm=3.5,
                    slice_spacing_mm=7.0, sequences=("AP",), lesion_plan=(50.0, 30.0),
                    necrotic_fraction=0.0)


@pytest.mark.parametrize(("baseline", "nadir", "now", "new", "expected"), [
    (100, 100, 70, 0, "PR"), (100, 100, 71, 0, "SD"), (100, 50, 60, 0, "PD"),
    (100, 20, 24, 0, "PR"), (100, 100, 100, 1, "PD"), (100, 100, 0, 0, "CR"),
])
def test_category_thresholds(baseline: float, nadir: float, now: float, new: int,
                             expected: str) -> None:
    assert category(baseline, nadir, now, new) == expected


def test_targets_are_two_largest_measurable() -> None:
    assert targets([8.0, 30.0, 12.0, 25.0]) == [1, 3]


@pytest.mark.parametrize(("recist", "mrecist"), [("PR", "CR"), ("SD", "PR"), ("PD", "PD")])
def test_followups_match_plan_and_rules(recist: str, mrecist: str, tmp_path: Path) -> None:
    courses = plan_courses(recist, mrecist, 2, 2)
    records = write_timepoints(tmp_path, 31, SMALL, courses, [0.0, 2.0, 4.0],
                               baseline_date=dt.date(2025, 3, 1), patient_id="P1")
    base = json.loads((tmp_path / "tp0" / "ground_truth" / "truth.json").read_text())
    chosen = targets([les["longest_diameter_mm"] for les in base["lesions"]])
    sums = [sum(base["lesions"][i]["longest_diameter_mm"] for i in chosen)]
    vsums = [sum(base["lesions"][i]["viable_diameter_mm"] for i in chosen)]
    dates, studies, seen = [], set(), []
    for tp in (1, 2):
        truth = json.loads((tmp_path / f"tp{tp}" / "ground_truth" / "truth.json").read_text())
        lesions = truth["lesions"]
        new = len(lesions) - len(base["lesions"])
        whole = sum(lesions[i]["longest_diameter_mm"] for i in chosen)
        viable = sum(lesions[i]["viable_diameter_mm"] for i in chosen)
        got = truth["response"]
        assert got == records[tp]["response"]
        assert got["recist"] == category(sums[0], min(sums), whole, new)
        assert got["mrecist"] == category(vsums[0], min(vsums), viable, new)
        seen.append((got["recist"], got["mrecist"]))
        sums.append(whole)
        vsums.append(viable)
    for tp in (0, 1, 2):
        ds = pydicom.dcmread(tmp_path / f"tp{tp}" / "dicom" / "AP" / "0001.dcm")
        assert ds.PatientID == "P1"
        dates.append(ds.StudyDate)
        studies.add(ds.StudyInstanceUID)
    assert best([r for r, _ in seen]) == recist and best([m for _, m in seen]) == mrecist
    assert dates == sorted(dates) and len(set(dates)) == 3 and len(studies) == 3
