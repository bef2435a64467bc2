"""Pipeline hook: a tumour ROI drawn by a reader replaces the model's tumour.

The seed studies measured hand-drawn ROIs; when the study carries a reader's SEG or RTSTRUCT
of the tumour (``dicom_io.roi``), measurements, the SEG Hepatica writes, the response models
and RECIST/mRECIST all use it, and the SR says so. The model still supplies the liver (the
reader's tumour is added to it). An unreadable or empty reader ROI is reported and the
automatic ROI kept: a broken annotation must not cost the patient the measurements.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from dicom_io.roi import RoiError, read_reader_roi, reader_roi_series
from dicom_io.series import SeriesInstances
from dicom_io.volume import Volume
from inference.measurements import LIVER, TUMOUR

__all__ = ["TumourRoi", "choose_tumour_roi"]

log = logging.getLogger(__name__)
NOTE_NAME = "Tumour ROI"


@dataclass(frozen=True)
class TumourRoi:
    """The label map to measure (1 liver, 2 tumour), whose tumour it is, and why."""

    labels: npt.NDArray[np.uint8]
    source: str  # "automatic" | "reader"
    note: str

    def text(self) -> list[tuple[str, str]]:
        """The SR note (TID 1500 row 14)."""
        return [(NOTE_NAME, self.note)]

    def summary(self) -> dict[str, Any]:
        return {"source": self.source, "note": self.note}


def choose_tumour_roi(series: Sequence[SeriesInstances], reference: Volume,
                      labels: npt.NDArray[np.integer]) -> TumourRoi:
    """The reader's tumour when the study has one that reaches the grid, else the model's."""
    problems: list[str] = []
    for item in reader_roi_series(series):
        try:
            roi = read_reader_roi(item, reference)
        except (RoiError, ValueError, AttributeError, KeyError, IndexError) as exc:
            log.warning("reader ROI series …%s not readable: %s", item.series_uid[-12:], exc)
            problems.append(f"{item.modality} series {item.series_uid} not readable: {exc}")
            continue
        mask = roi.tumour_mask()
        if mask is None:
            problems.append(f"{roi.modality} series {item.series_uid}: no tumour region "
                            "on the reference grid")
            continue
        note = (f"reader ROI used instead of the automatic tumour segmentation: "
                f"{roi.describe()}; lesion measurements computed on it")
        return TumourRoi(_with_reader_tumour(labels, mask), "reader", note)
    note = "automatic (model) tumour segmentation"
    if problems:
        note += "; reader ROI not used: " + "; ".join(problems)
    return TumourRoi(np.asarray(labels, dtype=np.uint8), "automatic", note)


def _with_reader_tumour(labels: npt.NDArray[np.integer], mask: npt.NDArray[np.bool_]
                        ) -> npt.NDArray[np.uint8]:
    out = np.asarray(labels, dtype=np.uint8).copy()
    out[out == TUMOUR] = LIVER
    out[mask] = TUMOUR
    return out
