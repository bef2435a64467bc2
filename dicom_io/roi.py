"""Regions a reader drew (DICOM SEG, RT Structure Set), as masks on a reference grid.

A site often already has the tumour outlined by a radiologist; the seed studies measured on
such hand-drawn ROIs, so when a study carries one it is a better ROI than the model's. A SEG
(PS3.3 A.51) is decoded with highdicom and its frames are placed by the Plane Position /
Orientation and Pixel Measures functional groups (PS3.3 C.7.6.16.2); an RT Structure Set
(PS3.3 A.19) holds closed planar contours in patient mm (C.8.8.6), filled here by the
even-odd rule. Both are resampled nearest-neighbour onto the reference grid in patient space,
so a SEG made on another series of the same frame of reference still lands where it was
drawn. Objects Hepatica wrote itself (Manufacturer "Hepatica") are never a reader's ROI.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset

from dicom_io.series import SeriesInstances
from dicom_io.volume import Volume

__all__ = [
    "NON_IMAGE_MODALITIES",
    "READER_ROI_MODALITIES",
    "ReaderRoi",
    "RoiError",
    "RoiRegion",
    "image_series",
    "read_reader_roi",
    "read_rtstruct",
    "read_seg",
    "reader_roi_series",
]

READER_ROI_MODALITIES = frozenset({"SEG", "RTSTRUCT"})
NON_IMAGE_MODALITIES = READER_ROI_MODALITIES | {"SR", "PR", "KO", "REG", "RWV", "DOC"}
OWN_MANUFACTURER = "Hepatica"
TUMOUR_WORDS = re.compile(r"(?i)tumou?r|lesion|neoplas|carcinoma|\bhcc\b|metasta|nodule|mass"
                          r"|\bgtv\b")
"""A segment or ROI whose label, description or coded type matches is the tumour."""

BoolArray = npt.NDArray[np.bool_]


class RoiError(ValueError):
    """The object cannot serve as an ROI; the message says why."""


@dataclass(frozen=True)
class RoiRegion:
    """One segment or structure, on the reference grid."""

    number: int
    name: str
    tumour: bool
    mask: BoolArray


@dataclass(frozen=True)
class ReaderRoi:
    """A reader's SEG or RTSTRUCT read onto the reference grid, and where it came from."""

    series_uid: str
    sop_instance_uid: str
    modality: str
    manufacturer: str
    description: str
    regions: tuple[RoiRegion, ...]

    def tumour_mask(self) -> BoolArray | None:
        """The union of the tumour regions that reach the grid, or None."""
        masks = [r.mask for r in self.regions if r.tumour and r.mask.any()]
        return np.logical_or.reduce(masks) if masks else None

    def describe(self) -> str:
        """One line for the SR: which object, whose, which regions."""
        names = ", ".join(f"{r.number} {r.name!r}" for r in self.regions if r.tumour)
        return (f"{self.modality} SOPInstanceUID {self.sop_instance_uid} (series "
                f"{self.description!r}, manufacturer {self.manufacturer!r}), region(s) {names}")


def image_series(series: Sequence[SeriesInstances]) -> list[SeriesInstances]:
    """The series that hold images (SEG, RTSTRUCT, SR, a Parametric Map … are not phases)."""
    return [s for s in series if s.modality.upper() not in NON_IMAGE_MODALITIES
            and s.is_image]


def reader_roi_series(series: Sequence[SeriesInstances]) -> list[SeriesInstances]:
    """SEG and RTSTRUCT series that a reader made (not Hepatica's own results)."""
    return [s for s in series if s.modality.upper() in READER_ROI_MODALITIES
            and str(s.first.get("Manufacturer", "") or "") != OWN_MANUFACTURER]


def read_reader_roi(series: SeriesInstances, reference: Volume) -> ReaderRoi:
    """The first instance of a SEG/RTSTRUCT series read onto ``reference``."""
    ds = pydicom.dcmread(series.paths[0])
    modality = str(ds.get("Modality", "")).upper()
    regions = read_seg(ds, reference) if modality == "SEG" else read_rtstruct(ds, reference)
    return ReaderRoi(series.series_uid, str(ds.SOPInstanceUID), modality,
                     str(ds.get("Manufacturer", "") or ""),
                     str(ds.get("SeriesDescription", "") or ""), regions)


# --- SEG ------------------------------------------------------------------------------------

def read_seg(ds: Dataset, reference: Volume) -> tuple[RoiRegion, ...]:
    """Every segment of a BINARY, FRACTIONAL or LABELMAP SEG on ``reference``'s grid."""
    seg = hd.seg.Segmentation.from_dataset(ds, copy=False)
    frames = _seg_frames(seg)
    regions = []
    for number in seg.segment_numbers:
        description = seg.get_segment_description(number)
        name = str(description.segment_label)
        words = " ".join([name, str(description.get("SegmentDescription", "") or ""),
                          description.segmented_property_type.meaning])
        mask = _place_frames(seg, frames, number, reference)
        regions.append(RoiRegion(int(number), name, bool(TUMOUR_WORDS.search(words)), mask))
    return tuple(regions)


def _seg_frames(seg: Any) -> npt.NDArray[Any]:
    pixels = np.asarray(seg.pixel_array)
    return pixels[None] if pixels.ndim == 2 else pixels


def _frame_value(seg: Any, frame: npt.NDArray[Any], number: int) -> BoolArray:
    kind = str(seg.SegmentationType)
    if kind == "FRACTIONAL":
        return np.asarray(frame > float(seg.MaximumFractionalValue) / 2)
    if kind == "LABELMAP":
        return np.asarray(frame == number)
    return np.asarray(frame > 0)


def _group(seg: Any, index: int, keyword: str) -> Dataset | None:
    """A functional group's first item: per-frame, else shared (PS3.3 C.7.6.16)."""
    frame = seg.PerFrameFunctionalGroupsSequence[index]
    if keyword in frame:
        return frame[keyword].value[0]  # type: ignore[no-any-return]
    shared = seg.SharedFunctionalGroupsSequence[0]
    return shared[keyword].value[0] if keyword in shared else None


def _frame_segment(seg: Any, index: int) -> int | None:
    item = _group(seg, index, "SegmentIdentificationSequence")
    return None if item is None else int(item.ReferencedSegmentNumber)


def _place_frames(seg: Any, frames: npt.NDArray[Any], number: int,
                  reference: Volume) -> BoolArray:
    """Nearest-neighbour placement of one segment's frames on the reference grid."""
    kind = str(seg.SegmentationType)
    planes = [(_frame_value(seg, frame, number), *_frame_geometry(seg, index))
              for index, frame in enumerate(frames)
              if kind == "LABELMAP" or _frame_segment(seg, index) in (None, number)]
    planes = [p for p in planes if p[0].any()]
    out = np.zeros(reference.shape, dtype=bool)
    for z in range(reference.shape[0]):
        near = [p for p in planes if _crosses(reference, z, *p[1:])]
        if near:
            points = _slice_points(reference, z)
            for pixels, position, orientation, spacing in near:
                hit = _sample(points, pixels, position, orientation, spacing, reference)
                out[z] |= hit.reshape(out.shape[1:])
    return out


def _frame_geometry(seg: Any, index: int) -> tuple[npt.NDArray[np.float64],
                                                   npt.NDArray[np.float64], tuple[float, ...]]:
    position = _group(seg, index, "PlanePositionSequence")
    orientation = _group(seg, index, "PlaneOrientationSequence")
    measures = _group(seg, index, "PixelMeasuresSequence")
    if position is None or orientation is None or measures is None:
        raise RoiError("SEG frame without plane position, orientation or pixel spacing "
                       "(PS3.3 C.7.6.16.2); cannot place it in patient space")
    thickness = float(measures.get("SpacingBetweenSlices") or measures.get("SliceThickness")
                      or 0.0)
    spacing = (*(float(v) for v in measures.PixelSpacing), thickness)
    return (np.asarray(position.ImagePositionPatient, dtype=np.float64),
            np.asarray(orientation.ImageOrientationPatient, dtype=np.float64), spacing)


def _half_slab(spacing: tuple[float, ...], reference: Volume) -> float:
    """A voxel belongs to a plane within half a slice (the SEG's or the grid's, larger)."""
    return 0.5 * max(spacing[2], reference.spacing[2]) + 1e-3


def _crosses(reference: Volume, z: int, position: npt.NDArray[np.float64],
             orientation: npt.NDArray[np.float64], spacing: tuple[float, ...]) -> bool:
    """Whether reference slice ``z`` comes within the plane's slab (its corners suffice)."""
    _, rows, cols = reference.shape
    corners = [(z, 0, 0), (z, rows - 1, 0), (z, 0, cols - 1), (z, rows - 1, cols - 1)]
    depth = (reference.index_to_patient(corners) - position) @ np.cross(orientation[:3],
                                                                        orientation[3:])
    half = _half_slab(spacing, reference)
    return not (bool((depth > half).all()) or bool((depth < -half).all()))


def _sample(points: npt.NDArray[np.float64], pixels: BoolArray,
            position: npt.NDArray[np.float64], orientation: npt.NDArray[np.float64],
            spacing: tuple[float, ...], reference: Volume) -> BoolArray:
    """For each voxel centre: the nearest pixel of the plane, if within its slab."""
    row_dir, col_dir = orientation[:3], orientation[3:]
    local = points - position
    depth = local @ np.cross(row_dir, col_dir)
    col = np.rint(local @ row_dir / spacing[1]).astype(np.int64)
    row = np.rint(local @ col_dir / spacing[0]).astype(np.int64)
    ok = ((np.abs(depth) <= _half_slab(spacing, reference)) & (row >= 0)
          & (row < pixels.shape[0]) & (col >= 0) & (col < pixels.shape[1]))
    hit = np.zeros(ok.shape, dtype=bool)
    hit[ok] = pixels[row[ok], col[ok]]
    return hit


def _slice_points(reference: Volume, z: int) -> npt.NDArray[np.float64]:
    _, rows, cols = reference.shape
    y, x = np.mgrid[0:rows, 0:cols]
    zyx = np.stack([np.full(y.size, z), y.ravel(), x.ravel()], axis=1)
    return reference.index_to_patient(zyx)


# --- RT Structure Set ------------------------------------------------------------------------

def read_rtstruct(ds: Dataset, reference: Volume) -> tuple[RoiRegion, ...]:
    """Every structure with closed planar contours, filled on ``reference``'s grid."""
    names = {int(item.ROINumber): str(item.get("ROIName", "") or "")
             for item in ds.get("StructureSetROISequence", [])}
    kinds = {int(item.ReferencedROINumber): str(item.get("RTROIInterpretedType", "") or "")
             for item in ds.get("RTROIObservationsSequence", [])}
    regions = []
    for item in ds.get("ROIContourSequence", []):
        number = int(item.ReferencedROINumber)
        name = names.get(number, f"ROI {number}")
        tumour = bool(TUMOUR_WORDS.search(f"{name} {kinds.get(number, '')}"))
        regions.append(RoiRegion(number, name, tumour, _fill_contours(item, reference)))
    return tuple(regions)


def _fill_contours(item: Dataset, reference: Volume) -> BoolArray:
    """Contours on the same slice combine by XOR, so an inner contour cuts a hole."""
    out = np.zeros(reference.shape, dtype=bool)
    for contour in item.get("ContourSequence", []):
        if str(contour.get("ContourGeometricType", "CLOSED_PLANAR")) != "CLOSED_PLANAR":
            continue
        points = np.asarray(contour.ContourData, dtype=np.float64).reshape(-1, 3)
        index = _patient_to_index(reference, points)  # rows of (x, y, z), continuous
        z = int(np.rint(index[:, 2].mean()))
        if 0 <= z < reference.shape[0] and len(points) >= 3:
            out[z] ^= polygon_mask(index[:, 0], index[:, 1], reference.shape[1:])
    return out


def _patient_to_index(reference: Volume, points: npt.NDArray[np.float64]
                      ) -> npt.NDArray[np.float64]:
    direction = np.asarray(reference.direction, dtype=np.float64).reshape(3, 3)
    local = np.linalg.solve(direction, (points - np.asarray(reference.origin)).T).T
    out: npt.NDArray[np.float64] = local / np.asarray(reference.spacing)
    return out


def polygon_mask(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64],
                 shape: tuple[int, int]) -> BoolArray:
    """Pixels (rows = y, columns = x) whose centres lie inside the polygon (even-odd rule)."""
    rows, cols = shape
    y0, y1 = max(int(np.floor(y.min())), 0), min(int(np.ceil(y.max())) + 1, rows)
    x0, x1 = max(int(np.floor(x.min())), 0), min(int(np.ceil(x.max())) + 1, cols)
    out = np.zeros(shape, dtype=bool)
    if y0 >= y1 or x0 >= x1:
        return out
    py, px = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    inside = np.zeros(py.shape, dtype=bool)
    for xa, ya, xb, yb in zip(x, y, np.roll(x, -1), np.roll(y, -1), strict=True):
        if ya == yb:
            continue
        crosses = (ya > py) != (yb > py)
        inside ^= crosses & (px < (xb - xa) * (py - ya) / (yb - ya) + xa)
    out[y0:y1, x0:x1] = inside
    return out
