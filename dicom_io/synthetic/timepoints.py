"""Baseline and follow-up studies of one patient whose lesions follow a planned response.

A follow-up is the same patient (same seed: anatomy and baseline lesions), re-drawn with a
``LesionCourse``: lesions scaled, part of them necrotic (lipiodol on CT after TACE), new
lesions added. The plan aims well inside the RECIST 1.1 / mRECIST bands (−30 %, +20 %) and
the category recorded in truth.json is then measured from the drawn lesions by
``response.assess``, so truth never disagrees with the criteria's own rules.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path
from typing import Any

from dicom_io.synthetic import response, study_writer
from dicom_io.synthetic.anatomy import LesionCourse, PhantomSpec, make_phantom

# (whole-diameter scale, viable-sum ratio) per follow-up for an intended category
_RECIST_SCALE = {"PR": (0.6, 0.5), "SD": (0.97, 0.93), "PD": (1.3, 1.4)}
_MRECIST_RATIO = {"CR": (0.25, 0.0), "PR": (0.45, 0.35), "SD": (0.95, 0.9), "PD": (1.3, 1.4)}


def plan_courses(recist: str, mrecist: str, lesions: int, followups: int,
                 lipiodol: bool = False) -> list[LesionCourse]:
    """Courses for follow-ups 1..n realising the intended best categories.

    RECIST CR is not planned (rare in HCC; the cohort never draws it). PD adds one new
    lesion, so it holds whatever the liver's room lets the old ones grow.
    """
    courses = []
    for index in range(1, followups + 1):
        step = min(index, 2) - 1
        scale = _RECIST_SCALE[recist][step]
        ratio = _MRECIST_RATIO[mrecist][step]
        # a ball cannot fill an ellipsoid: near-whole viability keeps the lesion as it is
        viable = 0.0 if ratio == 0.0 else 1.0 if ratio / scale >= 0.9 else ratio / scale
        courses.append(LesionCourse(index=index, diameter_scale=(scale,) * lesions,
                                    viable_fraction=(viable,) * lesions,
                                    new_lesions=1 if recist == "PD" else 0, lipiodol=lipiodol))
    return courses


def write_timepoints(out_dir: Path, seed: int, spec: PhantomSpec, courses: list[LesionCourse],
                     months: list[float], *, baseline_date: dt.date, patient_id: str,
                     patient: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Write ``tp0`` (baseline) and one study per course; returns each time point's truth."""
    base = make_phantom(seed, spec)
    baseline = [(t.longest_diameter_mm, t.viable_diameter_mm) for t in base.lesions]
    history: list[tuple[list[tuple[float, float]], int]] = []
    records = [_record(0, 0.0, None)]
    _write(base, out_dir / "tp0", baseline_date, patient_id, patient, records[0])
    del base
    for course, month in zip(courses, months[1:], strict=False):
        phantom = make_phantom(seed, replace(spec, course=course))
        lesions = [(t.longest_diameter_mm, t.viable_diameter_mm) for t in phantom.lesions]
        new = max(0, len(lesions) - len(baseline))
        history.append((lesions[:len(baseline)], new))
        assessment = response.assess(baseline, history)[-1]
        records.append(_record(course.index, month, assessment))
        date = baseline_date + dt.timedelta(days=round(month * 30.44))
        _write(phantom, out_dir / f"tp{course.index}", date, patient_id, patient, records[-1])
    return records


def _record(index: int, month: float, a: response.Assessment | None) -> dict[str, Any]:
    out: dict[str, Any] = {"timepoint": index, "months_from_baseline": month}
    if a is not None:
        out["response"] = {"recist": a.recist, "mrecist": a.mrecist,
                           "recist_sum_mm": round(a.recist_sum_mm, 3),
                           "mrecist_sum_mm": round(a.mrecist_sum_mm, 3),
                           "new_lesions": a.new_lesions,
                           "rules": "targets: 2 largest >= 10 mm; PR <= -30 % of baseline; "
                                    "PD >= +20 % and +5 mm over nadir or a new lesion"}
    return out


def _write(phantom: Any, out_dir: Path, date: dt.date, patient_id: str,
           patient: dict[str, str] | None, record: dict[str, Any]) -> None:
    study_writer.write_study(phantom, out_dir, study_date=date, patient_id=patient_id,
                             patient=patient, truth_extra=record)
