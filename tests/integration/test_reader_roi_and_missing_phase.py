"""Issue 4: a reader's tumour SEG replaces the automatic ROI; a study missing the PVP series
still gets an SR that says which model did not run and why.

A small phantom (128 x 128 x 32, AP + PVP) keeps each pipeline run near ten seconds.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes
from scipy import ndimage

from dicom_io.series import load_study, series_to_volume
from dicom_io.synthetic import Phantom, PhantomSpec, make_phantom, write_phantom_study
from export.sr import codes as sr_codes
from inference.measurements import TUMOUR, measure
from plugin.pipeline.run import PipelineSettings, process_study

SEED = 424_261  # not a training/validation seed
SMALL = PhantomSpec(sequences=("AP", "PVP"), rows=128, columns=128, slices=32,
                    pixel_spacing_mm=3.0, slice_spacing_mm=6.0, lesion_plan=(40.0, 25.0),
                    necrotic_fraction=0.0)


def _texts(sr: pydicom.Dataset) -> str:
    out: list[str] = []
    stack = list(sr.ContentSequence)
    while stack:
        item = stack.pop()
        out.append(str(getattr(item, "TextValue", "")))
        stack += list(item.get("ContentSequence", []))
    return " ".join(out)


def _reader_seg(phantom: Phantom, ap_dir: Path) -> tuple[pydicom.Dataset, np.ndarray]:
    """Lesion 1 of the truth, eroded and shifted 2 voxels, as a reader's BINARY SEG."""
    mask = ndimage.binary_erosion(phantom.lesion_labels == 1)
    mask = np.roll(mask, 2, axis=2)
    series = next(s for s in load_study(ap_dir))
    volume = series_to_volume(series)
    assert volume.shape == mask.shape
    by_uid = {str(ds.SOPInstanceUID): pydicom.dcmread(p) for ds, p in
              zip(series.datasets, series.paths, strict=True)}
    sources = [by_uid[uid] for uid in volume.sop_instance_uids]
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label="Tumour",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
    seg = hd.seg.Segmentation(
        sources, mask.astype(np.uint8), hd.seg.SegmentationTypeValues.BINARY, [segment],
        hd.UID(), 300, hd.UID(), 1, manufacturer="Reader Workstation",
        manufacturer_model_name="manual", software_versions="1", device_serial_number="1",
        series_description="Reader tumour ROI")  # type: ignore[call-arg]
    return seg, mask


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Phantom, Path]]:
    folder = tmp_path_factory.mktemp("roi-phantom")
    phantom = make_phantom(SEED, SMALL)
    write_phantom_study(phantom, folder)
    yield phantom, folder


def _lesion_values(sr: pydicom.Dataset) -> list[dict[str, float]]:
    groups = []
    stack = list(sr.ContentSequence)
    while stack:
        item = stack.pop()
        children = list(item.get("ContentSequence", []))
        names = {c.ConceptNameCodeSequence[0].CodeMeaning: c for c in children}
        tracking = names.get("Tracking Identifier")
        if tracking is not None and str(tracking.TextValue).startswith("Lesion ") and \
                sr_codes.VOLUME.meaning in names:
            groups.append({c.ConceptNameCodeSequence[0].CodeMeaning:
                           float(c.MeasuredValueSequence[0].NumericValue)
                           for c in children if c.ValueType == "NUM"})
        stack += children
    return groups


def test_reader_seg_is_the_roi_and_the_sr_says_so(study: tuple[Phantom, Path],
                                                  tmp_path: Path) -> None:
    phantom, folder = study
    dicom = tmp_path / "dicom"
    shutil.copytree(folder / "dicom", dicom)
    seg, mask = _reader_seg(phantom, dicom / "AP")
    (dicom / "READER").mkdir()
    seg.save_as(dicom / "READER" / "seg.dcm", enforce_file_format=True)
    process_study(dicom, tmp_path / "out")
    sr = pydicom.dcmread(tmp_path / "out" / "sr.dcm")
    hd.sr.srread(tmp_path / "out" / "sr.dcm")
    expected = measure(mask.astype(np.uint8) * TUMOUR, phantom.spacing).lesions
    found = _lesion_values(sr)
    assert len(found) == len(expected) == 1
    lesion = found[0]
    assert lesion[sr_codes.VOLUME.meaning] == pytest.approx(expected[0].volume_ml, rel=1e-6)
    assert lesion[sr_codes.LONGEST_DIAMETER.meaning] == pytest.approx(
        expected[0].longest_diameter_mm, rel=1e-6)
    assert "reader ROI" in _texts(sr)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["tumour_roi"]["source"] == "reader"


def _single_phase_bundles() -> list[str]:
    """Installed segmentation bundles that can run on one arterial series alone."""
    from plugin.pipeline.models import segmentation_bundles

    return [b.name for b in segmentation_bundles() if len(b.inputs.phases) == 1
            and "AP" in b.inputs.accepted(b.inputs.phases[0])]


def test_missing_pvp_another_bundle_or_an_sr_with_the_reason(study: tuple[Phantom, Path],
                                                             tmp_path: Path) -> None:
    """Without PVP the two-phase bundle cannot run: a single-phase bundle takes the study
    when one is installed (the SR says which and why), else the SR says why none ran."""
    _, folder = study
    dicom = tmp_path / "dicom"
    shutil.copytree(folder / "dicom", dicom)
    shutil.rmtree(dicom / "PVP")
    result = process_study(dicom, tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    reason = summary["segmentation"]["reason"]
    assert "liver-tumour-seg 0.2.0 not usable: no usable series for PVP" in reason
    sr_path = tmp_path / "out" / "sr.dcm"
    hd.sr.srread(sr_path)
    text = _texts(pydicom.dcmread(sr_path))
    assert "RESEARCH USE ONLY" in text and "no usable series for PVP" in text
    single = _single_phase_bundles()
    if single:
        assert summary["segmentation"]["ran"] is True
        assert summary["segmentation"]["bundle"].split()[0] in single
        assert {p.name for p in result.files} >= {"seg.dcm", "sr.dcm"}
    else:
        assert [p.name for p in result.files] == ["sr.dcm"]
        assert summary["segmentation"]["ran"] is False and summary["measurements"] is None


def test_no_usable_series_gives_an_sr_with_the_reason(study: tuple[Phantom, Path],
                                                      tmp_path: Path) -> None:
    """A site rule that calls every T1 series OTHER leaves no bundle its input: one SR with
    every bundle's reason and the response models' own reasons, referencing the images."""
    _, folder = study
    rules = tmp_path / "site_rules.toml"
    rules.write_text('[[mr]]\nlabel = "OTHER"\npattern = "vibe"\n')
    dicom = folder / "dicom"
    result = process_study(dicom, tmp_path / "out", PipelineSettings(phase_rules=(rules,)))
    assert [p.name for p in result.files] == ["sr.dcm"]
    sr = pydicom.dcmread(result.files[0])
    hd.sr.srread(result.files[0])
    text = _texts(sr)
    assert "Segmentation" in text and "not run" in text and "no usable series for" in text
    assert "RESEARCH USE ONLY" in text
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["segmentation"]["ran"] is False and summary["measurements"] is None
    for outcome in summary["response_models"]:  # each response bundle says why, in the SR too
        assert outcome["reason"] and outcome["name"] in text
    referenced = {str(ds.ReferencedSOPInstanceUID) for ds in
                  sr.CurrentRequestedProcedureEvidenceSequence[0]
                  .ReferencedSeriesSequence[0].ReferencedSOPSequence}
    ap = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
          for p in (dicom / "AP").glob("*.dcm")}
    assert ap <= referenced


def test_site_phase_rules_reach_the_pipeline(study: tuple[Phantom, Path], tmp_path: Path) -> None:
    """``[pipeline] phase_rules``: a site rule calling the arterial series OTHER leaves the
    two-phase bundle without its AP input, and the SR says so."""
    _, folder = study
    rules = tmp_path / "site_rules.toml"
    rules.write_text('[[mr]]\nlabel = "OTHER"\npattern = "vibe fs ap$"\n')
    process_study(folder / "dicom", tmp_path / "out", PipelineSettings(phase_rules=(rules,)))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert "no usable series for AP" in summary["segmentation"]["reason"]
    assert "no usable series for AP" in _texts(pydicom.dcmread(tmp_path / "out" / "sr.dcm"))
