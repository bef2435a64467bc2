"""Phase labels for the phantom's descriptions and common vendor styles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset

from dicom_io.phases import label_series, load_rules


def _ds(description: str, modality: str = "MR", contrast: str | None = None,
        image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "M", "ND")) -> Dataset:
    ds = Dataset()
    ds.Modality = modality
    ds.SeriesDescription = description
    ds.ImageType = list(image_type)
    if contrast:
        ds.ContrastBolusAgent = contrast
    return ds


@pytest.mark.parametrize(
    ("description", "modality", "contrast", "label"),
    [
        ("T1 VIBE FS PRE", "MR", None, "PRE"),
        ("T1 VIBE FS ARTERIAL", "MR", "Gadoxetate", "AP"),
        ("T1 VIBE FS PORTAL VENOUS", "MR", "Gadoxetate", "PVP"),
        ("T1 VIBE FS DELAYED", "MR", "Gadoxetate", "DP"),
        ("CT NON-CONTRAST", "CT", None, "CT_NC"),
        ("CT ARTERIAL", "CT", "Iohexol", "CT_AP"),
        ("CT PORTAL VENOUS", "CT", "Iohexol", "CT_PVP"),
    ],
)
def test_phantom_descriptions(description: str, modality: str, contrast: str | None,
                              label: str) -> None:
    result = label_series([_ds(description, modality, contrast)])
    assert result.label == label
    assert result.confidence >= 0.9
    assert "SeriesDescription" in result.reason


@pytest.mark.parametrize(
    ("description", "label"),
    [
        ("t1_vibe_fs_pre", "PRE"),
        ("t1_vibe_fs_art", "AP"),
        ("LAVA late arterial", "AP"),
        ("eTHRIVE PV 70s", "PVP"),
        ("Ax LAVA 3min", "DP"),
        ("t1_vibe_hbp_20min", "HBP"),
        ("t2_haste_tra_mbh", "T2"),
        ("ep2d_diff_b50_400_800", "DWI"),
        ("ep2d_diff_ADC", "ADC"),
        ("t1_fl2d_opp-in", "IN_OPP"),
        ("t1_vibe_fs_SUB", "OTHER"),
    ],
)
def test_vendor_styles(description: str, label: str) -> None:
    contrast = None if label == "PRE" else "Gd"
    assert label_series(_ds(description, contrast=contrast)).label == label


def test_localizer_and_derived_are_other() -> None:
    localizer = label_series(_ds("T1 VIBE FS ARTERIAL", image_type=("ORIGINAL", "PRIMARY",
                                                                     "LOCALIZER")))
    assert localizer.label == "OTHER" and "LOCALIZER" in localizer.reason
    mpr = label_series(_ds("CT PORTAL VENOUS", "CT", "Iohexol", ("DERIVED", "SECONDARY",
                                                                 "MPR")))
    assert mpr.label == "OTHER"
    dixon_water = label_series(_ds("t1_vibe_dixon_art_W", contrast="Gd",
                                   image_type=("DERIVED", "PRIMARY", "DIXON", "WATER")))
    assert dixon_water.label == "AP"


def test_dynamic_without_phase_words_falls_back_on_contrast_tag() -> None:
    assert label_series(_ds("DYN eTHRIVE")).label == "PRE"
    post = label_series(_ds("DYN eTHRIVE", contrast="Gd"))
    assert post.label == "OTHER" and post.confidence < 0.5
    assert label_series(_ds("Abdomen 5.0", "CT")).label == "CT_NC"


def test_contrast_tag_conflict_lowers_confidence() -> None:
    agree = label_series(_ds("T1 VIBE FS ARTERIAL", contrast="Gd"))
    stripped = label_series(_ds("T1 VIBE FS ARTERIAL"))
    conflict = label_series(_ds("T1 VIBE FS PRE", contrast="Gd"))
    assert agree.label == stripped.label == "AP"
    assert agree.confidence > stripped.confidence > conflict.confidence
    assert "ContrastBolusAgent is set" in conflict.reason


def test_other_modalities_and_empty_input() -> None:
    assert label_series(_ds("anything", "SEG")).label == "OTHER"
    with pytest.raises(ValueError):
        label_series([])


def test_site_rules_file_is_validated(tmp_path: Path) -> None:
    text = (Path(__file__).parents[2] / "dicom_io" / "phase_rules.toml").read_text()
    bad = tmp_path / "rules.toml"
    bad.write_text(text.replace('label = "ADC"', 'label = "NOPE"'))
    with pytest.raises(ValueError, match="unknown label 'NOPE'"):
        load_rules(bad)
    custom = tmp_path / "custom.toml"
    custom.write_text(text.replace("'\\b(adc|apparent diffusion)\\b'", "'\\b(adc|mylabel)\\b'"))
    rules: Any = load_rules(custom)
    assert label_series(_ds("MYLABEL"), rules).label == "ADC"
