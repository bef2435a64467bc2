"""export.seg: BINARY SEG of liver + lesions, judged by dciodvfy and highdicom."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pytest
from export_testutils import ALGORITHM, SOFTWARE_VERSIONS, dciodvfy_errors, needs_dciodvfy
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from export.common import RESEARCH_USE_TEXT, ResultIdentity
from export.seg import build_segmentation, lesion_segment_number


def _build(
    source_images: list[Dataset],
    liver: npt.NDArray[np.bool_],
    labels: npt.NDArray[np.integer],
) -> hd.seg.Segmentation:
    ident = ResultIdentity.derive(source_images[0].StudyInstanceUID, "0.1.0", "seg", 901)
    return build_segmentation(
        source_images,
        liver,
        labels,
        series_instance_uid=ident.series_instance_uid,
        sop_instance_uid=ident.sop_instance_uid,
        series_number=ident.series_number,
        algorithm=ALGORITHM,
        software_versions=SOFTWARE_VERSIONS,
    )


def _read(seg: hd.seg.Segmentation, tmp_path: Path) -> hd.seg.Segmentation:
    path = tmp_path / "seg.dcm"
    seg.save_as(path, enforce_file_format=True)
    return hd.seg.segread(path)


def _mask(seg: hd.seg.Segmentation, sources: list[Dataset], segment: int) -> np.ndarray:
    uids = [ds.SOPInstanceUID for ds in sources]
    pixels = seg.get_pixels_by_source_instance(uids, segment_numbers=[segment])
    return np.asarray(pixels[..., 0], dtype=bool)


@needs_dciodvfy
@pytest.mark.dcmtk
def test_seg_passes_dciodvfy(
    source_images: list[Dataset],
    liver_mask: npt.NDArray[np.bool_],
    lesion_labels: npt.NDArray[np.int16],
    tmp_path: Path,
) -> None:
    path = tmp_path / "seg.dcm"
    _build(source_images, liver_mask, lesion_labels).save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []


def test_seg_masks_round_trip(
    source_images: list[Dataset],
    liver_mask: npt.NDArray[np.bool_],
    lesion_labels: npt.NDArray[np.int16],
    tmp_path: Path,
) -> None:
    seg = _read(_build(source_images, liver_mask, lesion_labels), tmp_path)
    assert seg.segmentation_type == hd.seg.SegmentationTypeValues.BINARY
    assert seg.get_segment_numbers() == [1, 2, 3]
    np.testing.assert_array_equal(_mask(seg, source_images, 1), liver_mask)
    for label in (1, 2):
        got = _mask(seg, source_images, lesion_segment_number(label))
        np.testing.assert_array_equal(got, lesion_labels == label)


def test_seg_describes_segments(
    source_images: list[Dataset],
    liver_mask: npt.NDArray[np.bool_],
    lesion_labels: npt.NDArray[np.int16],
    tmp_path: Path,
) -> None:
    seg = _read(_build(source_images, liver_mask, lesion_labels), tmp_path)
    liver = seg.get_segment_description(1)
    assert liver.segment_label == "Liver"
    assert liver.segmented_property_type == codes.SCT.Liver
    assert liver.segmented_property_category == codes.SCT.AnatomicalStructure
    lesion = seg.get_segment_description(3)
    assert lesion.segment_label == "Lesion 2"
    assert lesion.segmented_property_type == codes.SCT.Neoplasm
    assert lesion.segmented_property_category == codes.SCT.MorphologicallyAbnormalStructure
    assert lesion.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
    assert lesion.algorithm_identification is not None
    algorithm = lesion.algorithm_identification[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("hepatica-liver-seg", "0.1.0")


def test_seg_identity_and_disclaimer(
    source_images: list[Dataset],
    liver_mask: npt.NDArray[np.bool_],
    lesion_labels: npt.NDArray[np.int16],
    tmp_path: Path,
) -> None:
    built = _build(source_images, liver_mask, lesion_labels)
    seg = _read(built, tmp_path)
    assert seg.StudyInstanceUID == source_images[0].StudyInstanceUID
    assert seg.PatientID == source_images[0].PatientID
    assert seg.Manufacturer == "Hepatica"
    assert seg.SoftwareVersions == SOFTWARE_VERSIONS
    assert "Hepatica" in seg.SeriesDescription
    assert seg.ContentDescription == RESEARCH_USE_TEXT
    ours = [e for e in seg.ContributingEquipmentSequence if e.Manufacturer == "Hepatica"]
    assert RESEARCH_USE_TEXT in ours[0].ContributionDescription
    again = _build(source_images, liver_mask, lesion_labels)
    assert (again.SOPInstanceUID, again.SeriesInstanceUID) == (
        built.SOPInstanceUID,
        built.SeriesInstanceUID,
    )


def test_seg_omits_empty_frames(
    source_images: list[Dataset],
    liver_mask: npt.NDArray[np.bool_],
    lesion_labels: npt.NDArray[np.int16],
) -> None:
    seg = _build(source_images, liver_mask, lesion_labels)
    # liver on 6 slices, each lesion on 2: 10 frames, not 3 x 8.
    assert seg.NumberOfFrames == 10


@needs_dciodvfy
@pytest.mark.dcmtk
def test_seg_without_lesions(
    source_images: list[Dataset], liver_mask: npt.NDArray[np.bool_], tmp_path: Path
) -> None:
    none = np.zeros(liver_mask.shape, dtype=np.int16)
    path = tmp_path / "seg0.dcm"
    _build(source_images, liver_mask, none).save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    seg = hd.seg.segread(path)
    assert seg.get_segment_numbers() == [1]
    np.testing.assert_array_equal(_mask(seg, source_images, 1), liver_mask)


def test_seg_rejects_gaps_in_lesion_labels(
    source_images: list[Dataset],
    liver_mask: npt.NDArray[np.bool_],
    lesion_labels: npt.NDArray[np.int16],
) -> None:
    gappy = np.where(lesion_labels == 2, 3, lesion_labels).astype(np.int16)
    with pytest.raises(ValueError, match="without gaps"):
        _build(source_images, liver_mask, gappy)


def test_seg_rejects_wrong_shape(
    source_images: list[Dataset],
    liver_mask: npt.NDArray[np.bool_],
    lesion_labels: npt.NDArray[np.int16],
) -> None:
    with pytest.raises(ValueError, match="shape"):
        _build(source_images, liver_mask[:-1], lesion_labels)
