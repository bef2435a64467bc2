"""IHE AI Results (AIR): every result object names its algorithm; both validators agree.

Builds the four kinds of result object the pipeline writes (SEG, the full TID 1500 SR with
response-model and RECIST groups, the partial "not run" SR, a heatmap SC), checks the AIR
items (Contributing Equipment: Processing Algorithm, model name, versions, Device UID; SR
groups: tracking identifier and UID, algorithm, a place in the images) and runs dciodvfy and
PixelMed on each written file. See docs/air_conformance.md.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from air_validators import needs_pixelmed, pixelmed, validate
from export_testutils import ALGORITHM, SOFTWARE_VERSIONS, Lesion, needs_dciodvfy
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from export.common import (
    AIR_PROCESSING_ALGORITHM,
    MANUFACTURER,
    AlgorithmInfo,
    ResultIdentity,
    device_uid,
    file_digest,
)
from export.sc import build_heatmap_image
from export.seg import build_segmentation, lesion_segment_number
from export.sr import build_measurement_report, lesion_tracking_uid
from export.sr.partial import build_report_without_segmentation
from export.sr.response import LesionResponseRow, OverallResponse, response_groups
from export.sr.response_models import response_model_groups

MODEL = replace(ALGORITHM, model_digest="5e" * 32)
KINDS = ("seg", "sr", "partial", "sc")
RESPONSE_MODEL = "hepatica-radiomics-pd-ct"
NOT_RUN = AlgorithmInfo("hepatica-nomogram-pd", "0.1.0", "response")
# a liver outline on slice 2 (inside the conftest liver box), closed by the builder
OUTLINE = [(2.0, 10.0, 8.0), (2.0, 10.0, 51.0), (2.0, 49.0, 51.0), (2.0, 49.0, 8.0)]


@dataclass(frozen=True)
class _Prediction:
    """A response model's outcome, shaped like ``ResponseResultLike``."""

    name: str
    version: str
    probability: float | None
    threshold: float = 0.5
    label: str = "progressive disease"
    reason: str = "predicted"
    inputs_used: dict[str, str] = field(default_factory=dict)
    contributions: tuple[tuple[str, float], ...] = ()


PREDICTIONS = [_Prediction(RESPONSE_MODEL, "0.3.0", 0.71)]


def _seg(sources: list[Dataset], liver: npt.NDArray[np.bool_], labels: npt.NDArray[np.int16],
         model: AlgorithmInfo = MODEL) -> hd.seg.Segmentation:
    ident = ResultIdentity.derive(sources[0].StudyInstanceUID, "0.1.0", "seg", 901)
    return build_segmentation(sources, liver, labels, series_instance_uid=ident.series_instance_uid,
                              sop_instance_uid=ident.sop_instance_uid, series_number=901,
                              algorithm=model, software_versions=SOFTWARE_VERSIONS)


def _recist(seg: Dataset) -> list[hd.sr.MeasurementsAndQualitativeEvaluations]:
    """Both criteria, lesion 1 as a target, and a baseline lesion not found now."""
    baseline = generate_uid()
    overall = [OverallResponse("RECIST 1.1", "PR", 40.0, 38.0, 22.0, 0, baseline),
               OverallResponse("mRECIST", "PR", 30.0, 30.0, 9.5, 0, baseline)]
    lesion_uid = lesion_tracking_uid(str(seg.SOPInstanceUID), lesion_segment_number(1))
    rows = [LesionResponseRow("Lesion 1", lesion_uid, "target", 20.0, 13.0, 15.0, 9.5),
            LesionResponseRow("Baseline lesion 3 (not found)", generate_uid(), "target",
                              12.0, 0.0, None, None)]
    return response_groups(overall, rows)


def _sr(sources: list[Dataset], seg: Dataset, lesions: list[Lesion]) -> hd.sr.Comprehensive3DSR:
    study = str(sources[0].StudyInstanceUID)
    ident = ResultIdentity.derive(study, "0.1.0", "sr", 902)
    return build_measurement_report(
        sources, seg, lesions, liver_volume_ml=1500.0, tumour_burden_pct=0.1,
        series_instance_uid=ident.series_instance_uid, sop_instance_uid=ident.sop_instance_uid,
        series_number=902, algorithm=MODEL, software_versions=SOFTWARE_VERSIONS,
        liver_outline_zyx=OUTLINE,
        extra_groups=[*response_model_groups(PREDICTIONS, study), *_recist(seg)])


def _partial(sources: list[Dataset]) -> hd.sr.Comprehensive3DSR:
    study = str(sources[0].StudyInstanceUID)
    ident = ResultIdentity.derive(study, "0.1.0", "sr", 902)
    return build_report_without_segmentation(
        sources, not_run=[MODEL, NOT_RUN], series_instance_uid=ident.series_instance_uid,
        sop_instance_uid=ident.sop_instance_uid, series_number=902, algorithm=MODEL,
        software_versions=SOFTWARE_VERSIONS,
        extra_text=[("Segmentation", "not run: no portal-venous series")],
        extra_groups=response_model_groups(PREDICTIONS, study))


def _sc(source: Dataset) -> hd.sc.SCImage:
    ident = ResultIdentity.derive(source.StudyInstanceUID, "0.1.0", "heatmap", 903, 1)
    probability = np.zeros((source.Rows, source.Columns))
    probability[20:30, 20:30] = 0.9
    return build_heatmap_image(
        source.pixel_array.astype(np.float64), probability, source_image=source,
        phase_label="AP", caption_lines=["Tumour probability"],
        series_instance_uid=ident.series_instance_uid, sop_instance_uid=ident.sop_instance_uid,
        series_number=903, instance_number=1, software_versions=SOFTWARE_VERSIONS,
        algorithm=MODEL)


@pytest.fixture(scope="module")
def written(source_images: list[Dataset], liver_mask: npt.NDArray[np.bool_],
            lesion_labels: npt.NDArray[np.int16], lesions: list[Lesion],
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each kind of result object, written as a file."""
    folder = tmp_path_factory.mktemp("air")
    seg = _seg(source_images, liver_mask, lesion_labels)
    objects = {"seg": seg, "sr": _sr(source_images, seg, lesions),
               "partial": _partial(source_images), "sc": _sc(source_images[3])}
    paths = {}
    for kind, dataset in objects.items():
        paths[kind] = folder / f"{kind}.dcm"
        dataset.save_as(paths[kind], enforce_file_format=True)
    return paths


def _read(written: dict[str, Path], kind: str) -> Dataset:
    return pydicom.dcmread(written[kind])


def _ours(ds: Dataset) -> Dataset:
    """The Contributing Equipment item naming Hepatica's model (highdicom adds its own)."""
    (item,) = [e for e in ds.ContributingEquipmentSequence
               if e.Manufacturer == MANUFACTURER and e.ManufacturerModelName == MODEL.name]
    return item


@pytest.mark.parametrize("kind", KINDS)
def test_contributing_equipment_names_the_algorithm(written: dict[str, Path], kind: str) -> None:
    ds = _read(written, kind)
    item = _ours(ds)
    (purpose,) = item.PurposeOfReferenceCodeSequence
    assert (purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning) == (
        AIR_PROCESSING_ALGORITHM.value, "99IHE", "Processing Algorithm")
    assert list(item.SoftwareVersions) == [MODEL.version, SOFTWARE_VERSIONS]
    assert item.DeviceUID == device_uid(MODEL)
    assert pydicom.uid.UID(item.DeviceUID).is_valid
    schemes = {s.CodingSchemeDesignator for s in ds.CodingSchemeIdentificationSequence}
    assert "99IHE" in schemes  # where the purpose code comes from


def test_device_uid_follows_the_weights(tmp_path: Path, source_images: list[Dataset],
                                        liver_mask: npt.NDArray[np.bool_],
                                        lesion_labels: npt.NDArray[np.int16]) -> None:
    first, retrained = tmp_path / "a.onnx", tmp_path / "b.onnx"
    first.write_bytes(b"weights after training run 1")
    retrained.write_bytes(b"weights after training run 2")
    a = replace(ALGORITHM, model_digest=file_digest(first))
    b = replace(ALGORITHM, model_digest=file_digest(retrained))
    assert len(a.model_digest) == 64
    assert device_uid(a) != device_uid(b)  # same name and version, new weights: new device
    assert device_uid(a) == device_uid(replace(ALGORITHM, model_digest=file_digest(first)))
    assert device_uid(ALGORITHM) not in (device_uid(a), device_uid(b))
    seg_a = _seg(source_images, liver_mask, lesion_labels, a)
    seg_b = _seg(source_images, liver_mask, lesion_labels, b)
    assert _ours(seg_a).DeviceUID == device_uid(a) != _ours(seg_b).DeviceUID


def test_sr_observer_is_the_contributing_device(written: dict[str, Path]) -> None:
    report = hd.sr.MeasurementReport.from_sequence([hd.sr.srread(written["sr"])])
    (observer,) = report.get_observer_contexts(observer_type=pydicom.sr.codedict.codes.DCM.Device)
    assert observer.observer_identifying_attributes.uid == device_uid(MODEL)


def test_sr_names_every_algorithm(written: dict[str, Path]) -> None:
    """The response model that made a group has its own Contributing Equipment item; a
    model that did not run (partial report) has none."""
    for kind in ("sr", "partial"):
        ds = _read(written, kind)
        models = {(e.ManufacturerModelName, e.SoftwareVersions[0])
                  for e in ds.ContributingEquipmentSequence if e.Manufacturer == MANUFACTURER}
        assert models == {(MODEL.name, MODEL.version), (RESPONSE_MODEL, "0.3.0")}, kind


def _groups(ds: Dataset) -> list[Dataset]:
    (measurements,) = [c for c in ds.ContentSequence
                       if c.ConceptNameCodeSequence[0].CodeValue == "126010"]
    return list(measurements.ContentSequence)


def _items(group: Dataset, code: str) -> list[Dataset]:
    return [i for i in group.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == code]


@pytest.mark.parametrize("kind", ["sr", "partial"])
def test_every_group_is_tracked_and_names_its_algorithm(written: dict[str, Path],
                                                        kind: str) -> None:
    groups = _groups(_read(written, kind))
    assert groups
    for group in groups:
        (identifier,) = _items(group, "112039")  # Tracking Identifier
        (uid,) = _items(group, "112040")  # Tracking Unique Identifier
        assert identifier.TextValue and pydicom.uid.UID(uid.UID).is_valid
        assert len(_items(group, "111001")) == 1, identifier.TextValue  # Algorithm Name


def test_every_tracking_uid_has_coordinates(written: dict[str, Path],
                                            source_images: list[Dataset]) -> None:
    """OHIF 3.13 reads the first SCOORD of each tracking UID; none stops its SR viewport."""
    by_uid: dict[str, list[Dataset]] = defaultdict(list)
    for group in _groups(_read(written, "sr")):
        by_uid[_items(group, "112040")[0].UID].append(group)
    images = {str(s.SOPInstanceUID) for s in source_images}
    for uid, groups in by_uid.items():
        scoords = [i for g in groups for i in g.ContentSequence if i.ValueType == "SCOORD"]
        assert scoords, f"tracking UID {uid} has no coordinates"
        (selected,) = scoords[0].ContentSequence
        assert selected.ReferencedSOPSequence[0].ReferencedSOPInstanceUID in images


def test_roi_less_groups_are_tied_to_a_lesion_or_the_liver(written: dict[str, Path]) -> None:
    """Response-model and RECIST groups keep their own identity and point at a segment."""
    ds = _read(written, "sr")
    seg = _read(written, "seg")
    lesion_1 = lesion_tracking_uid(str(seg.SOPInstanceUID), lesion_segment_number(1))
    tied = {}
    for group in _groups(ds):
        if group.ContentTemplateSequence[0].TemplateIdentifier != "1501":
            continue
        label = _items(group, "112039")[0].TextValue
        (segment,) = _items(group, "121191")  # Referenced Segment
        assert segment.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == seg.SOPInstanceUID
        located = bool(_items(group, "121226"))  # Approximate spatial location
        tied[label] = (segment.ReferencedSOPSequence[0].ReferencedSegmentNumber, located,
                       lesion_1 == _items(group, "112040")[0].UID)
    assert tied == {
        RESPONSE_MODEL: (1, True, False),
        "Response RECIST 1.1": (1, True, False),
        "Response mRECIST": (1, True, False),
        "Lesion 1": (lesion_segment_number(1), False, True),
        "Baseline lesion 3 (not found)": (1, True, False),
    }


def test_anchoring_leaves_the_callers_groups_alone(source_images: list[Dataset],
                                                   liver_mask: npt.NDArray[np.bool_],
                                                   lesion_labels: npt.NDArray[np.int16],
                                                   lesions: list[Lesion]) -> None:
    seg = _seg(source_images, liver_mask, lesion_labels)
    groups = response_model_groups(PREDICTIONS, str(source_images[0].StudyInstanceUID))
    before = copy.deepcopy(groups)
    ident = ResultIdentity.derive(source_images[0].StudyInstanceUID, "0.1.0", "sr", 902)
    build_measurement_report(
        source_images, seg, lesions, liver_volume_ml=1.0, tumour_burden_pct=0.0,
        series_instance_uid=ident.series_instance_uid, sop_instance_uid=ident.sop_instance_uid,
        series_number=902, algorithm=MODEL, software_versions=SOFTWARE_VERSIONS,
        extra_groups=groups)
    assert groups == before


@needs_dciodvfy
@needs_pixelmed
@pytest.mark.dcmtk
@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_dciodvfy_and_pixelmed_report_no_error(written: dict[str, Path], kind: str) -> None:
    """No Error line from either validator (warnings allowed, see docs/air_conformance.md).

    PixelMed 20220618 (Debian) has IOD rules for SEG and the SR templates but none for
    Secondary Capture: for the SC only dciodvfy judges the IOD.
    """
    verdict = validate(written[kind], sr=kind in ("sr", "partial"))
    assert verdict.errors == []
    if kind == "sc":
        assert not verdict.pixelmed.recognised
        return
    assert verdict.pixelmed.recognised
    expected = "Found Root Template TID_1500" if kind != "seg" else "Found Segmentation IOD"
    assert expected in verdict.pixelmed.output


@needs_pixelmed
@pytest.mark.slow
def test_pixelmed_catches_what_it_should(written: dict[str, Path], tmp_path: Path) -> None:
    """The helper really reports errors: a SEG without its segment labels, a TID 1411 group
    without its ROI (no Referenced Segment). PixelMed 20220618 does not check that a group
    has a Tracking UID; ``test_every_group_is_tracked_and_names_its_algorithm`` does."""
    seg = _read(written, "seg")
    del seg.SegmentSequence[0].SegmentLabel
    seg.save_as(tmp_path / "seg.dcm")
    assert any("SegmentLabel" in e for e in pixelmed(tmp_path / "seg.dcm", sr=False).errors)
    sr = _read(written, "sr")
    liver = _groups(sr)[0]
    liver.ContentSequence = [i for i in liver.ContentSequence
                             if i.ConceptNameCodeSequence[0].CodeValue != "121191"]
    sr.save_as(tmp_path / "sr.dcm")
    assert any("Referenced Segment" in e and "Missing conditional" in e
               for e in pixelmed(tmp_path / "sr.dcm", sr=True).errors)
