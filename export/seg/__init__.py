"""DICOM Segmentation writer: liver + one segment per lesion (BINARY SEG)."""

from export.seg.sop import (
    LIVER_SEGMENT_NUMBER,
    SERIES_DESCRIPTION,
    build_segmentation,
    lesion_segment_number,
)

__all__ = [
    "LIVER_SEGMENT_NUMBER",
    "SERIES_DESCRIPTION",
    "build_segmentation",
    "lesion_segment_number",
]
