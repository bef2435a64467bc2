"""Issue 4: every vendor style, packaging and dynamic variant the phantom writes is labelled
right; ignored series (localizer, subtraction, MPR) are never chosen; competing arterial
series resolve by the stated rule; multi-phase series split into one volume per phase.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicom_io.phases import label_series, load_site_rules
from dicom_io.selection import choose, label_all
from dicom_io.series import SeriesInstances, load_study, series_to_volume, split_series
from dicom_io.synthetic import PhantomSpec, make_phantom, write_phantom_study
from dicom_io.synthetic.sequences import CT_SEQUENCES, MR_SEQUENCES

TINY = PhantomSpec(rows=64, columns=64, slices=12, pixel_spacing_mm=6.0, slice_spacing_mm=12.0)
EXPECTED = {"PRE": "PRE", "AP_EARLY": "AP", "AP": "AP", "PVP": "PVP", "DP": "DP",
            "HBP": "HBP", "T2": "T2", "IN": "IN_OPP", "OPP": "IN_OPP", "DWI_B50": "DWI",
            "DWI_B400": "DWI", "DWI_B800": "DWI", "ADC": "ADC", "CT_NC": "CT_NC",
            "CT_AP": "CT_AP", "CT_PVP": "CT_PVP", "CT_DP": "CT_DP", "LOCALIZER": "OTHER",
            "SUB_AP": "OTHER", "MPR_PVP": "OTHER"}
DYNAMIC_ORDER = ("PRE", "AP", "AP", "PVP", "DP")  # PRE, early AP, late AP, PVP, DP
IGNORED = {"LOCALIZER", "SUB_AP", "MPR_PVP"}
VARIANTS = [(m, v, p) for m in ("MR", "CT") for v in ("siemens", "ge", "philips", "uih")
            for p in ("classic", "dynamic", "enhanced") if not (m == "CT" and p == "dynamic")]


def _write(tmp_path: Path, modality: str, vendor: str, packaging: str) -> Path:
    spec = replace(TINY, modality=modality, vendor=vendor, packaging=packaging,
                   sequences=MR_SEQUENCES if modality == "MR" else CT_SEQUENCES,
                   ignored_series=True, coregistered=packaging == "dynamic", motion_mm=3.0)
    write_phantom_study(make_phantom(4, spec), tmp_path)
    return tmp_path / "dicom"


def _folder(series: SeriesInstances) -> str:
    return series.paths[0].parent.name


@pytest.mark.parametrize(("modality", "vendor", "packaging"), VARIANTS)
def test_every_variant_is_labelled_and_chosen_right(modality: str, vendor: str,
                                                    packaging: str, tmp_path: Path) -> None:
    labelled = label_all(load_study(_write(tmp_path, modality, vendor, packaging)))
    for item in labelled:
        folder = _folder(item.series)
        want = (DYNAMIC_ORDER[(item.series.temporal_position or 1) - 1] if folder == "DYNAMIC"
                else EXPECTED[folder])
        assert item.label.label == want, (folder, item.series.description, item.label.reason)
    for phase in ("PRE", "AP", "PVP", "DP"):
        chosen = choose(labelled, phase).chosen
        assert chosen is not None and _folder(chosen.series) not in IGNORED
    arterial = choose(labelled, "AP")
    assert arterial.chosen is not None
    if modality == "MR":  # late arterial beats early arterial, and the reason says so
        late = (3 if packaging == "dynamic" else None, "DYNAMIC" if packaging == "dynamic"
                else "AP")
        assert (arterial.chosen.series.temporal_position, _folder(arterial.chosen.series)) == late
        assert "late over early arterial" in arterial.reason


def test_dynamic_without_timing_is_labelled_by_measured_enhancement(tmp_path: Path) -> None:
    root = _write(tmp_path, "MR", "ge", "dynamic")
    dynamic = next(s for s in load_study(root) if _folder(s) == "DYNAMIC")
    for ds in dynamic.datasets:  # an anonymiser stripped every contrast timing tag
        for keyword in ("ContrastBolusStartTime", "AcquisitionTime"):
            if keyword in ds:
                delattr(ds, keyword)
    labels = [item.label for item in label_all([dynamic])]
    assert [lab.label for lab in labels] == list(DYNAMIC_ORDER)
    assert all("arterial index" in lab.reason for lab in labels)


def test_multi_frame_with_two_phases_splits(tmp_path: Path) -> None:
    root = _write(tmp_path, "MR", "siemens", "enhanced")
    ap, pvp = (pydicom.dcmread(next((root / name).glob("*.dcm"))) for name in ("AP", "PVP"))
    both = copy.deepcopy(ap)
    groups = [*copy.deepcopy(ap.PerFrameFunctionalGroupsSequence),
              *copy.deepcopy(pvp.PerFrameFunctionalGroupsSequence)]
    for k, group in enumerate(groups):
        group.FrameContentSequence[0].TemporalPositionIndex = 1 + k // len(ap.pixel_array)
    both.PerFrameFunctionalGroupsSequence = groups
    both.NumberOfFrames = len(groups)
    both.PixelData = ap.PixelData + pvp.PixelData
    series = SeriesInstances(str(both.SeriesInstanceUID), "MR", "dyn", 5, (both,),
                             (root / "x.dcm",))
    parts = split_series(series)
    assert [p.temporal_position for p in parts] == [1, 2]
    for part, source in zip(parts, (ap, pvp), strict=True):
        assert np.array_equal(series_to_volume(part).array, series_to_volume([source]).array)


def test_site_rules_extend_the_shipped_ones(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text("[[mr]]\nlabel = \"PVP\"\npattern = '\\bmyportal\\b'\n"
                    "[timing]\nAP = [5.0, 60.0]\n")
    rules = load_site_rules([site])
    ds = pydicom.Dataset()
    ds.Modality, ds.SeriesDescription, ds.ImageType = "MR", "T1 MYPORTAL", ["ORIGINAL"]
    assert label_series(ds, rules).label == "PVP"
    ds.SeriesDescription = "ep2d_diff_ADC"  # shipped rules still apply
    assert label_series(ds, rules).label == "ADC"
    assert rules.timing["AP"] == (5.0, 60.0) and rules.timing["PVP"] == (50.0, 120.0)
