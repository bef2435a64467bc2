"""Durable on-disk store for received instances.

A C-STORE success tells the sender it may delete its copy, so the bytes must be on stable
storage *before* we answer: each file is written to a temporary name in its final
directory, flushed, ``fsync``-ed, atomically renamed, and the directory is ``fsync``-ed so
that the rename itself survives a power cut. Layout: ``root/<StudyUID>/<SeriesUID>/<SOPUID>.dcm``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

__all__ = [
    "QUARANTINE_DIR",
    "InstanceIdentity",
    "InvalidInstanceError",
    "Spool",
    "StoredInstance",
    "is_valid_uid",
    "require_uid",
]

QUARANTINE_DIR = "_quarantine"

# Digits and single dots only, at most 64 characters (PS3.5 9.1). Leading zeros inside a
# component are tolerated: some modalities emit them and refusing the study helps nobody.
# What matters for the file system is that no "..", "/" or empty component can get through.
_UID_RE = re.compile(r"[0-9]+(?:\.[0-9]+)*")
_PREAMBLE_END = 128


class InvalidInstanceError(ValueError):
    """The data cannot be filed: an identifying UID is missing or malformed."""


@dataclass(frozen=True)
class InstanceIdentity:
    """The three UIDs that place an instance in the spool, plus its SOP class."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str


@dataclass(frozen=True)
class StoredInstance:
    """Where an instance landed; ``new`` is False when identical bytes were already there."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    path: Path
    new: bool


def is_valid_uid(value: object) -> bool:
    """True when ``value`` is a UID safe to use as a path component."""
    return isinstance(value, str) and len(value) <= 64 and _UID_RE.fullmatch(value) is not None


def require_uid(ds: Dataset, keyword: str) -> str:
    """The dataset's UID ``keyword``, or :class:`InvalidInstanceError` saying what is wrong."""
    value = ds.get(keyword)
    if value is None or str(value).strip("\0 ") == "":
        raise InvalidInstanceError(f"{keyword} is missing")
    text = str(value).strip("\0 ")
    if not is_valid_uid(text):
        raise InvalidInstanceError(f"{keyword} is not a valid UID")
    return text


def identify(ds: Dataset) -> InstanceIdentity:
    """Read and validate the identifying UIDs; the SOP class may come from file meta."""
    meta = getattr(ds, "file_meta", None)
    sop_class = ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta else None)
    return InstanceIdentity(
        study_uid=require_uid(ds, "StudyInstanceUID"),
        series_uid=require_uid(ds, "SeriesInstanceUID"),
        sop_uid=require_uid(ds, "SOPInstanceUID"),
        sop_class_uid=str(sop_class or "").strip("\0 "),
    )


def encode_part10(ds: Dataset) -> bytes:
    """Encode ``ds`` as a DICOM Part 10 file, adding minimal file meta when absent.

    The caller's dataset is not modified: a shallow copy receives the file meta.
    """
    out = ds.copy()
    meta = FileMetaDataset(ds.file_meta) if hasattr(ds, "file_meta") else FileMetaDataset()
    meta.setdefault("TransferSyntaxUID", ExplicitVRLittleEndian)
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.setdefault("ImplementationClassUID", PYDICOM_IMPLEMENTATION_UID)
    out.file_meta = meta
    buffer = BytesIO()
    pydicom.dcmwrite(buffer, out, enforce_file_format=True)
    return buffer.getvalue()


def _parse_bytes(data: bytes) -> tuple[InstanceIdentity, bytes]:
    """Identify raw input; non-Part-10 bytes (no preamble) are re-encoded as Part 10."""
    is_part10 = data[_PREAMBLE_END : _PREAMBLE_END + 4] == b"DICM"
    try:
        ds = pydicom.dcmread(BytesIO(data), stop_before_pixels=is_part10, force=True)
    except (InvalidDicomError, ValueError, EOFError, KeyError, TypeError) as exc:
        raise InvalidInstanceError(f"cannot decode data set: {type(exc).__name__}") from exc
    identity = identify(ds)
    if is_part10:
        return identity, data
    if "SOPClassUID" not in ds:
        raise InvalidInstanceError("SOPClassUID is missing")
    return identity, encode_part10(ds)


def _fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable (POSIX needs the directory synced)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs_durably(path: Path) -> None:
    """Create ``path`` and its parents, syncing each parent so new directories persist."""
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another thread won the race
            directory.mkdir()
        _fsync_dir(directory.parent)


def write_durably(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically and durably (temp file, fsync, rename)."""
    _make_dirs_durably(target.parent)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(target.parent)


def _same_content(path: Path, data: bytes) -> bool:
    """Cheap size check first, then a byte comparison."""
    try:
        if path.stat().st_size != len(data):
            return False
        return path.read_bytes() == data
    except FileNotFoundError:
        return False


class Spool:
    """The receiving node's instance store, one file per SOP instance."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def study_dir(self, study_uid: str) -> Path:
        """Directory of one study; the UID is validated so it cannot escape the root."""
        return self.root / _checked(study_uid, "study UID")

    def instance_path(self, identity: InstanceIdentity) -> Path:
        """Final path of an instance (validated UIDs only)."""
        series = _checked(identity.series_uid, "series UID")
        sop = _checked(identity.sop_uid, "SOP instance UID")
        return self.study_dir(identity.study_uid) / series / f"{sop}.dcm"

    def iter_studies(self) -> Iterator[str]:
        """Study Instance UIDs present in the spool, sorted; quarantine and debris skipped."""
        for entry in sorted(self.root.iterdir()):
            if entry.is_dir() and is_valid_uid(entry.name):
                yield entry.name

    def store(self, item: Dataset | bytes) -> StoredInstance:
        """File a dataset (encoded as Part 10) or already-encoded bytes, durably.

        Raises :class:`InvalidInstanceError` when the UIDs needed to file it are missing or
        invalid; the caller decides whether to quarantine.
        """
        if isinstance(item, Dataset):
            identity = identify(item)
            if "SOPClassUID" not in item:
                raise InvalidInstanceError("SOPClassUID is missing")
            return self.store_encoded(encode_part10(item), identity)
        identity, data = _parse_bytes(bytes(item))
        return self.store_encoded(data, identity)

    def store_encoded(self, data: bytes, identity: InstanceIdentity) -> StoredInstance:
        """File Part 10 bytes whose identity the caller already validated (the SCP path)."""
        target = self.instance_path(identity)
        new = not _same_content(target, data)
        if new:
            write_durably(target, data)
        return StoredInstance(
            study_uid=identity.study_uid,
            series_uid=identity.series_uid,
            sop_uid=identity.sop_uid,
            sop_class_uid=identity.sop_class_uid,
            path=target,
            new=new,
        )

    def quarantine(self, data: bytes, reason: str) -> Path:
        """Keep bytes we refused, with the reason beside them, for a human to inspect."""
        digest = hashlib.sha256(data).hexdigest()[:16]
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        target = self.root / QUARANTINE_DIR / f"{stamp}-{digest}.dcm"
        write_durably(target, data)
        write_durably(target.with_suffix(".reason.txt"), (reason + "\n").encode())
        return target


def _checked(uid: str, what: str) -> str:
    """``uid`` if it is safe as a path component, else :class:`InvalidInstanceError`."""
    if not is_valid_uid(uid):
        raise InvalidInstanceError(f"invalid {what}: {uid!r:.80}")
    return uid
