"""UIDs that name things on disk, and keyed hashing of patient identifiers (issue 15, part 0)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pydicom
import pytest

from dicom_io import privacy
from dicom_io.privacy import (
    hash_identifier,
    identifiers_of,
    load_or_create_key,
    redact,
    use_installation_key,
)
from dicom_io.uids import InvalidUidError, checked_uid, is_valid_uid, path_under

GOOD = "1.2.826.0.1.3680043.8.498.12345"
HOSTILE = ["../../canary", "/tmp/canary", "1.2/../3", "1..2", ".1.2", "1.2.", "", " 1.2",
           "1.2\0", "1" * 65, "1.2.3a", "１.２"]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_uids_are_refused_without_quoting_them(value: str) -> None:
    assert not is_valid_uid(value)
    with pytest.raises(InvalidUidError) as caught:
        checked_uid(value, "StudyInstanceUID")
    assert "StudyInstanceUID" in str(caught.value)
    if len(value) > 3:
        assert value not in str(caught.value)


def test_valid_uids_pass_and_stay_under_the_root(tmp_path: Path) -> None:
    assert checked_uid(GOOD) == GOOD
    assert is_valid_uid("1.2.03")  # leading zero: tolerated, harmless on disk
    assert path_under(tmp_path, GOOD, "1.2.3", suffix=".dcm") == tmp_path / GOOD / "1.2.3.dcm"
    for value in HOSTILE:
        with pytest.raises(InvalidUidError):
            path_under(tmp_path, value)


def test_keyed_hash_is_not_the_plain_sha256_and_depends_on_the_key(tmp_path: Path) -> None:
    plain = hashlib.sha256(b"12345678").hexdigest()[:12]
    before = hash_identifier("12345678")
    assert before != plain
    key_file = use_installation_key(tmp_path / "a")
    first = hash_identifier("12345678")
    assert first not in (plain, before)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(key_file.read_bytes()) == 32
    use_installation_key(tmp_path / "b")  # another installation: another tag
    assert hash_identifier("12345678") != first
    use_installation_key(tmp_path / "a")  # the same installation after a restart: the same
    assert hash_identifier("12345678") == first
    assert hash_identifier(None) == hash_identifier("") == "-"


def test_the_key_is_created_once_and_a_readable_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / privacy.KEY_FILE
    key = load_or_create_key(path)
    assert load_or_create_key(path) == key
    assert [p.name for p in tmp_path.iterdir()] == [privacy.KEY_FILE]  # no temp left
    os.chmod(path, 0o644)
    with pytest.raises(PermissionError, match="0600"):
        load_or_create_key(path)


def test_redact_replaces_identifiers_and_dates_but_not_uids() -> None:
    ds = pydicom.Dataset()
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "PAT-0001"
    ds.PatientBirthDate = "1961-07-23"
    values = identifiers_of(ds)
    message = ("highdicom refused DA '1961-07-23' of Doe^Jane (PAT-0001), born 19610723, "
               f"study {GOOD}.20190723.1")
    text = redact(message, values)
    for secret in ("1961-07-23", "19610723", "Doe", "Jane", "PAT-0001"):
        assert secret not in text
    assert f"{GOOD}.20190723.1" in text
    assert hash_identifier("PAT-0001") in text
