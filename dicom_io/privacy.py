"""Keep patient identifiers out of logs and the job table while still letting operators
correlate lines.

An unsalted hash of a short patient ID is no protection: all eight-digit IDs hash in
seconds. Identifiers are therefore hashed with HMAC-SHA256 under a secret that is created
once per installation (``data_dir/privacy.key``, 32 random bytes, mode 0600) and never
leaves the machine: the same patient gives the same tag in every log line of that
installation, and nobody without the key can test guesses against the tag.

:func:`use_installation_key` is called by the node at start-up. Until then (tools, tests) a
random key of the process is used: tags are still keyed, they only do not match across
processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import stat
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydicom.multival import MultiValue

__all__ = ["KEY_FILE", "PATIENT_KEYWORDS", "hash_identifier", "identifiers_of",
           "load_or_create_key", "redact", "use_installation_key"]

KEY_FILE = "privacy.key"
_KEY_BYTES = 32
_TAG_HEX = 12

_lock = threading.Lock()
_key: bytes = secrets.token_bytes(_KEY_BYTES)


def hash_identifier(value: object) -> str:
    """The first 12 hex digits of HMAC-SHA256(key, ``str(value)``); ``"-"`` when absent."""
    if value is None or str(value) == "":
        return "-"
    with _lock:
        key = _key
    return hmac.new(key, str(value).encode("utf-8"), hashlib.sha256).hexdigest()[:_TAG_HEX]


def use_installation_key(data_dir: Path) -> Path:
    """Hash with this installation's key from now on (created on first use); returns its path."""
    global _key
    path = Path(data_dir) / KEY_FILE
    key = load_or_create_key(path)
    with _lock:
        _key = key
    return path


def load_or_create_key(path: Path) -> bytes:
    """Read the key, or create it once: written to a private temp file, fsynced, then linked
    into place, so that two processes starting together (Orthanc's plugin and the worker)
    agree on one key and nobody ever reads a half-written one."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, secrets.token_bytes(_KEY_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            with contextlib.suppress(FileExistsError):  # another process was first: use theirs
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
        _fsync_dir(path.parent)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise PermissionError(f"{path} is readable by others (mode {mode:o}); it must be 0600 "
                              "(chmod 600 it, or delete it to make a new one)")
    key = path.read_bytes()
    if len(key) != _KEY_BYTES:
        raise ValueError(f"{path} holds {len(key)} bytes, not a {_KEY_BYTES}-byte key; "
                         "delete it to make a new one (earlier log tags will no longer match)")
    return key


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Dates in the forms DICOM and libraries print them (19610723, 1961-07-23, 23.07.1961, …):
# an error message has no use for a date, and a date next to a study is a birth date risk.
# Not inside a UID: a component like .20190723. is left alone.
_DATE = re.compile(r"(?<![\d.])(?:(?:19|20)\d\d[-./]?[01]\d[-./]?[0-3]\d"
                   r"|[0-3]?\d[-./][01]?\d[-./](?:19|20)\d\d)(?!\.?\d)")
# Attributes whose values identify a patient (PS3.15 E.1-1, the ones errors may quote).
PATIENT_KEYWORDS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientBirthName", "OtherPatientIDs",
    "OtherPatientNames", "PatientAddress", "PatientTelephoneNumbers", "PatientMotherBirthName",
    "AccessionNumber", "ReferringPhysicianName", "MedicalRecordLocator",
)


def identifiers_of(ds: Any) -> list[str]:
    """The identifying values of a pydicom dataset (names also split into their parts)."""
    found: list[str] = []
    for keyword in PATIENT_KEYWORDS:
        value = ds.get(keyword) if hasattr(ds, "get") else None
        items = value if isinstance(value, list | tuple | MultiValue) else [value]
        for item in items:
            text = str(item or "").strip()
            if not text:
                continue
            found.append(text)
            found += [part for part in re.split(r"[\^=]", text) if part.strip()]
    return found


def redact(text: str, identifiers: Iterable[object] = ()) -> str:
    """``text`` with each identifier value replaced by its keyed tag, and dates removed.

    For messages stored or logged beside a study (a job's error, a traceback): exceptions
    from DICOM libraries quote the offending value, which may be a name, an ID or a birth
    date. Values shorter than three characters are left alone (they would match everywhere).
    """
    values = sorted({str(v).strip() for v in identifiers if v is not None}, key=len,
                    reverse=True)
    for value in values:
        if len(value) >= 3:
            text = text.replace(value, f"[id {hash_identifier(value)}]")
    return _DATE.sub("[date]", text)
