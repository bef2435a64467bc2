"""Issue 11: training on and evaluating against a site's annotated DICOM studies.

Studies: two small phantoms written as DICOM (a portal-venous MR whose reader SEG outlines
liver and tumour, a portal-venous CT whose SEG outlines the liver only) and the real GE CT of
dcmqi (3 slices, a dcmqi liver SEG). Everything runs through the CLI as a site would run it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from dicom_io.series import load_study, series_to_volume
from dicom_io.synthetic import Phantom, PhantomSpec, make_phantom, write_phantom_study
from inference.bundle import load_bundle
from plugin.cli.main import main
from plugin.research.annotated_studies import load_annotated_studies
from plugin.research.segmentation_evaluation import hd95, score_study
from tests.shared_data import REAL_DATA

BUNDLE = "liver-tumour-seg-any"
SHAPE = dict(rows=128, columns=128, slices=32, pixel_spacing_mm=3.0, slice_spacing_mm=6.0)
MR = PhantomSpec(sequences=("PVP",), **SHAPE)  # type: ignore[arg-type]
CT = PhantomSpec(modality="CT", sequences=("CT_PVP",), **SHAPE)  # type: ignore[arg-type]
REAL_CT = REAL_DATA / "dcmqi" / "data" / "segmentations"


def _segment(number: int, label: str, tumour: bool) -> hd.seg.SegmentDescription:
    return hd.seg.SegmentDescription(
        segment_number=number, segment_label=label,
        segmented_property_category=(codes.SCT.MorphologicallyAbnormalStructure if tumour
                                     else codes.SCT.Organ),
        segmented_property_type=codes.SCT.Neoplasm if tumour else codes.SCT.Liver,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)


def _write_reader_seg(phantom: Phantom, series_dir: Path, out: Path, tumour: bool) -> None:
    """The phantom's truth as a reader's BINARY SEG on its only series."""
    series = load_study(series_dir)[0]
    volume = series_to_volume(series)
    by_uid = {str(ds.SOPInstanceUID): pydicom.dcmread(p)
              for ds, p in zip(series.datasets, series.paths, strict=True)}
    sources = [by_uid[uid] for uid in volume.sop_instance_uids]
    liver = phantom.labels > 0
    masks = [liver, phantom.labels == 2] if tumour else [liver]
    segments = [_segment(1, "Liver", False)] + ([_segment(2, "Tumour", True)] if tumour else [])
    seg = hd.seg.Segmentation(
        sources, np.stack(masks, axis=-1).astype(np.uint8),
        hd.seg.SegmentationTypeValues.BINARY, segments, hd.UID(), 300, hd.UID(), 1,
        manufacturer="Reader Workstation", manufacturer_model_name="manual",
        software_versions="1", device_serial_number="1",
        series_description="Reader outline")  # type: ignore[call-arg]
    seg.save_as(out, enforce_file_format=True)


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Phantom]]:
    """A folder of three annotated studies; yields it and the MR phantom."""
    root = tmp_path_factory.mktemp("annotated")
    mr = make_phantom(424_311, MR)
    write_phantom_study(mr, root / "mr")
    _write_reader_seg(mr, root / "mr" / "dicom" / "PVP", root / "mr" / "reader.dcm", True)
    ct = make_phantom(424_312, CT)
    write_phantom_study(ct, root / "ct")
    _write_reader_seg(ct, root / "ct" / "dicom" / "CT_PVP", root / "ct" / "reader.dcm", False)
    if not REAL_CT.is_dir():
        pytest.skip(f"shared real data missing: {REAL_CT}")
    real = root / "real"
    real.mkdir()
    for name in ("01.dcm", "02.dcm", "03.dcm"):
        os.symlink(REAL_CT / "ct-3slice" / name, real / name)
    os.symlink(REAL_CT / "liver.dcm", real / "liver.dcm")
    yield root, mr


def _bundle_path() -> Path:
    return Path(__file__).resolve().parents[2] / "inference" / "bundles" / BUNDLE


pytestmark = pytest.mark.skipif(not (_bundle_path() / "bundle.toml").is_file(),
                                reason=f"shipped bundle {BUNDLE} not found")


def test_reader_outlines_become_exact_or_partial_labels(studies: tuple[Path, Phantom]) -> None:
    root, mr = studies
    found, skipped = load_annotated_studies(root, load_bundle(_bundle_path()).inputs)
    assert skipped == [] and len(found) == 3
    by_phase = {s.phases[0]: s for s in found}
    assert set(by_phase) == {"PVP", "CT_PVP", "CT_NC"}  # the real CT has no contrast agent
    both = by_phase["PVP"]
    assert both.liver_drawn and both.tumour_drawn
    assert np.array_equal(both.labels, mr.labels)  # placed on the grid it was drawn on
    liver_only = by_phase["CT_PVP"]
    assert liver_only.liver_drawn and not liver_only.tumour_drawn
    assert set(np.unique(liver_only.labels).tolist()) == {0, 4}  # 4: liver or tumour
    real = by_phase["CT_NC"]
    assert real.labels.shape == (3, 512, 512)
    assert (real.labels == 4).sum(axis=(1, 2)).min() > 30_000  # the dcmqi liver, every slice
    assert all(len(s.key) == 12 and s.key not in s.roi for s in found)


def test_a_perfect_prediction_scores_perfectly(studies: tuple[Path, Phantom]) -> None:
    root, mr = studies
    found, _ = load_annotated_studies(root, load_bundle(_bundle_path()).inputs)
    study = next(s for s in found if s.phases == ("PVP",))
    score = score_study(study, mr.labels)
    assert score.dice_liver == 1.0 and score.dice_tumour == 1.0
    assert score.hd95_liver_mm == 0.0 and score.diameter_error_mm == 0.0
    shifted = np.roll(mr.labels, 2, axis=2)  # two voxels of 3 mm to the left
    worse = score_study(study, shifted)
    assert worse.dice_liver is not None and worse.dice_liver < 1.0
    assert worse.hd95_liver_mm == pytest.approx(6.0)
    assert hd95(np.zeros((2, 2, 2), bool), mr.labels[:2, :2, :2] > 0, (1, 1, 1)) is None


def test_evaluate_segmentation_reports_every_study(studies: tuple[Path, Phantom],
                                                   tmp_path: Path) -> None:
    root, _ = studies
    out = tmp_path / "evaluation"
    assert main(["evaluate", "segmentation", "--studies", str(root), "--bundle", BUNDLE,
                 "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    report = (out / "report.html").read_text()
    assert "RESEARCH USE ONLY" in report and metrics["research_use"].startswith("RESEARCH")
    rows = {r["phases"][0]: r for r in metrics["studies"]}
    assert set(rows) == {"PVP", "CT_PVP", "CT_NC"} and metrics["skipped"] == []
    assert rows["PVP"]["dice_tumour"] is not None and rows["CT_PVP"]["dice_tumour"] is None
    assert rows["CT_NC"]["slices"] == 3
    for row in rows.values():
        assert 0.0 <= row["dice_liver"] <= 1.0 and row["hd95_liver_mm"] is not None
    # the shipped single-series bundle finds a phantom liver on a portal-venous series
    assert rows["PVP"]["dice_liver"] > 0.8 and rows["CT_PVP"]["dice_liver"] > 0.8
    assert metrics["summary"]["dice_liver"]["n"] == 3
    figures = len(metrics["summary"]) - 1  # every key but the study count is a table row
    assert report.count("<tr>") == (1 + figures) + (1 + 3)  # headers, figures, studies


def test_train_segmentation_fine_tunes_on_the_studies(studies: tuple[Path, Phantom],
                                                      tmp_path: Path) -> None:
    root, mr = studies
    out = tmp_path / "site-bundle"
    assert main(["train", "segmentation", "--studies", str(root), "--from-bundle", BUNDLE,
                 "--out", str(out), "--steps", "2"]) == 0
    bundle = load_bundle(out)
    source = load_bundle(_bundle_path())
    assert bundle.name == f"{BUNDLE}-site" and bundle.inputs == source.inputs
    assert bundle.spacing_mm == source.spacing_mm and bundle.patch_size == source.patch_size
    assert bundle.training["studies"] == 3
    assert "liver+tumour: 1" in bundle.training["data"]
    assert "liver only: 2" in bundle.training["data"]
    assert bundle.training["fine_tuned_from"].startswith(BUNDLE)
    text = (out / "bundle.toml").read_text() + (out / "training.json").read_text()
    for identifier in (mr.seed, "HEPPH", "PHANTOM^", "1.2.392.200103"):
        assert str(identifier) not in text
    assert (out / "model.onnx").read_bytes() != source.model_file.read_bytes()


def test_train_segmentation_from_scratch(studies: tuple[Path, Phantom], tmp_path: Path) -> None:
    root, _ = studies
    out = tmp_path / "scratch"
    assert main(["train", "segmentation", "--studies", str(root), "--out", str(out),
                 "--steps", "1"]) == 0
    bundle = load_bundle(out)
    assert bundle.name == "liver-tumour-seg-site" and bundle.inputs.phases == ("ANY",)
    assert "from random weights" in bundle.training["data"]


def test_no_annotated_study_is_a_clear_error(tmp_path: Path) -> None:
    phantom = make_phantom(424_313, MR)
    write_phantom_study(phantom, tmp_path / "plain")
    assert main(["train", "segmentation", "--studies", str(tmp_path / "plain"), "--out",
                 str(tmp_path / "b"), "--steps", "1"]) == 1
    assert not (tmp_path / "b" / "bundle.toml").exists()
