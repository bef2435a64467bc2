"""Coded concepts of the Hepatica TID 1500 measurement report (PS3.16).

Standard codes come from pydicom's dictionary. Two concepts have no standard
code that we know of (the mRECIST viable-tumour diameter and the tumour burden
as a share of liver volume); they use the private scheme ``99HEPATICA``, declared
in the Coding Scheme Identification Sequence (PS3.3 C.12.1.1.4) so a reader can
tell where they come from.
"""

from __future__ import annotations

import highdicom as hd
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

__all__ = [
    "AREA",
    "BASELINE_DIAMETER",
    "BASELINE_VIABLE_DIAMETER",
    "CHANGE_FROM_BASELINE",
    "CLASS_NEGATIVE",
    "CLASS_POSITIVE",
    "CODING_SCHEME",
    "COMMENT",
    "DECISION_THRESHOLD",
    "FINDING_SITE_LIVER",
    "LESION_FINDING_CATEGORY",
    "LESION_FINDING_TYPE",
    "LESION_ROLE",
    "LESION_ROLE_VALUE",
    "LIVER_FINDING_CATEGORY",
    "LIVER_FINDING_TYPE",
    "LONGEST_DIAMETER",
    "MRECIST",
    "NEW_LESION_COUNT",
    "OBSERVER_DEVICE",
    "PREDICTED_CLASS",
    "PREDICTED_PROBABILITY",
    "PRIVATE_SCHEME",
    "PROCEDURE_REPORTED",
    "QUALITATIVE_EVALUATIONS",
    "RECIST_1_1",
    "RESPONSE_CATEGORY",
    "RESPONSE_EVALUATION",
    "RESPONSE_METHOD",
    "RESPONSE_PREDICTION",
    "SUM_BASELINE",
    "SUM_CURRENT",
    "SUM_NADIR",
    "TUMOUR_BURDEN",
    "UNIT_COUNT",
    "UNIT_MILLILITRE",
    "UNIT_MILLIMETRE",
    "UNIT_NO_UNITS",
    "UNIT_PERCENT",
    "UNIT_SQUARE_MILLIMETRE",
    "VIABLE_DIAMETER",
    "VOLUME",
]


def _cc(code: Code) -> hd.sr.CodedConcept:
    """CodedConcept from a pydicom Code (keeps the dictionary's meaning)."""
    return hd.sr.CodedConcept.from_code(code)


PRIVATE_SCHEME = "99HEPATICA"
CODING_SCHEME = hd.coding_schemes.CodingSchemeIdentificationItem(
    designator=PRIVATE_SCHEME,
    name="Hepatica local codes",
    responsible_organization="Hepatica project",
)

# CID 100 Quantitative Diagnostic Imaging Procedures: the generic entry, since the
# report covers MR and CT studies alike.
PROCEDURE_REPORTED = _cc(codes.cid100.ImagingProcedure)

# Measurement names (TID 1419 rows; CID 7469 generic size measurements).
VOLUME = _cc(codes.SCT.Volume)  # (118565006, SCT, "Volume")
LONGEST_DIAMETER = _cc(codes.SCT.LongAxis)  # (103339001, SCT, "Long Axis")
AREA = _cc(codes.SCT.Area)  # (42798000, SCT, "Area")
VIABLE_DIAMETER = hd.sr.CodedConcept(
    value="HEP0001",
    scheme_designator=PRIVATE_SCHEME,
    meaning="Viable tumour longest diameter (mRECIST)",
)
TUMOUR_BURDEN = hd.sr.CodedConcept(
    value="HEP0002",
    scheme_designator=PRIVATE_SCHEME,
    meaning="Tumour burden, percent of liver volume",
)

# UCUM units (CID 7181); "ml" is spelled as UCUM writes it.
UNIT_MILLILITRE = hd.sr.CodedConcept(value="ml", scheme_designator="UCUM", meaning="milliliter")
UNIT_MILLIMETRE = _cc(codes.UCUM.Millimeter)
UNIT_SQUARE_MILLIMETRE = _cc(codes.UCUM.SquareMillimeter)
UNIT_PERCENT = _cc(codes.UCUM.Percent)

# Finding descriptors of the measurement groups (TID 1411 rows 4-5, 10).
LESION_FINDING_CATEGORY = _cc(codes.cid7150.MorphologicallyAbnormalStructure)
LESION_FINDING_TYPE = _cc(codes.SCT.Tumor)  # (108369006, SCT, "Neoplasm")
LIVER_FINDING_CATEGORY = _cc(codes.cid7150.AnatomicalStructure)
LIVER_FINDING_TYPE = _cc(codes.SCT.Liver)
FINDING_SITE_LIVER = _cc(codes.SCT.Liver)

# TID 1002 Observer Type: the report's observer is a device (the algorithm).
OBSERVER_DEVICE = _cc(codes.DCM.Device)  # (121007, DCM, "Device")

# TID 1500 row 12 container and the concept name of its TEXT items (row 14).
QUALITATIVE_EVALUATIONS = hd.sr.CodedConcept(
    value="C0034375", scheme_designator="UMLS", meaning="Qualitative Evaluations"
)
COMMENT = _cc(codes.DCM.Comment)  # (121106, DCM, "Comment")

# Response assessment (TID 1501 groups of export.sr.response). Standard where DICOM has
# them: CID 6144 RECIST-defined lesion response, CID 6145 baseline category, CID 6147
# response criteria; mRECIST, the sums and "new lesion" have no standard code we know of.
RESPONSE_EVALUATION = _cc(codes.DCM.ResponseEvaluation)  # (112020, DCM)
RESPONSE_METHOD = _cc(codes.DCM.ResponseEvaluationMethod)  # (112021, DCM)
RECIST_1_1 = _cc(codes.DCM.RECIST1Point1)  # (126081, DCM, "RECIST 1.1")
RESPONSE_CATEGORY = {
    "CR": _cc(codes.DCM.TargetLesionCompleteResponse),  # 112041
    "PR": _cc(codes.DCM.TargetLesionPartialResponse),  # 112042
    "PD": _cc(codes.DCM.TargetLesionProgressiveDisease),  # 112043
    "SD": _cc(codes.DCM.TargetLesionStableDisease),  # 112044
}
LESION_ROLE_VALUE = {
    "target": _cc(codes.DCM.TargetLesionAtBaseline),  # 112074
    "non-target": _cc(codes.DCM.NonTargetLesionAtBaseline),  # 112075
}


def _private(value: str, meaning: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value=value, scheme_designator=PRIVATE_SCHEME, meaning=meaning)


MRECIST = _private("HEP0010", "mRECIST (modified RECIST for HCC)")
LESION_ROLE = _private("HEP0011", "Lesion role in response assessment")
LESION_ROLE_VALUE["new"] = _private("HEP0012", "New lesion")
SUM_CURRENT = _private("HEP0003", "Sum of target lesion diameters")
SUM_BASELINE = _private("HEP0004", "Sum of target lesion diameters at baseline")
SUM_NADIR = _private("HEP0005", "Sum of target lesion diameters at nadir")
CHANGE_FROM_BASELINE = _private("HEP0006", "Change from baseline")
NEW_LESION_COUNT = _private("HEP0007", "Number of new lesions")
BASELINE_DIAMETER = _private("HEP0008", "Longest diameter at baseline")
BASELINE_VIABLE_DIAMETER = _private("HEP0009", "Viable tumour longest diameter at baseline")
UNIT_COUNT = hd.sr.CodedConcept(value="{lesions}", scheme_designator="UCUM", meaning="lesions")


# Response models (TID 1501 groups of export.sr.response_models): no standard codes exist for
# a model's probability, its decision threshold or its predicted class, hence private ones.
RESPONSE_PREDICTION = _private("HEP0100", "Predicted treatment response")
PREDICTED_PROBABILITY = _private("HEP0101", "Predicted probability")
DECISION_THRESHOLD = _private("HEP0102", "Decision threshold")
PREDICTED_CLASS = _private("HEP0103", "Predicted class at threshold")
CLASS_POSITIVE = _private("HEP0104", "Positive (at or above threshold)")
CLASS_NEGATIVE = _private("HEP0105", "Negative (below threshold)")
UNIT_NO_UNITS = hd.sr.CodedConcept(value="1", scheme_designator="UCUM", meaning="no units")
