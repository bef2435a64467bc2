"""series_to_volume geometry and load_study grouping on synthetic series."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import EnhancedMRImageStorage, generate_uid

from dicom_io.series import GeometryError, load_study, series_to_volume

# Rotated about z by 30 degrees then tilted about x by 20: nothing lines up with an axis.
_C30, _S30, _C20, _S20 = np.cos(np.pi / 6), np.sin(np.pi / 6), np.cos(np.pi / 9), np.sin(np.pi / 9)
OBLIQUE = (_C30, _S30, 0.0, -_S30 * _C20, _C30 * _C20, _S20)


def test_axial_series_sorted_even_when_shuffled(make_series: Any) -> None:
    datasets = make_series(10)
    expected_uids = tuple(ds.SOPInstanceUID for ds in datasets)
    shuffled = datasets[:]
    random.Random(4).shuffle(shuffled)
    vol = series_to_volume(shuffled)
    assert vol.shape == (10, 32, 32)
    assert vol.array.dtype == np.float32
    assert vol.sop_instance_uids == expected_uids
    assert [float(vol.array[z, 0, 0]) for z in range(10)] == [10.0 * z for z in range(10)]
    assert vol.spacing == pytest.approx((0.7, 0.8, 2.5))
    assert vol.origin == pytest.approx((-12.0, -20.0, 30.0))
    assert vol.direction == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))


def test_oblique_geometry_matches_simpleitk(
    make_series: Any, write_series: Any, tmp_path: Path
) -> None:
    datasets = make_series(8, orientation=OBLIQUE, step=3.0)
    paths = write_series(datasets, tmp_path / "oblique")
    vol = series_to_volume(list(reversed(datasets)))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(paths[0].parent)))
    ref = reader.Execute()
    assert vol.spacing == pytest.approx(ref.GetSpacing(), abs=1e-4)
    assert vol.origin == pytest.approx(ref.GetOrigin(), abs=1e-4)
    assert vol.direction == pytest.approx(ref.GetDirection(), abs=1e-6)
    np.testing.assert_allclose(vol.array, sitk.GetArrayFromImage(ref))
    corner = vol.index_to_patient([7, 0, 0])[0]
    assert corner == pytest.approx([float(v) for v in datasets[7].ImagePositionPatient], abs=1e-4)


def test_rescale_slope_and_intercept_applied(make_series: Any) -> None:
    vol = series_to_volume(make_series(3, modality="CT", slope=2.0, intercept=-1024.0))
    assert [float(vol.array[z, 5, 5]) for z in range(3)] == [-1024.0, -1004.0, -984.0]


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda s: s[:1], "at least 2 slices"),
        (lambda s: [s[0], s[1], s[2], s[4], s[5]], "gap: 1 missing"),
        (lambda s: [*s, s[3]], "duplicate slice positions"),
    ],
)
def test_bad_stacks_raise(make_series: Any, mutate: Any, reason: str) -> None:
    with pytest.raises(GeometryError, match=reason):
        series_to_volume(mutate(make_series(6)))


def test_uneven_spacing_raises(make_series: Any) -> None:
    with pytest.raises(GeometryError, match="uneven slice spacing"):
        series_to_volume(make_series(5, positions=[0.0, 2.5, 5.0, 8.3, 10.8]))


def test_spacing_within_tolerance_is_accepted(make_series: Any) -> None:
    vol = series_to_volume(make_series(4, positions=[0.0, 2.5, 5.005, 7.5]))
    assert vol.spacing[2] == pytest.approx(2.5)
    with pytest.raises(GeometryError):
        series_to_volume(make_series(4, positions=[0.0, 2.5, 5.005, 7.5]),
                         rel_tol=0.0, abs_tol_mm=0.001)


def test_mixed_orientation_raises(make_series: Any) -> None:
    datasets = make_series(4)
    datasets[2].ImageOrientationPatient = [f"{v:.8f}" for v in OBLIQUE]
    with pytest.raises(GeometryError, match="mixed orientations"):
        series_to_volume(datasets)


def test_mixed_sizes_and_pixel_spacing_raise(make_series: Any, make_slice: Any) -> None:
    datasets = make_series(3)
    ds = datasets[2]
    odd = make_slice(position=ds.ImagePositionPatient, rows=16, study_uid=ds.StudyInstanceUID,
                     series_uid=ds.SeriesInstanceUID)
    with pytest.raises(GeometryError, match="mixed image sizes"):
        series_to_volume([*datasets[:2], odd])
    datasets[1].PixelSpacing = ["0.9", "0.9"]
    with pytest.raises(GeometryError, match="mixed pixel spacing"):
        series_to_volume(datasets)


def test_sheared_stack_raises(make_series: Any) -> None:
    datasets = make_series(4)
    x, y, z = (float(v) for v in datasets[3].ImagePositionPatient)
    datasets[3].ImagePositionPatient = [str(x + 1.5), str(y), str(z)]
    with pytest.raises(GeometryError, match="not stacked along the image normal"):
        series_to_volume(datasets)


def test_missing_position_raises(make_series: Any) -> None:
    datasets = make_series(3)
    del datasets[1].ImagePositionPatient
    with pytest.raises(GeometryError, match="ImagePositionPatient"):
        series_to_volume(datasets)


def _enhanced(datasets: list[Dataset]) -> Dataset:
    """Fold single-frame slices into one Enhanced MR instance (frames shuffled)."""
    first = datasets[0]
    ds = Dataset()
    ds.file_meta = first.file_meta
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesDescription",
                    "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation",
                    "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation"):
        setattr(ds, keyword, first.get(keyword))
    ds.SOPClassUID = EnhancedMRImageStorage
    ds.SOPInstanceUID = generate_uid()
    order = [3, 0, 2, 1, 4]
    ds.NumberOfFrames = len(order)
    shared = Dataset()
    measures, plane = Dataset(), Dataset()
    measures.PixelSpacing = first.PixelSpacing
    plane.ImageOrientationPatient = first.ImageOrientationPatient
    shared.PixelMeasuresSequence = DicomSequence([measures])
    shared.PlaneOrientationSequence = DicomSequence([plane])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    frames = []
    for k in order:
        position, group = Dataset(), Dataset()
        position.ImagePositionPatient = datasets[k].ImagePositionPatient
        group.PlanePositionSequence = DicomSequence([position])
        frames.append(group)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    ds.PixelData = b"".join(datasets[k].PixelData for k in order)
    return ds


def test_enhanced_multiframe_is_one_volume(make_series: Any) -> None:
    datasets = make_series(5, orientation=OBLIQUE)
    vol = series_to_volume([_enhanced(datasets)])
    reference = series_to_volume(datasets)
    np.testing.assert_array_equal(vol.array, reference.array)
    assert vol.origin == pytest.approx(reference.origin)
    assert vol.direction == pytest.approx(reference.direction)
    assert vol.spacing == pytest.approx(reference.spacing)
    assert len(set(vol.sop_instance_uids)) == 1 and len(vol.sop_instance_uids) == 5


def test_load_study_groups_series(make_series: Any, write_series: Any, tmp_path: Path) -> None:
    study = generate_uid()
    pre = make_series(4, study_uid=study, description="T1 VIBE FS PRE")
    art = make_series(3, study_uid=study, description="T1 VIBE FS ARTERIAL")
    for ds in art:
        ds.SeriesNumber = 1
    write_series(pre, tmp_path / "a")
    write_series(art, tmp_path / "b")
    (tmp_path / "README.txt").write_text("not dicom")
    (tmp_path / "junk.bin").write_bytes(b"\x00" * 300)
    series = load_study(tmp_path)
    assert [s.description for s in series] == ["T1 VIBE FS ARTERIAL", "T1 VIBE FS PRE"]
    assert [len(s.datasets) for s in series] == [3, 4]
    assert series[1].modality == "MR" and series[1].series_number == 3
    vol = series_to_volume(series[1])
    assert vol.sop_instance_uids == tuple(ds.SOPInstanceUID for ds in pre)
