"""export.sr: TID 1500 report, judged by dciodvfy and highdicom's reader."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pytest
from export_testutils import (
    ALGORITHM,
    SOFTWARE_VERSIONS,
    Lesion,
    dciodvfy_errors,
    needs_dciodvfy,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from export.common import RESEARCH_USE_TEXT, ResultIdentity
from export.seg import build_segmentation
from export.sr import build_measurement_report
from export.sr import codes as sr_codes

EXTRA = (("Input series", "AP 1.2.3.4"), ("Model input", "AP+PVP"))


@pytest.fixture()
def segmentation(
    source_images: list[Dataset],
    liver_mask: npt.NDArray[np.bool_],
    lesion_labels: npt.NDArray[np.int16],
) -> hd.seg.Segmentation:
    ident = ResultIdentity.derive(source_images[0].StudyInstanceUID, "0.1.0", "seg", 901)
    return build_segmentation(
        source_images,
        liver_mask,
        lesion_labels,
        series_instance_uid=ident.series_instance_uid,
        sop_instance_uid=ident.sop_instance_uid,
        series_number=901,
        algorithm=ALGORITHM,
        software_versions=SOFTWARE_VERSIONS,
    )


def _build(
    sources: list[Dataset], seg: Dataset, lesions: Sequence[Lesion]
) -> hd.sr.Comprehensive3DSR:
    ident = ResultIdentity.derive(sources[0].StudyInstanceUID, "0.1.0", "sr", 902)
    return build_measurement_report(
        sources,
        seg,
        lesions,
        liver_volume_ml=1520.5,
        tumour_burden_pct=0.09,
        series_instance_uid=ident.series_instance_uid,
        sop_instance_uid=ident.sop_instance_uid,
        series_number=902,
        algorithm=ALGORITHM,
        software_versions=SOFTWARE_VERSIONS,
        extra_text=EXTRA,
    )


def _read(sr: Dataset, tmp_path: Path) -> hd.sr.Comprehensive3DSR:
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    result = hd.sr.srread(path)
    assert isinstance(result, hd.sr.Comprehensive3DSR)
    return result


def _report(sr: Dataset) -> hd.sr.MeasurementReport:
    return hd.sr.MeasurementReport.from_sequence([sr])


def _check(
    group: hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations,
    name: Code | hd.sr.CodedConcept,
    expected: float,
    unit: str,
) -> None:
    """The group holds exactly one ``name`` measurement, of ``expected`` ``unit``."""
    (measurement,) = group.get_measurements(name=name)
    assert measurement.value == pytest.approx(expected)
    assert measurement.unit.value == unit


def _texts(sr: Dataset) -> list[str]:
    (container,) = [
        item
        for item in sr.ContentSequence
        if item.ConceptNameCodeSequence[0].CodeValue == "C0034375"
    ]
    return [item.TextValue for item in container.ContentSequence]


@needs_dciodvfy
@pytest.mark.dcmtk
def test_sr_passes_dciodvfy(
    source_images: list[Dataset],
    segmentation: hd.seg.Segmentation,
    lesions: list[Lesion],
    tmp_path: Path,
) -> None:
    path = tmp_path / "sr.dcm"
    _build(source_images, segmentation, lesions).save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []


def test_sr_lesion_groups_round_trip(
    source_images: list[Dataset],
    segmentation: hd.seg.Segmentation,
    lesions: list[Lesion],
    tmp_path: Path,
) -> None:
    report = _report(_read(_build(source_images, segmentation, lesions), tmp_path))
    groups = report.get_volumetric_roi_measurement_groups(finding_type=codes.SCT.Neoplasm)
    assert [g.tracking_identifier for g in groups] == ["Lesion 1", "Lesion 2"]
    for group, lesion in zip(groups, lesions, strict=True):
        _check(group, codes.SCT.Volume, lesion.volume_ml, "ml")
        _check(group, codes.SCT.LongAxis, lesion.longest_diameter_mm, "mm")
        _check(group, sr_codes.VIABLE_DIAMETER, lesion.viable_diameter_mm, "mm")
        assert group.finding_sites[0].value == codes.SCT.Liver
        segment = group.referenced_segment
        assert segment is not None
        assert segment.referenced_sop_instance_uid == segmentation.SOPInstanceUID
        assert segment.referenced_segment_numbers == [lesion.label + 1]


def test_sr_long_axis_line_round_trips(
    source_images: list[Dataset],
    segmentation: hd.seg.Segmentation,
    lesions: list[Lesion],
    tmp_path: Path,
) -> None:
    """One TID 1410 group per lesion: the diameter as a line on its slice, as long as the
    Long Axis, tracked with the lesion's TID 1411 group."""
    report = _report(_read(_build(source_images, segmentation, lesions), tmp_path))
    volumetric = report.get_volumetric_roi_measurement_groups(finding_type=codes.SCT.Neoplasm)
    planar = report.get_planar_roi_measurement_groups(finding_type=codes.SCT.Neoplasm)
    assert [g.tracking_uid for g in planar] == [g.tracking_uid for g in volumetric]
    for group, lesion in zip(planar, lesions, strict=True):
        assert lesion.longest_diameter_endpoints_zyx is not None
        (a, b) = lesion.longest_diameter_endpoints_zyx
        assert group.tracking_identifier == f"Lesion {lesion.label}"
        assert group.finding_sites[0].value == codes.SCT.Liver
        _check(group, codes.SCT.LongAxis, lesion.longest_diameter_mm, "mm")
        region = group.roi
        assert isinstance(region, hd.sr.ImageRegion)
        assert region.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
        line = region.value  # (column, row), pixel centres at + 0.5
        assert line.tolist() == [[a[2] + 0.5, a[1] + 0.5], [b[2] + 0.5, b[1] + 0.5]]
        image = source_images[int(a[0])]
        assert region.ContentSequence[0].referenced_sop_instance_uid == image.SOPInstanceUID
        row_mm, column_mm = (float(v) for v in image.PixelSpacing)
        (c0, r0), (c1, r1) = line
        length = math.hypot((c1 - c0) * column_mm, (r1 - r0) * row_mm)
        assert length == pytest.approx(lesion.longest_diameter_mm, abs=0.01)


def test_sr_without_end_points_has_no_line(
    source_images: list[Dataset], segmentation: hd.seg.Segmentation, lesions: list[Lesion]
) -> None:
    unplaced = [replace(lesion, longest_diameter_endpoints_zyx=None) for lesion in lesions]
    report = _report(_build(source_images, segmentation, unplaced))
    assert report.get_planar_roi_measurement_groups() == []
    assert len(report.get_volumetric_roi_measurement_groups(finding_type=codes.SCT.Neoplasm)) == 2


@pytest.mark.parametrize(
    ("ends", "message"),
    [
        (((2.0, 20.0, 20.0), (3.0, 27.0, 26.0)), "not on one of the 8 source slices"),
        (((9.0, 20.0, 20.0), (9.0, 27.0, 26.0)), "not on one of the 8 source slices"),
        (((2.0, 20.0, 20.0), (2.0, 27.0, 27.0)), "not the measured 13.829 mm"),
    ],
)
def test_sr_rejects_misplaced_end_points(
    source_images: list[Dataset],
    segmentation: hd.seg.Segmentation,
    lesions: list[Lesion],
    ends: tuple[tuple[float, float, float], tuple[float, float, float]],
    message: str,
) -> None:
    broken = replace(lesions[0], longest_diameter_endpoints_zyx=ends)
    with pytest.raises(ValueError, match=message):
        _build(source_images, segmentation, [broken])


def test_sr_liver_group(
    source_images: list[Dataset],
    segmentation: hd.seg.Segmentation,
    lesions: list[Lesion],
    tmp_path: Path,
) -> None:
    report = _report(_read(_build(source_images, segmentation, lesions), tmp_path))
    (liver,) = report.get_volumetric_roi_measurement_groups(finding_type=codes.SCT.Liver)
    _check(liver, codes.SCT.Volume, 1520.5, "ml")
    _check(liver, sr_codes.TUMOUR_BURDEN, 0.09, "%")
    assert liver.referenced_segment is not None
    assert liver.referenced_segment.referenced_segment_numbers == [1]


def test_sr_identity_text_and_evidence(
    source_images: list[Dataset],
    segmentation: hd.seg.Segmentation,
    lesions: list[Lesion],
    tmp_path: Path,
) -> None:
    built = _build(source_images, segmentation, lesions)
    sr = _read(built, tmp_path)
    assert sr.StudyInstanceUID == source_images[0].StudyInstanceUID
    assert sr.Manufacturer == "Hepatica"
    assert sr.SoftwareVersions == SOFTWARE_VERSIONS
    assert "Hepatica" in sr.SeriesDescription
    assert _texts(sr) == [RESEARCH_USE_TEXT, "Input series: AP 1.2.3.4", "Model input: AP+PVP"]
    evidence = {sop_uid for _, _, sop_uid, _ in sr.get_evidence()}
    expected = {ds.SOPInstanceUID for ds in source_images} | {segmentation.SOPInstanceUID}
    assert evidence == expected
    again = _build(source_images, segmentation, lesions)
    assert again.SOPInstanceUID == built.SOPInstanceUID
    uids = [g.tracking_uid for g in _report(sr).get_volumetric_roi_measurement_groups()]
    assert uids == [g.tracking_uid for g in _report(again).get_volumetric_roi_measurement_groups()]


def test_sr_names_the_algorithm(
    source_images: list[Dataset],
    segmentation: hd.seg.Segmentation,
    lesions: list[Lesion],
    tmp_path: Path,
) -> None:
    sr = _read(_build(source_images, segmentation, lesions), tmp_path)
    observers = _report(sr).get_observer_contexts(observer_type=codes.DCM.Device)
    assert observers[0].observer_identifying_attributes.name == "hepatica-liver-seg"


@needs_dciodvfy
@pytest.mark.dcmtk
def test_sr_without_lesions(
    source_images: list[Dataset], liver_mask: npt.NDArray[np.bool_], tmp_path: Path
) -> None:
    seg = build_segmentation(
        source_images,
        liver_mask,
        np.zeros(liver_mask.shape, dtype=np.int16),
        series_instance_uid="1.2.826.0.1.3680043.8.498.1",
        sop_instance_uid="1.2.826.0.1.3680043.8.498.2",
        series_number=901,
        algorithm=ALGORITHM,
        software_versions=SOFTWARE_VERSIONS,
    )
    path = tmp_path / "sr0.dcm"
    _build(source_images, seg, []).save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    report = _report(hd.sr.srread(path))
    assert report.get_volumetric_roi_measurement_groups(finding_type=codes.SCT.Neoplasm) == []
    assert len(report.get_volumetric_roi_measurement_groups(finding_type=codes.SCT.Liver)) == 1


def test_sr_rejects_lesion_missing_from_seg(
    source_images: list[Dataset], segmentation: hd.seg.Segmentation, lesions: list[Lesion]
) -> None:
    stray = Lesion(7, 1.0, 1.0, 1.0, (0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match=r"lacks segments \[8\]"):
        _build(source_images, segmentation, [*lesions, stray])


def test_sr_rejects_nan(
    source_images: list[Dataset], segmentation: hd.seg.Segmentation, lesions: list[Lesion]
) -> None:
    broken = Lesion(1, float("nan"), 1.0, 1.0, (0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="not a finite number"):
        _build(source_images, segmentation, [broken])


LIVER_OUTLINE = ((2.0, 10.0, 8.0), (2.0, 10.0, 51.0), (2.0, 49.0, 51.0), (2.0, 49.0, 8.0))
"""The box liver's corner voxel centres on slice 2, clockwise on screen."""


def _build_with_outline(sources: list[Dataset], seg: Dataset, lesions: Sequence[Lesion],
                        outline: Sequence[tuple[float, float, float]]
                        ) -> hd.sr.Comprehensive3DSR:
    ident = ResultIdentity.derive(sources[0].StudyInstanceUID, "0.1.0", "sr", 902)
    return build_measurement_report(
        sources, seg, lesions, liver_volume_ml=1520.5, tumour_burden_pct=0.09,
        series_instance_uid=ident.series_instance_uid, sop_instance_uid=ident.sop_instance_uid,
        series_number=902, algorithm=ALGORITHM, software_versions=SOFTWARE_VERSIONS,
        extra_text=EXTRA, liver_outline_zyx=outline)


@needs_dciodvfy
@pytest.mark.dcmtk
def test_sr_with_liver_outline_passes_dciodvfy(
    source_images: list[Dataset], segmentation: hd.seg.Segmentation, lesions: list[Lesion],
    tmp_path: Path,
) -> None:
    path = tmp_path / "sr.dcm"
    _build_with_outline(source_images, segmentation, lesions, LIVER_OUTLINE).save_as(
        path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []


def test_sr_liver_outline_round_trips(
    source_images: list[Dataset], segmentation: hd.seg.Segmentation, lesions: list[Lesion],
    tmp_path: Path,
) -> None:
    """The liver's TID 1410 group: a closed polyline on its slice, the polygon's area, and
    the liver group's tracking UID, so every tracking UID of the report has coordinates."""
    sr = _read(_build_with_outline(source_images, segmentation, lesions, LIVER_OUTLINE),
               tmp_path)
    report = _report(sr)
    (volumetric,) = report.get_volumetric_roi_measurement_groups(finding_type=codes.SCT.Liver)
    (planar,) = report.get_planar_roi_measurement_groups(finding_type=codes.SCT.Liver)
    assert planar.tracking_uid == volumetric.tracking_uid
    assert planar.tracking_identifier == "Liver"
    assert planar.finding_sites[0].value == codes.SCT.Liver
    _check(planar, codes.SCT.Area, 43 * 39 * 1.5 * 1.5, "mm2")
    region = planar.roi
    assert isinstance(region, hd.sr.ImageRegion)
    assert region.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
    assert region.value.tolist() == [[8.5, 10.5], [51.5, 10.5], [51.5, 49.5], [8.5, 49.5],
                                     [8.5, 10.5]]  # closed: the first point again
    assert (region.ContentSequence[0].referenced_sop_instance_uid
            == source_images[2].SOPInstanceUID)
    all_groups = [*report.get_volumetric_roi_measurement_groups(),
                  *report.get_planar_roi_measurement_groups()]
    drawn = {g.tracking_uid for g in report.get_planar_roi_measurement_groups()}
    assert {g.tracking_uid for g in all_groups} == drawn


@pytest.mark.parametrize("outline", [LIVER_OUTLINE[:2], ((2.0, 10.0, 8.0), (3.0, 10.0, 51.0),
                                                         (2.0, 49.0, 51.0)),
                                     tuple((9.0, y, x) for _, y, x in LIVER_OUTLINE)])
def test_sr_rejects_a_liver_outline_off_one_slice(
    source_images: list[Dataset], segmentation: hd.seg.Segmentation, lesions: list[Lesion],
    outline: Sequence[tuple[float, float, float]],
) -> None:
    with pytest.raises(ValueError, match="not a contour on one of the 8 source slices"):
        _build_with_outline(source_images, segmentation, lesions, outline)
