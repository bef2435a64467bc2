"""Issue 11: a study with one contrast series (CT or MR, any phase) is segmented out of the
box: SEG, SR with measurements and heatmaps, and the SR names the bundle chosen and why.

The CT portal-venous case is written as real archives send it: JPEG 2000 compressed, with the
SOP Class UID only in the file meta header.
"""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless

from dicom_io.synthetic import PhantomSpec, make_phantom, write_phantom_study
from plugin.pipeline.run import process_study

SMALL = {"rows": 128, "columns": 128, "slices": 32, "pixel_spacing_mm": 3.0,
         "slice_spacing_mm": 6.0, "lesion_plan": (40.0, 25.0)}
CASES = [("CT", "CT_PVP", True), ("CT", "CT_AP", False), ("MR", "PVP", False),
         ("MR", "AP", False), ("MR", "DP", False), ("MR", "PRE", False)]


def _as_archives_send_it(folder: Path) -> None:
    """JPEG 2000 lossless pixels and no SOP Class UID in the data set (only in the meta)."""
    for path in folder.rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.compress(JPEG2000Lossless)
        del ds.SOPClassUID
        ds.save_as(path)


def _texts(sr: pydicom.Dataset) -> str:
    out, stack = [], list(sr.ContentSequence)
    while stack:
        item = stack.pop()
        out.append(str(getattr(item, "TextValue", "")))
        stack += list(item.get("ContentSequence", []))
    return " ".join(out)


@pytest.mark.slow
@pytest.mark.parametrize(("modality", "phase", "compressed"), CASES)
def test_one_series_is_segmented(modality: str, phase: str, compressed: bool,
                                 tmp_path: Path) -> None:
    phantom = make_phantom(424_281, PhantomSpec(modality=modality, sequences=(phase,), **SMALL))
    write_phantom_study(phantom, tmp_path / "study")
    dicom = tmp_path / "study" / "dicom"
    if compressed:
        _as_archives_send_it(dicom)
        ds = pydicom.dcmread(next(dicom.rglob("*.dcm")), stop_before_pixels=True)
        assert "SOPClassUID" not in ds and ds.file_meta.TransferSyntaxUID == JPEG2000Lossless
    result = process_study(dicom, tmp_path / "out")
    names = {p.name for p in result.files}
    assert {"seg.dcm", "sr.dcm"} <= names and any(n.startswith("heatmap") for n in names)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    chosen = summary["segmentation"]
    assert chosen["ran"] is True and "chosen" in chosen["reason"]
    assert summary["measurements"]["liver_volume_ml"] > 0
    text = _texts(pydicom.dcmread(tmp_path / "out" / "sr.dcm"))
    assert chosen["bundle"] in text and "every input present" in text
    hd.seg.segread(tmp_path / "out" / "seg.dcm")  # a valid SEG highdicom reads back
    truth_ml = float((phantom.labels > 0).sum()) * float(np.prod(phantom.spacing)) / 1000.0
    found_ml = summary["measurements"]["liver_volume_ml"]
    assert 0.6 * truth_ml <= found_ml <= 1.5 * truth_ml, (modality, phase, found_ml, truth_ml)


def test_shipped_bundles_include_a_single_series_one() -> None:
    from plugin.pipeline.models import segmentation_bundles

    single = [b for b in segmentation_bundles() if len(b.inputs.phases) == 1]
    assert single, "no single-series segmentation bundle is installed"
    accepted = set(single[0].inputs.accepted(single[0].inputs.phases[0]))
    assert {"CT_PVP", "PVP", "AP", "DP"} <= accepted
