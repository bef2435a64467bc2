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
    "CODING_SCHEME",
    "COMMENT",
    "FINDING_SITE_LIVER",
    "LESION_FINDING_CATEGORY",
    "LESION_FINDING_TYPE",
    "LIVER_FINDING_CATEGORY",
    "LIVER_FINDING_TYPE",
    "LONGEST_DIAMETER",
    "OBSERVER_DEVICE",
    "PRIVATE_SCHEME",
    "PROCEDURE_REPORTED",
    "QUALITATIVE_EVALUATIONS",
    "TUMOUR_BURDEN",
    "UNIT_MILLILITRE",
    "UNIT_MILLIMETRE",
    "UNIT_PERCENT",
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
