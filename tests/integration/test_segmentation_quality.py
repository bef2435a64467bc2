"""The shipped model on a phantom it never saw, judged through the DICOM it writes.

The SEG is read back with highdicom and compared with the phantom's ground truth; the SR's
diameters with the truth's. Thresholds are the issue's: Dice ≥ 0.90 liver, ≥ 0.75 tumour,
longest diameter within 3 mm for lesions of 10 mm or more.
"""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from plugin.pipeline.run import process_study
from plugin.research.training import dice

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def processed(phantom_study: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("results")
    process_study(phantom_study / "dicom", out)
    return out


def _seg_masks(seg_path: Path, ap_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Liver and tumour masks from the SEG, stacked in the AP series' slice order."""
    seg = hd.seg.segread(seg_path)
    sources = sorted((pydicom.dcmread(p, stop_before_pixels=True) for p in ap_dir.glob("*.dcm")),
                     key=lambda ds: float(ds.ImagePositionPatient[2]))
    uids = [str(ds.SOPInstanceUID) for ds in sources]
    lesion_segments = [n for n in seg.segment_numbers if n != 1]
    liver = seg.get_pixels_by_source_instance(uids, segment_numbers=[1], skip_overlap_checks=True,
                                              ignore_spatial_locations=True)[..., 0]
    tumour = np.zeros_like(liver, dtype=bool)
    if lesion_segments:
        lesions = seg.get_pixels_by_source_instance(
            uids, segment_numbers=lesion_segments, skip_overlap_checks=True,
            ignore_spatial_locations=True)
        tumour = lesions.any(axis=-1)
    return liver.astype(bool) | tumour, tumour


def test_dice_against_truth(processed: Path, phantom_study: Path) -> None:
    truth = sitk.GetArrayFromImage(
        sitk.ReadImage(str(phantom_study / "ground_truth" / "segmentation.nii.gz")))
    liver, tumour = _seg_masks(processed / "seg.dcm", phantom_study / "dicom" / "AP")
    assert dice(liver, truth > 0) >= 0.90
    assert dice(tumour, truth == 2) >= 0.75


def test_longest_diameters_within_3_mm(processed: Path, phantom_study: Path) -> None:
    truth = json.loads((phantom_study / "ground_truth" / "truth.json").read_text())
    found = json.loads((processed / "summary.json").read_text())["measurements"]["lesions"]
    spacing = np.array([3.0, 1.5, 1.5])
    for lesion in truth["lesions"]:
        if lesion["longest_diameter_mm"] < 10:
            continue
        nearest = min(found, key=lambda m: np.linalg.norm(
            (np.subtract(m["centroid_zyx"], lesion["centroid_zyx"])) * spacing))
        distance = np.linalg.norm(np.subtract(nearest["centroid_zyx"],
                                              lesion["centroid_zyx"]) * spacing)
        assert distance < 10, f"lesion {lesion['index']} not found"
        assert abs(nearest["longest_diameter_mm"] - lesion["longest_diameter_mm"]) <= 3.0


def test_summary_lists_series_inputs_and_timings(processed: Path) -> None:
    summary = json.loads((processed / "summary.json").read_text())
    labels = {s["label"] for s in summary["series"]}
    assert {"PRE", "AP", "PVP", "DP"} <= labels
    assert set(summary["inputs"]) == {"AP", "PVP"}
    for step in ("load series", "label phases", "build volumes", "segment", "measure", "export"):
        assert summary["timings_s"][step] >= 0
    assert summary["research_use"].startswith("RESEARCH USE ONLY")
