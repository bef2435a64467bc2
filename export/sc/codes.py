"""Coded concepts and fixed strings of Hepatica secondary-capture heatmaps."""

from __future__ import annotations

import highdicom as hd
from pydicom.sr.codedict import codes

__all__ = ["BODY_PART", "DERIVATION_DESCRIPTION", "PURPOSE_SOURCE_IMAGE", "SERIES_DESCRIPTION"]

# PS3.16 Annex L defined term, used when the source slice does not name one.
BODY_PART = "ABDOMEN"
SERIES_DESCRIPTION = "Hepatica tumour probability heatmaps"
DERIVATION_DESCRIPTION = "Tumour probability overlay rendered by Hepatica"
# CID 7202 Source Image Purposes of Reference:
# (121322, DCM, "Source image for image processing operation").
PURPOSE_SOURCE_IMAGE = hd.sr.CodedConcept.from_code(
    codes.DCM.SourceImageForImageProcessingOperation
)
