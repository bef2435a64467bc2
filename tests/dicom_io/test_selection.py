"""dicom_io.selection: labels without descriptions, the one selection path, its fallbacks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest

from dicom_io.phases import load_site_rules
from dicom_io.selection import NoUsableSeries, label_all, select_volume
from dicom_io.series import load_study
from dicom_io.synthetic import PhantomSpec, make_phantom, write_phantom_study

BLANKED = ("SeriesDescription", "ProtocolName", "SequenceName")


def _write(tmp: Path, modality: str, seed: int) -> Path:
    write_phantom_study(make_phantom(seed, PhantomSpec(modality=modality)), tmp)
    return tmp / "dicom"


def _blank(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for path in dst.rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        for keyword in BLANKED:
            if keyword in ds:
                ds.data_element(keyword).value = ""
        ds.save_as(path)
    return dst


def _labels(folder: Path) -> dict[str, str]:
    return {item.series.series_uid: item.label.label for item in label_all(load_study(folder))}


@pytest.fixture(scope="module")
def mr_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("mr"), "MR", 11)


@pytest.mark.parametrize("modality", ["MR", "CT"])
def test_blank_descriptions_get_the_same_labels(modality: str, tmp_path: Path) -> None:
    original = _write(tmp_path / "orig", modality, 12)
    blanked = _blank(original, tmp_path / "blank")
    before, after = _labels(original), _labels(blanked)
    assert before == after
    wanted = {"PRE", "AP", "PVP", "DP"} if modality == "MR" else {"CT_AP", "CT_PVP"}
    assert wanted <= set(after.values())
    reasons = [i.label.reason for i in label_all(load_study(blanked))]
    assert all("SeriesDescription matches" not in r for r in reasons), reasons


def test_select_volume_serves_the_first_acceptable_phase(mr_study: Path) -> None:
    labelled = label_all(load_study(mr_study))
    without_ap = [i for i in labelled if i.label.label != "AP"]
    chosen = select_volume(without_ap, ("AP", "PVP", "DP"))
    assert chosen.phase == "PVP" and chosen.item.label.label == "PVP"
    assert len(chosen.datasets) == chosen.volume.shape[0]
    with pytest.raises(NoUsableSeries, match="no usable series for HBP"):
        select_volume(labelled, "HBP")


def test_a_slice_without_position_is_placed_or_excluded_with_the_reason(mr_study: Path,
                                                               tmp_path: Path) -> None:
    folder = tmp_path / "study"
    shutil.copytree(mr_study, folder)
    victim = sorted((folder / "AP").glob("*.dcm"))[5]
    ds = pydicom.dcmread(victim)
    del ds.ImagePositionPatient
    ds.save_as(victim)
    labelled = label_all(load_study(folder))
    full = len(list((folder / "AP").glob("*.dcm")))
    chosen = select_volume(labelled, "AP")
    assert chosen.volume.shape[0] == full
    assert "placed by its InstanceNumber" in chosen.reason
    # a slice that cannot be placed (no number either) at the series' end is left out
    last = sorted((folder / "AP").glob("*.dcm"), key=lambda p: int(
        pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber))[-1]
    ds = pydicom.dcmread(last)
    del ds.ImagePositionPatient, ds.InstanceNumber
    ds.save_as(last)
    chosen = select_volume(label_all(load_study(folder)), "AP")
    assert chosen.volume.shape[0] == full - 1
    assert "excluded: instance" in chosen.reason and "ImagePositionPatient" in chosen.reason


def test_an_unstackable_series_falls_back_to_the_next_candidate(mr_study: Path,
                                                                 tmp_path: Path) -> None:
    folder = tmp_path / "study"
    shutil.copytree(mr_study, folder)
    # a repeat of the arterial phase (later series number: preferred) whose slices collide
    repeat = folder / "AP_REPEAT"
    shutil.copytree(folder / "AP", repeat)
    new_series = pydicom.uid.generate_uid()
    for path in repeat.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID, ds.SeriesNumber = new_series, 99
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.ImagePositionPatient = [0.0, 0.0, 0.0]  # every slice at one position
        ds.AcquisitionTime = ds.SeriesTime = "235959"  # latest arterial: ranked first
        ds.save_as(path)
    labelled = label_all(load_study(folder))
    assert sum(i.label.label == "AP" for i in labelled) == 2
    chosen = select_volume(labelled, "AP")
    assert chosen.series_uid != new_series
    assert chosen.volume.shape[0] > 10


def test_site_rules_reach_selection(mr_study: Path, tmp_path: Path) -> None:
    folder = tmp_path / "study"
    shutil.copytree(mr_study, folder)
    for path in (folder / "DP").glob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.SeriesDescription = "ZZ-SPAET-X"
        del ds.ContrastBolusStartTime  # nothing but the site rule can name it
        ds.save_as(path)
    labelled = label_all(load_study(folder))
    with pytest.raises(NoUsableSeries):
        select_volume(labelled, "DP")
    rules_file = tmp_path / "site.toml"
    rules_file.write_text('[[mr]]\nlabel = "DP"\npattern = "spaet"\n')
    rules = load_site_rules([rules_file])
    chosen = select_volume(label_all(load_study(folder), rules), "DP", rules)
    assert "spaet" in chosen.reason


def test_sop_class_only_in_file_meta_is_read(mr_study: Path, tmp_path: Path) -> None:
    folder = tmp_path / "study"
    shutil.copytree(mr_study / "PVP", folder / "PVP")
    for path in (folder / "PVP").glob("*.dcm"):
        ds = pydicom.dcmread(path)
        del ds.SOPClassUID
        ds.save_as(path)
    series = load_study(folder)
    assert all("SOPClassUID" in ds for ds in series[0].datasets)
