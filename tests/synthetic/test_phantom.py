"""The phantom: deterministic, DICOM-valid, and its truth matches its pixels."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from dicom_io.synthetic import PhantomSpec, make_phantom, write_phantom_study
from dicom_io.synthetic.anatomy import LABEL_LIVER, LABEL_TUMOUR, longest_axial_diameter

DCIODVFY = Path("/usr/bin/dciodvfy")


@pytest.fixture(scope="module")
def mr_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("mr")
    phantom = make_phantom(11)
    write_phantom_study(phantom, out)
    return out, phantom


def test_same_seed_same_study() -> None:
    a, b = make_phantom(5), make_phantom(5)
    assert np.array_equal(a.labels, b.labels)
    assert all(np.array_equal(a.phases[p], b.phases[p]) for p in a.phases)
    assert make_phantom(6).labels.tobytes() != a.labels.tobytes()


def test_series_layout_and_uids(mr_study: tuple[Path, object], tmp_path: Path) -> None:
    out, _phantom = mr_study
    series = sorted(p.name for p in (out / "dicom").iterdir())
    assert series == ["AP", "DP", "PRE", "PVP"]
    first = pydicom.dcmread(out / "dicom" / "AP" / "0001.dcm")
    again = write_phantom_study(make_phantom(11), tmp_path)
    assert pydicom.dcmread(again[0]).StudyInstanceUID == first.StudyInstanceUID
    studies = {pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID
               for p in (out / "dicom").rglob("*.dcm")}
    assert studies == {first.StudyInstanceUID}
    assert "ContrastBolusAgent" not in pydicom.dcmread(out / "dicom" / "PRE" / "0001.dcm")
    assert first.ContrastBolusAgent


@pytest.mark.dcmtk
@pytest.mark.parametrize("modality", ["MR", "CT"])
def test_every_instance_passes_dciodvfy(modality: str, tmp_path: Path) -> None:
    files = write_phantom_study(make_phantom(21, PhantomSpec(modality=modality)), tmp_path)
    errors = []
    for path in files:
        run = subprocess.run([str(DCIODVFY), str(path)], capture_output=True, text=True,
                             timeout=30, check=False)
        errors += [f"{path.name}: {line}" for line in (run.stdout + run.stderr).splitlines()
                   if line.startswith("Error")]
    assert not errors, errors[:5]


def test_ground_truth_matches_dicom_grid_and_pixels(mr_study: tuple[Path, object]) -> None:
    out, _ = mr_study
    truth = json.loads((out / "ground_truth" / "truth.json").read_text())
    labels_img = sitk.ReadImage(str(out / "ground_truth" / "segmentation.nii.gz"))
    labels = sitk.GetArrayFromImage(labels_img)
    first = pydicom.dcmread(out / "dicom" / "AP" / "0001.dcm")
    assert np.allclose(labels_img.GetOrigin(), [float(v) for v in first.ImagePositionPatient])
    assert np.allclose(labels_img.GetSpacing()[:2], [float(v) for v in first.PixelSpacing])
    assert labels.shape == (len(list((out / "dicom" / "AP").iterdir())), first.Rows,
                            first.Columns)
    voxel_ml = float(np.prod(labels_img.GetSpacing())) / 1000
    assert 1 <= len(truth["lesions"]) <= 3
    total = sum(lesion["volume_ml"] for lesion in truth["lesions"])
    assert total == pytest.approx((labels == LABEL_TUMOUR).sum() * voxel_ml, rel=1e-6)
    for lesion in truth["lesions"]:
        z, y, x = (round(c) for c in lesion["centroid_zyx"])
        assert labels[z, y, x] in (LABEL_LIVER, LABEL_TUMOUR)
        assert lesion["viable_diameter_mm"] <= lesion["longest_diameter_mm"] + 1e-6


def test_lesions_enhance_then_wash_out() -> None:
    phantom = make_phantom(13, PhantomSpec(necrosis_probability=0.0))
    tumour, liver = phantom.labels == LABEL_TUMOUR, phantom.labels == LABEL_LIVER
    ap, pvp = phantom.phases["AP"], phantom.phases["PVP"]
    assert np.median(ap[tumour]) > 1.3 * np.median(ap[liver])
    assert np.median(pvp[tumour]) < 0.9 * np.median(pvp[liver])


def test_brute_force_diameter_of_a_disc() -> None:
    yy, xx = np.mgrid[:101, :101]
    disc = ((yy - 50) ** 2 + (xx - 50) ** 2 <= 40**2)[None]
    assert longest_axial_diameter(disc, (0.5, 0.5, 3.0)) == pytest.approx(40.0, abs=0.01)
