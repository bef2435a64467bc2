"""DICOM result objects (SEG, TID 1500 SR, secondary capture), built with highdicom.

Never imports ``dicom_io``, ``inference`` or ``plugin``: it receives pydicom
datasets, numpy arrays and objects matching :class:`export.common.LesionLike`.
"""

from export.common import (
    MANUFACTURER,
    RESEARCH_USE_TEXT,
    AlgorithmInfo,
    LesionLike,
    ResultIdentity,
    derive_uid,
)
from export.sc import build_heatmap_image
from export.seg import build_segmentation
from export.sr import build_measurement_report

__all__ = [
    "MANUFACTURER",
    "RESEARCH_USE_TEXT",
    "AlgorithmInfo",
    "LesionLike",
    "ResultIdentity",
    "build_heatmap_image",
    "build_measurement_report",
    "build_segmentation",
    "derive_uid",
]
