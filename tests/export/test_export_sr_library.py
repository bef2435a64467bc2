"""export.sr.library: the pre-encoded Image Library is highdicom's, byte for byte, and the
SR that holds it reads back and validates like one built by highdicom alone."""

from __future__ import annotations

import copy
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from export_testutils import ALGORITHM, SOFTWARE_VERSIONS, dciodvfy_errors, needs_dciodvfy
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import CTImageStorage, generate_uid

from export.sr.library import image_library, is_image_library
from export.sr.sop import wrap_report
from export.write import save_result


def _encoded(ds: Dataset) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    return buffer.getvalue()


def _as_ct(images: list[Dataset], *, spacing_between: bool, frame: bool) -> list[Dataset]:
    """CT copies of the MR slices (another modality code), with or without the optional
    Spacing Between Slices and Frame of Reference, and positions that are not whole mm."""
    out = []
    for index, image in enumerate(images):
        ct = copy.deepcopy(image)
        ct.SOPClassUID, ct.SOPInstanceUID, ct.Modality = CTImageStorage, generate_uid(), "CT"
        ct.ImagePositionPatient = [-48.25, 12.125, round(1.3333 * index, 4)]
        ct.SliceThickness = "1.25"
        if spacing_between:
            ct.SpacingBetweenSlices = 1.25
        if not frame:
            del ct.FrameOfReferenceUID
        out.append(ct)
    return out


@pytest.mark.parametrize(("modality", "spacing_between", "frame"),
                         [("MR", False, True), ("CT", True, True), ("CT", False, False)])
def test_library_bytes_equal_highdicoms(source_images: list[Dataset], modality: str,
                                        spacing_between: bool, frame: bool) -> None:
    images = source_images if modality == "MR" else _as_ct(
        source_images, spacing_between=spacing_between, frame=frame)
    ours, theirs = image_library(images), hd.sr.ImageLibrary(images)[0]
    assert _encoded(ours) == _encoded(theirs)
    assert is_image_library(ours) and is_image_library(theirs)


def test_mixed_series_group_as_highdicom_does(source_images: list[Dataset]) -> None:
    """Two modalities: one Image Library Group each, in the order first met."""
    images = [*source_images[:3], *_as_ct(source_images[:3], spacing_between=True, frame=True)]
    ours = image_library(images)
    assert _encoded(ours) == _encoded(hd.sr.ImageLibrary(images)[0])
    assert len(ours.ContentSequence) == 2


def test_unusual_images_fall_back_to_highdicom(source_images: list[Dataset]) -> None:
    """An image without Slice Thickness is described by highdicom itself (which refuses it
    as it did before), never half-encoded here."""
    images = copy.deepcopy(source_images[:2])
    del images[1].SliceThickness
    with pytest.raises(AttributeError):
        image_library(images)


def _report(images: list[Dataset]) -> hd.sr.Comprehensive3DSR:
    uid = generate_uid()
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=uid, identifier="Liver"),
        measurements=[hd.sr.Measurement(
            name=hd.sr.CodedConcept("118565006", "SCT", "Volume"), value=1.0,
            unit=hd.sr.CodedConcept("ml", "UCUM", "milliliter"))])
    return wrap_report([group], images, images, [("Note", "x")],
                       series_instance_uid=generate_uid(), sop_instance_uid=generate_uid(),
                       series_number=9902,
                       instance_number=1, algorithm=ALGORITHM, software_versions=SOFTWARE_VERSIONS)


def test_report_reads_back_with_library_in_place(source_images: list[Dataset],
                                                 tmp_path: Path) -> None:
    """The library sits after the procedure reported and before the measurements, as
    MeasurementReport puts it, and highdicom reads every entry back."""
    sr = _report(source_images)
    path = save_result(sr, tmp_path / "sr.dcm")
    read = hd.sr.srread(path)
    names = [item.ConceptNameCodeSequence[0].CodeMeaning for item in read.ContentSequence]
    assert names.index("Procedure reported") + 1 == names.index("Image Library")
    assert names.index("Image Library") + 1 == names.index("Imaging Measurements")
    library = read.ContentSequence[names.index("Image Library")]
    entries = library.ContentSequence[0].ContentSequence
    assert [e.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for e in entries] == [
        ds.SOPInstanceUID for ds in source_images]
    evidence = read.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert len(evidence.ReferencedSOPSequence) == len(source_images)
    reread = pydicom.dcmread(path)
    assert _encoded(reread.ContentSequence[names.index("Image Library")]) == _encoded(
        hd.sr.ImageLibrary(source_images)[0])


@needs_dciodvfy
@pytest.mark.dcmtk
def test_report_with_encoded_library_passes_dciodvfy(source_images: list[Dataset],
                                                     tmp_path: Path) -> None:
    path = save_result(_report(source_images), tmp_path / "sr.dcm")
    assert dciodvfy_errors(path) == []
