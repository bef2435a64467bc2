"""Opt-in sequences, vendor styles and packagings: valid DICOM, loadable, right labels."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicom_io.phases import label_series
from dicom_io.series import load_study, series_to_volume
from dicom_io.synthetic import PhantomSpec, make_phantom, write_phantom_study
from dicom_io.synthetic.anatomy import LABEL_LIVER, LABEL_TUMOUR
from dicom_io.synthetic.sequences import CT_SEQUENCES, MR_SEQUENCES

DCIODVFY = Path("/usr/bin/dciodvfy")
SMALL = PhantomSpec(rows=96, columns=96, slices=16, pixel_spacing_mm=4.0, slice_spacing_mm=10.0)
EXPECTED = {"PRE": "PRE", "AP_EARLY": "AP", "AP": "AP", "PVP": "PVP", "DP": "DP",
            "HBP": "HBP", "T2": "T2", "IN": "IN_OPP", "OPP": "IN_OPP", "DWI_B50": "DWI",
            "DWI_B400": "DWI", "DWI_B800": "DWI", "CT_NC": "CT_NC", "CT_AP": "CT_AP",
            "CT_PVP": "CT_PVP", "CT_DP": "CT_DP", "LOCALIZER": "OTHER", "SUB_AP": "OTHER",
            "MPR_PVP": "OTHER"}


def _rich(modality: str, vendor: str, packaging: str) -> PhantomSpec:
    return replace(SMALL, modality=modality, vendor=vendor, packaging=packaging,
                   sequences=MR_SEQUENCES if modality == "MR" else CT_SEQUENCES,
                   ignored_series=True, coregistered=packaging == "dynamic", motion_mm=3.0)


def _errors(paths: list[Path]) -> list[str]:
    out = []
    for path in paths:
        run = subprocess.run([str(DCIODVFY), str(path)], capture_output=True, text=True,
                             timeout=60, check=False)
        out += [f"{path.parent.name}: {line}" for line in (run.stdout + run.stderr).splitlines()
                if line.startswith("Error")]
    return out


def _one_per_series(files: list[Path]) -> list[Path]:
    first: dict[Path, Path] = {}
    for path in files:
        first.setdefault(path.parent, path)
    return list(first.values())


def test_new_streams_do_not_shift_default_pixels() -> None:
    plain = make_phantom(5, SMALL)
    styled = make_phantom(5, replace(SMALL, vendor="ge", packaging="enhanced",
                                     ignored_series=True))
    assert all(np.array_equal(plain.phases[p], styled.phases[p]) for p in plain.phases)
    rich = replace(SMALL, sequences=("AP", "T2"), cirrhosis=True, capsule=True, pvtt=True)
    a, b = make_phantom(5, rich), make_phantom(5, rich)
    assert np.array_equal(a.phases["T2"], b.phases["T2"])
    assert np.array_equal(a.labels, b.labels)


@pytest.mark.dcmtk
@pytest.mark.parametrize(("modality", "vendor", "packaging"), [
    ("MR", "siemens", "classic"), ("MR", "ge", "classic"), ("MR", "philips", "classic"),
    ("MR", "uih", "classic"), ("MR", "ge", "dynamic"), ("MR", "uih", "dynamic"),
    ("MR", "siemens", "enhanced"), ("MR", "philips", "enhanced"),
    ("CT", "siemens", "classic"), ("CT", "ge", "enhanced"), ("CT", "philips", "classic"),
    ("CT", "uih", "classic"),
])
def test_every_series_passes_dciodvfy(modality: str, vendor: str, packaging: str,
                                      tmp_path: Path) -> None:
    files = write_phantom_study(make_phantom(4, _rich(modality, vendor, packaging)), tmp_path)
    assert not _errors(_one_per_series(files))


@pytest.mark.parametrize("vendor", ["siemens", "ge", "philips", "uih"])
def test_descriptions_get_the_right_label(vendor: str, tmp_path: Path) -> None:
    write_phantom_study(make_phantom(4, _rich("MR", vendor, "classic")), tmp_path / "mr")
    write_phantom_study(make_phantom(4, _rich("CT", vendor, "classic")), tmp_path / "ct")
    for root in (tmp_path / "mr", tmp_path / "ct"):
        for series in load_study(root / "dicom"):
            folder = series.paths[0].parent.name
            if folder in EXPECTED and not (root.name == "ct" and folder == "LOCALIZER"):
                label = label_series(series)
                assert label.label == EXPECTED[folder], (vendor, folder, series.description,
                                                         label.reason)


def test_enhanced_and_dynamic_load_in_the_series_loader(tmp_path: Path) -> None:
    enhanced = write_phantom_study(make_phantom(4, _rich("MR", "siemens", "enhanced")),
                                   tmp_path / "e")
    ap = next(p for p in enhanced if p.parent.name == "AP")
    volume = series_to_volume([pydicom.dcmread(ap)])
    assert volume.array.shape == (16, 96, 96)
    write_phantom_study(make_phantom(4, _rich("MR", "ge", "dynamic")), tmp_path / "d")
    dynamic = next(s for s in load_study(tmp_path / "d" / "dicom")
                   if s.paths[0].parent.name == "DYNAMIC")
    groups: dict[int, list[pydicom.Dataset]] = {}
    for ds in dynamic.datasets:
        groups.setdefault(int(ds.TemporalPositionIdentifier), []).append(ds)
    assert sorted(groups) == [1, 2, 3, 4, 5]
    times = [str(groups[t][0].AcquisitionTime) for t in sorted(groups)]
    assert times == sorted(times)
    assert "ContrastBolusAgent" in groups[2][0]
    assert series_to_volume(groups[3]).array.shape == (16, 96, 96)


def test_series_not_coregistered_have_their_own_grid(tmp_path: Path) -> None:
    spec = replace(SMALL, sequences=("AP", "T2", "DWI_B800", "ADC"), coregistered=False,
                   motion_mm=4.0, vendor="siemens")
    write_phantom_study(make_phantom(8, spec), tmp_path)
    truth = json.loads((tmp_path / "ground_truth" / "truth.json").read_text())
    t2 = series_to_volume(load_study(tmp_path / "dicom" / "T2")[0])
    assert t2.spacing == pytest.approx((1.25, 1.25, 6.0))
    assert truth["series"]["T2"]["shape"] == list(t2.array.shape)
    assert truth["series"]["AP"]["motion_mm"] == [0.0, 0.0, 0.0]
    assert any(abs(v) > 0 for v in truth["series"]["T2"]["motion_mm"])
    b800 = pydicom.dcmread(tmp_path / "dicom" / "DWI_B800" / "0001.dcm")
    assert float(b800.DiffusionBValue) == 800
    assert b800.private_block(0x0019, "SIEMENS MR HEADER")[0x0C].value == 800


def test_ct_noise_follows_dose() -> None:
    low = make_phantom(9, replace(SMALL, modality="CT", ct_tube_current_ma=50))
    high = make_phantom(9, replace(SMALL, modality="CT", ct_tube_current_ma=400))
    fat = low.labels == 0
    assert np.std(low.phases["CT_NC"][fat & (low.phases["CT_NC"] > -500)]) > np.std(
        high.phases["CT_NC"][fat & (high.phases["CT_NC"] > -500)])


def test_enhancement_measured_on_dicom_pixels(tmp_path: Path) -> None:
    """Tumour/liver contrast is higher on AP than PVP; wash-out makes it darker on DP."""
    spec = replace(PhantomSpec(rows=128, columns=128, slices=32, pixel_spacing_mm=2.5,
                               slice_spacing_mm=5.0), lesion_plan=(40.0,), vendor="philips",
                   necrotic_fraction=0.0)
    write_phantom_study(make_phantom(12, spec), tmp_path)
    labels = np.asarray(__import__("SimpleITK").GetArrayFromImage(
        __import__("SimpleITK").ReadImage(str(tmp_path / "ground_truth" /
                                              "segmentation.nii.gz"))))
    core = labels == LABEL_TUMOUR
    liver = labels == LABEL_LIVER

    def ratio(phase: str) -> float:
        image = series_to_volume(load_study(tmp_path / "dicom" / phase)[0]).array
        return float(np.median(image[core]) / np.median(image[liver]))

    assert ratio("AP") > ratio("PVP")
    assert ratio("DP") < 1.0
