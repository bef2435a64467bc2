"""Coded concepts for Hepatica segments (PS3.16 CID 7150 / CID 7151 / CID 7152).

Codes are taken from pydicom's code dictionary, never typed in by hand, so that
a CodeMeaning cannot drift from the one the standard publishes.
"""

from __future__ import annotations

import highdicom as hd
from pydicom.sr.codedict import codes

__all__ = [
    "LESION_CATEGORY",
    "LESION_COLOR",
    "LESION_TYPE",
    "LIVER_CATEGORY",
    "LIVER_COLOR",
    "LIVER_TYPE",
]

# CID 7150 Segmentation Property Categories: (91723000, SCT, "Anatomical Structure").
LIVER_CATEGORY = hd.sr.CodedConcept.from_code(codes.cid7150.AnatomicalStructure)
# CID 7151 Segmentation Property Types (anatomic): (10200004, SCT, "Liver").
LIVER_TYPE = hd.sr.CodedConcept.from_code(codes.SCT.Liver)
# CID 7150: (49755003, SCT, "Morphologically Abnormal Structure"), the category the
# standard uses for lesions ("Morphologically Altered Structure" in older editions).
LESION_CATEGORY = hd.sr.CodedConcept.from_code(codes.cid7150.MorphologicallyAbnormalStructure)
# CID 7152 Morphologically Abnormal Structure types: (108369006, SCT, "Neoplasm"),
# named "Tumor" in pydicom's dictionary; the same concept.
LESION_TYPE = hd.sr.CodedConcept.from_code(codes.SCT.Tumor)

# Recommended Display CIELab Value: viewers colour the segments consistently.
LIVER_COLOR = hd.color.CIELabColor.from_rgb(176, 122, 94)
LESION_COLOR = hd.color.CIELabColor.from_rgb(255, 221, 0)
