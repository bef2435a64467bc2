"""Reader ROIs: dcmqi's real liver SEG onto its CT's grid; an RTSTRUCT's contours filled."""

from __future__ import annotations

import shutil
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicom_io.roi import image_series, read_reader_roi, read_rtstruct, reader_roi_series
from dicom_io.series import load_study, series_to_volume
from dicom_io.volume import Volume
from tests.shared_data import REAL_DATA

DCMQI = REAL_DATA / "dcmqi" / "data" / "segmentations"


def test_dcmqi_liver_seg_lands_on_its_ct_grid(tmp_path: Path) -> None:
    shutil.copytree(DCMQI / "ct-3slice", tmp_path / "ct")
    shutil.copy(DCMQI / "liver.dcm", tmp_path / "liver.dcm")
    series = load_study(tmp_path)
    reference = series_to_volume(image_series(series)[0])
    [seg_series] = reader_roi_series(series)
    roi = read_reader_roi(seg_series, reference)
    [liver] = roi.regions
    assert liver.name == "Liver" and not liver.tumour and roi.tumour_mask() is None
    expected = hd.seg.segread(DCMQI / "liver.dcm").get_pixels_by_source_instance(
        list(reference.sop_instance_uids), segment_numbers=[1],
        ignore_spatial_locations=True)[..., 0]
    assert liver.mask.shape == reference.shape
    np.testing.assert_array_equal(liver.mask, expected.astype(bool))


def _contour(points_xy: list[tuple[float, float]], z_mm: float) -> Dataset:
    item = Dataset()
    item.ContourGeometricType = "CLOSED_PLANAR"
    item.ContourData = [v for x, y in points_xy for v in (x, y, z_mm)]
    return item


def test_rtstruct_square_with_a_hole() -> None:
    reference = Volume(np.zeros((4, 20, 20), np.float32), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
    ds = Dataset()
    roi = Dataset()
    roi.ROINumber, roi.ROIName = 3, "HCC segment 7"
    ds.StructureSetROISequence = Sequence([roi])
    contours = Dataset()
    contours.ReferencedROINumber = 3
    outer = _contour([(2, 2), (12, 2), (12, 12), (2, 12)], 4.0)
    inner = _contour([(5, 5), (9, 5), (9, 9), (5, 9)], 4.0)
    contours.ContourSequence = Sequence([outer, inner])
    ds.ROIContourSequence = Sequence([contours])
    [region] = read_rtstruct(ds, reference)
    assert region.tumour and region.name == "HCC segment 7"
    assert region.mask[[0, 1, 3]].sum() == 0
    plane = region.mask[2]
    assert plane[7, 3] and not plane[7, 7] and not plane[15, 15]
    assert plane.sum() == 10 * 10 - 4 * 4
