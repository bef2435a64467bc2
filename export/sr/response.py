"""Response assessment (RECIST 1.1, mRECIST) as coded TID 1501 groups of the TID 1500 report.

TID 1500 row 8 (Imaging Measurements) takes TID 1501 "Measurement and Qualitative
Evaluation Group" items for findings without an ROI of their own: one group per criterion
(overall: sums, change, new lesions, the category as a CODE from CID 6144) and one per
lesion whose Tracking UID is the one of that lesion's TID 1411 group, so a reader joins the
lesion's volume and diameters with its role and its baseline values. The criterion rides in
"Response Evaluation Method" (DCM 112021; CID 6147 has RECIST 1.1, mRECIST is private).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import highdicom as hd

from export.common import derive_uid
from export.sr import codes

__all__ = ["LesionResponseRow", "OverallResponse", "response_groups"]

G = TypeVar("G", bound=hd.sr.MeasurementsAndQualitativeEvaluations)
_MEASUREMENT_METHOD = "370129005"  # (370129005, SCT, "Measurement Method")


@dataclass(frozen=True)
class OverallResponse:
    """One criterion's result for the current study against its baseline."""

    criterion: str  # "RECIST 1.1" | "mRECIST"
    category: str  # CR | PR | SD | PD
    baseline_sum_mm: float
    nadir_sum_mm: float
    current_sum_mm: float
    new_lesions: int
    baseline_study_uid: str


@dataclass(frozen=True)
class LesionResponseRow:
    """One lesion: its tracking identity, role and its diameters then and now."""

    tracking_label: str
    tracking_uid: str
    role: str  # "target" | "non-target" | "new"
    baseline_diameter_mm: float | None
    current_diameter_mm: float
    baseline_viable_mm: float | None
    current_viable_mm: float | None


def response_groups(overall: Sequence[OverallResponse], lesions: Sequence[LesionResponseRow],
                    ) -> list[hd.sr.MeasurementsAndQualitativeEvaluations]:
    """TID 1501 groups: one per criterion, then one per lesion (pass as ``extra_groups``)."""
    groups = [_overall_group(item) for item in overall]
    return groups + [_lesion_group(row) for row in lesions]


def _method(criterion: str) -> hd.sr.CodedConcept:
    if criterion == "RECIST 1.1":
        return codes.RECIST_1_1
    if criterion == "mRECIST":
        return codes.MRECIST
    raise ValueError(f"unknown response criterion {criterion!r}; expected RECIST 1.1 or mRECIST")


def _method_as_concept_modifier(group: G) -> G:
    """TID 1501 row 5: Measurement Method is HAS CONCEPT MOD (highdicom 0.28 writes CONTAINS)."""
    for item in group[0].ContentSequence:
        if item.ConceptNameCodeSequence[0].CodeValue == _MEASUREMENT_METHOD:
            item.RelationshipType = hd.sr.RelationshipTypeValues.HAS_CONCEPT_MOD.value
    return group


def _overall_group(item: OverallResponse) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    if item.category not in codes.RESPONSE_CATEGORY:
        raise ValueError(f"unknown response category {item.category!r}; expected one of "
                         f"{sorted(codes.RESPONSE_CATEGORY)}")
    change = (100.0 * (item.current_sum_mm - item.baseline_sum_mm) / item.baseline_sum_mm
              if item.baseline_sum_mm > 0 else 0.0)
    mm = codes.UNIT_MILLIMETRE
    return _method_as_concept_modifier(hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=derive_uid("response", item.criterion, item.baseline_study_uid),
            identifier=f"Response {item.criterion}"),
        method=_method(item.criterion),
        finding_sites=[hd.sr.FindingSite(codes.FINDING_SITE_LIVER)],
        measurements=[
            _num(codes.SUM_CURRENT, item.current_sum_mm, mm),
            _num(codes.SUM_BASELINE, item.baseline_sum_mm, mm),
            _num(codes.SUM_NADIR, item.nadir_sum_mm, mm),
            _num(codes.CHANGE_FROM_BASELINE, change, codes.UNIT_PERCENT),
            _num(codes.NEW_LESION_COUNT, float(item.new_lesions), codes.UNIT_COUNT),
        ],
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(
            codes.RESPONSE_EVALUATION, codes.RESPONSE_CATEGORY[item.category])],
    ))


def _lesion_group(row: LesionResponseRow) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    if row.role not in codes.LESION_ROLE_VALUE:
        raise ValueError(f"unknown lesion role {row.role!r}")
    mm = codes.UNIT_MILLIMETRE
    values = [(codes.LONGEST_DIAMETER, row.current_diameter_mm),
              (codes.VIABLE_DIAMETER, row.current_viable_mm),
              (codes.BASELINE_DIAMETER, row.baseline_diameter_mm),
              (codes.BASELINE_VIABLE_DIAMETER, row.baseline_viable_mm)]
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=row.tracking_uid,
                                                     identifier=row.tracking_label),
        finding_type=codes.LESION_FINDING_TYPE,
        finding_sites=[hd.sr.FindingSite(codes.FINDING_SITE_LIVER)],
        measurements=[_num(name, value, mm) for name, value in values if value is not None],
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(
            codes.LESION_ROLE, codes.LESION_ROLE_VALUE[row.role])],
    )


def _num(name: hd.sr.CodedConcept, value: float, unit: hd.sr.CodedConcept) -> hd.sr.Measurement:
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name.meaning} is not a finite number: {value}")
    return hd.sr.Measurement(name=name, value=float(value), unit=unit)
