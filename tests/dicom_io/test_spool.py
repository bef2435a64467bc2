"""Spool: durable layout, dedupe by bytes, quarantine, and refusal of unsafe UIDs."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from dicom_io import spool as spool_module
from dicom_io.spool import (
    DuplicateInstanceError,
    InvalidInstanceError,
    Spool,
    encode_part10,
    is_valid_uid,
)


def _one(make_series: Callable[..., list[Dataset]]) -> Dataset:
    return make_series(2)[0]


def test_store_dataset_lands_in_uid_layout(tmp_path: Path, make_series: Any) -> None:
    ds = _one(make_series)
    stored = Spool(tmp_path).store(ds)
    expected = tmp_path / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
    assert stored.path == expected and stored.new
    assert stored.sop_class_uid == ds.SOPClassUID
    assert pydicom.dcmread(expected).SOPInstanceUID == ds.SOPInstanceUID
    assert not [p for p in expected.parent.iterdir() if p.name.endswith(".tmp")]


def test_same_bytes_twice_is_not_new_and_not_rewritten(tmp_path: Path, make_series: Any) -> None:
    data = encode_part10(_one(make_series))
    spool = Spool(tmp_path)
    first = spool.store(data)
    mtime = first.path.stat().st_mtime_ns
    second = spool.store(data)
    assert first.new and not second.new
    assert second.path.stat().st_mtime_ns == mtime


def test_different_bytes_same_sop_uid_first_copy_wins(tmp_path: Path, make_series: Any) -> None:
    ds = _one(make_series)
    spool = Spool(tmp_path)
    first = spool.store(ds)
    ds.SeriesDescription = "changed"
    with pytest.raises(DuplicateInstanceError) as caught:
        spool.store(ds)
    assert caught.value.same_place and caught.value.existing.path == first.path
    assert pydicom.dcmread(first.path).SeriesDescription != "changed"


def test_same_sop_uid_in_another_study_is_a_conflict_even_after_restart(
    tmp_path: Path, make_series: Any
) -> None:
    ds = _one(make_series)
    first = Spool(tmp_path).store(ds)
    other_study = _one(make_series)
    other_study.SOPInstanceUID = ds.SOPInstanceUID
    with pytest.raises(DuplicateInstanceError) as caught:
        Spool(tmp_path).store(other_study)  # a new Spool: the index is rebuilt from disk
    assert not caught.value.same_place and caught.value.existing.path == first.path
    assert not (tmp_path / other_study.StudyInstanceUID).exists()


def test_quarantine_is_bounded_oldest_dropped(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    paths = [spool.quarantine(bytes([n]) * 400, f"reason {n}", max_bytes=1000)
             for n in range(5)]
    folder = tmp_path / "_quarantine"
    kept = sorted(p.name for p in folder.glob("*.dcm"))
    assert kept == sorted(p.name for p in paths[-2:] if p is not None)
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 1000
    assert spool.quarantine(b"x" * 5000, "too big", max_bytes=1000) is None
    assert any("not kept" in p.read_text() for p in folder.glob("*.reason.txt"))


def test_store_does_not_modify_callers_dataset(tmp_path: Path, make_series: Any) -> None:
    ds = _one(make_series)
    del ds.file_meta
    Spool(tmp_path).store(ds)
    assert not hasattr(ds, "file_meta")


def test_meta_and_dataset_without_preamble_become_part10(
    tmp_path: Path, make_series: Any
) -> None:
    ds = _one(make_series)
    no_preamble = encode_part10(ds)[128 + 4 :]  # file meta group + data set, no "DICM"
    stored = Spool(tmp_path).store(no_preamble)
    assert stored.path.read_bytes()[128:132] == b"DICM"
    assert pydicom.dcmread(stored.path).SOPInstanceUID == ds.SOPInstanceUID


def test_write_is_fsynced_before_rename(
    tmp_path: Path, make_series: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(spool_module.os, "fsync",
                        lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(spool_module.os, "replace",
                        lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    Spool(tmp_path).store(_one(make_series))
    first_replace = events.index("replace")
    assert "fsync" in events[:first_replace], "file must be synced before the rename"
    assert "fsync" in events[first_replace:], "directory must be synced after the rename"


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("bad", ["../../etc", "1.2/3", "", "1..2", ".", "1.2.", "a.b", "1" * 65])
def test_unsafe_uids_are_rejected(tmp_path: Path, make_series: Any, bad: str) -> None:
    ds = _one(make_series)
    ds.StudyInstanceUID = bad
    with pytest.raises(InvalidInstanceError):
        Spool(tmp_path).store(ds)
    with pytest.raises(InvalidInstanceError):
        Spool(tmp_path).study_dir(bad)
    assert list(tmp_path.iterdir()) == []


def test_missing_study_uid_is_rejected(tmp_path: Path, make_series: Any) -> None:
    ds = _one(make_series)
    del ds.StudyInstanceUID
    with pytest.raises(InvalidInstanceError, match="StudyInstanceUID is missing"):
        Spool(tmp_path).store(encode_part10(ds))


def test_garbage_bytes_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(InvalidInstanceError):
        Spool(tmp_path).store(b"\x00" * 10)


def test_quarantine_keeps_bytes_and_reason(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    path = spool.quarantine(b"not dicom", "StudyInstanceUID is missing")
    assert path.parent == tmp_path / "_quarantine"
    assert path.read_bytes() == b"not dicom"
    assert "StudyInstanceUID" in path.with_suffix(".reason.txt").read_text()


def test_iter_studies_skips_quarantine_and_debris(tmp_path: Path, make_series: Any) -> None:
    spool = Spool(tmp_path)
    a = spool.store(_one(make_series))
    b = spool.store(_one(make_series))
    spool.quarantine(b"x", "test")
    (tmp_path / "notes").mkdir()
    assert list(spool.iter_studies()) == sorted([a.study_uid, b.study_uid])
    assert spool.study_dir(a.study_uid) == tmp_path / a.study_uid


def test_uid_pattern() -> None:
    assert is_valid_uid("1.2.840.10008.5.1.4.1.1.4")
    assert is_valid_uid("1.2.03")  # leading zero: non-conformant but harmless on disk
    assert not is_valid_uid("1.2.3 ")
    assert not is_valid_uid(None)
