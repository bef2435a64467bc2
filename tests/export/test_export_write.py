"""export.write: marking the encoding changes how fast pydicom writes, never what."""

from __future__ import annotations

import copy
import io

import highdicom as hd
import numpy as np
from export_testutils import ALGORITHM, SOFTWARE_VERSIONS
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from export.sr.sop import wrap_report
from export.write import mark_encoding


def _bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _same_either_way(ds: Dataset) -> None:
    plain, marked = copy.deepcopy(ds), copy.deepcopy(ds)
    mark_encoding(marked)
    assert _bytes(plain) == _bytes(marked)


def test_sr_with_non_ascii_text_written_the_same(source_images: list[Dataset]) -> None:
    """UTF-8 text (the disclaimer's em dash, a note in Greek) deep in the tree and the
    pre-encoded Image Library are written as pydicom writes them unmarked."""
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="Liver"),
        measurements=[hd.sr.Measurement(
            name=hd.sr.CodedConcept("118565006", "SCT", "Volume"), value=1.0,
            unit=hd.sr.CodedConcept("ml", "UCUM", "milliliter"))])
    sr = wrap_report([group], source_images, source_images, [("Σημείωση", "ήπαρ — ok")],
                     series_instance_uid=generate_uid(), sop_instance_uid=generate_uid(),
                     series_number=9902, instance_number=1, algorithm=ALGORITHM,
                     software_versions=SOFTWARE_VERSIONS)
    _same_either_way(sr)


def test_ambiguous_vr_left_for_pydicom_to_correct(source_images: list[Dataset]) -> None:
    """A data set with an ambiguous VR (US or SS) is left unmarked, its ancestors too, and
    pydicom still resolves it from the Pixel Representation."""
    ds = copy.deepcopy(source_images[0])
    ds.PixelRepresentation = 1
    ds.add_new(0x00280106, "US or SS", -5)  # Smallest Image Pixel Value
    item = Dataset()
    item.PixelRepresentation = 1
    item.add_new(0x00280107, "US or SS", -2)  # Largest Image Pixel Value
    ds.ReferencedImageSequence = [item]
    ds.PixelData = np.zeros((64, 64), np.int16).tobytes()
    _same_either_way(ds)
    mark_encoding(ds)
    assert ds.original_encoding == (None, None)
    assert ds.ReferencedImageSequence[0].original_encoding == (None, None)
