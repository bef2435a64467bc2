"""Durable on-disk store for received instances.

A C-STORE success tells the sender it may delete its copy, so the bytes must be on stable
storage *before* we answer: each file is written to a temporary name in its final
directory, flushed, ``fsync``-ed, atomically renamed, and the directory is ``fsync``-ed so
that the rename itself survives a power cut. Layout: ``root/<StudyUID>/<SeriesUID>/<SOPUID>.dcm``.

Group commit (the storage SCP's path): ``store_encoded(..., durable=False)`` writes and
renames without flushing, and :meth:`Spool.commit` then returns once one flush of the whole
file system (``syncfs``) has covered that write. Every writer waiting at the same moment
shares that one flush, and a single flush also replaces the file's and the directory's two
``fsync`` calls. A write torn by a power cut before its commit was never acknowledged: the
sender sends it again, and the torn copy is replaced instead of winning as the "first copy".
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from dicom_io.uids import InvalidUidError, checked_uid, is_valid_uid

__all__ = [
    "DEFAULT_QUARANTINE_MAX_BYTES",
    "QUARANTINE_DIR",
    "DuplicateInstanceError",
    "GroupCommit",
    "InstanceIdentity",
    "InvalidInstanceError",
    "Spool",
    "StoredInstance",
    "is_valid_uid",
    "require_uid",
    "write_durably",
    "write_pending",
]

QUARANTINE_DIR = "_quarantine"
DEFAULT_QUARANTINE_MAX_BYTES = 1 << 30  # 1 GiB: room for a few refused studies
_LOCK_STRIPES = 64
_RESCAN_EVERY = 200_000  # SOP UID index rebuilt from disk after this many new instances
# UIDs are checked by dicom_io.uids (PS3.5 9.1 grammar) before they name a folder or file.
_PREAMBLE_END = 128

log = logging.getLogger(__name__)


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
    """Where an instance landed; ``new`` is False when the spool already held it.

    ``source_image`` says whether the caller judged it an image the pipeline may read (a
    CT/MR image, not a SEG/SR/KO or our own result); it decides whether a job is touched.
    """

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    path: Path
    new: bool
    source_image: bool = True


class DuplicateInstanceError(Exception):
    """The SOP Instance UID is already stored with different content; the first copy wins.

    ``same_place`` is True when the stored copy has the same study and series (by DICOM the
    same instance, re-encoded or coerced on the way); False when it sits in another series
    or study, which is a UID collision or hostile input. ``existing`` describes the copy kept.
    """

    def __init__(self, existing: StoredInstance, same_place: bool) -> None:
        where = "same series" if same_place else "another series or study"
        super().__init__(f"SOP Instance {existing.sop_uid} already stored ({where})")
        self.existing = existing
        self.same_place = same_place


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


def write_pending(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically (temp file, rename) without flushing: durable
    at the next :meth:`GroupCommit.sync` (new directories included, as the flush covers
    all of the file system's metadata)."""
    if not target.parent.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def _torn(path: Path) -> bool:
    """A stored copy that cannot be a whole Part 10 file: empty, too short for the preamble,
    or without the ``DICM`` prefix (what a write cut off by a power cut leaves behind)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(_PREAMBLE_END + 4)
    except FileNotFoundError:
        return False
    return len(head) < _PREAMBLE_END + 4 or head[_PREAMBLE_END:] != b"DICM"


class GroupCommit:
    """One flush makes every write registered before it durable, for every waiting writer.

    A writer calls :meth:`sync` after its writes; the first one in becomes the leader and
    flushes (``syncfs`` of each file system registered, one system call each), the others
    that arrive meanwhile wait and are covered by the next flush, whose leader takes them
    all at once. Where ``syncfs`` is missing, each flush is a global ``sync``.
    """

    def __init__(self, *paths: Path) -> None:
        self._cond = threading.Condition()
        self._registered = 0
        self._durable = 0
        self._leading = False
        self._failures: list[tuple[int, int, OSError]] = []
        self._folders: dict[int, Path] = {}
        for path in paths:
            self.add(path)
        self.flushes = 0

    def add(self, path: Path) -> None:
        """Also flush the file system that holds ``path`` (e.g. the job database's)."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        with self._cond:
            self._folders.setdefault(os.stat(folder).st_dev, folder)

    def sync(self) -> None:
        """Return once everything written before this call is durable (raises the OSError of
        the flush that covered it, if that flush failed)."""
        with self._cond:
            self._registered += 1
            ticket = self._registered
            while self._durable < ticket:
                if self._leading:
                    self._cond.wait()
                    continue
                self._leading, start, upto = True, self._durable, self._registered
                error: OSError | None = None
                self._cond.release()
                try:
                    self._flush()
                except OSError as exc:
                    error = exc
                finally:
                    self._cond.acquire()
                    self._leading, self._durable = False, upto
                    self.flushes += 1
                    if error is not None:
                        self._failures = [*self._failures[-15:], (start, upto, error)]
                    self._cond.notify_all()
            failed = next((e for lo, hi, e in self._failures if lo < ticket <= hi), None)
        if failed is not None:
            raise failed

    def _flush(self) -> None:
        for folder in list(self._folders.values()):
            fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            try:
                _syncfs(fd)
            finally:
                os.close(fd)


def _syncfs(fd: int) -> None:
    """Flush the file system holding ``fd`` (Linux ``syncfs``; elsewhere a global sync)."""
    syncfs = getattr(_LIBC, "syncfs", None) if _LIBC is not None else None
    if syncfs is None:
        os.sync()
        return
    if syncfs(fd) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:  # no C library to load: os.sync() does the flushing
    _LIBC = None


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
        self.group_commit = GroupCommit(self.root)
        self._stripes = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        self._index_lock = threading.Lock()
        self._index: dict[str, Path] | None = None
        self._added_since_scan = 0
        self._quarantine_lock = threading.Lock()

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
        invalid, :class:`DuplicateInstanceError` when the SOP Instance UID is already stored
        with other bytes; the caller decides whether to quarantine.
        """
        if isinstance(item, Dataset):
            identity = identify(item)
            if "SOPClassUID" not in item:
                raise InvalidInstanceError("SOPClassUID is missing")
            return self.store_encoded(encode_part10(item), identity)
        identity, data = _parse_bytes(bytes(item))
        return self.store_encoded(data, identity)

    def store_encoded(self, data: bytes, identity: InstanceIdentity, *,
                      source_image: bool = True, durable: bool = True) -> StoredInstance:
        """File Part 10 bytes whose identity the caller already validated (the SCP path).

        The first durable copy of a SOP Instance UID wins: identical bytes again give
        ``new=False``; different bytes raise :class:`DuplicateInstanceError` and leave the
        stored copy untouched (a job may be reading it), unless that copy is torn (a write
        a power cut interrupted before its commit), which the newcomer replaces.
        ``durable=False``: written and renamed but not flushed; call :meth:`commit` before
        telling anyone it is stored.
        """
        target = self.instance_path(identity)
        write = write_durably if durable else write_pending

        def result(path: Path, new: bool) -> StoredInstance:
            return StoredInstance(identity.study_uid, identity.series_uid, identity.sop_uid,
                                  identity.sop_class_uid, path, new, source_image)

        stripe = self._stripes[zlib.crc32(identity.sop_uid.encode()) % _LOCK_STRIPES]
        with stripe:
            existing = self._existing(identity.sop_uid, target)
            if existing is None or (existing == target and _torn(target)):
                if existing is not None:
                    log.warning("sop=%s: the stored copy is torn (a write cut off before its "
                                "commit); replaced by the copy sent again", identity.sop_uid)
                write(target, data)
                self._remember(identity.sop_uid, target)
                return result(target, True)
        if existing == target and _same_content(target, data):
            return result(target, False)
        if existing == target:
            raise DuplicateInstanceError(result(target, False), same_place=True)
        study, series = existing.parent.parent.name, existing.parent.name
        raise DuplicateInstanceError(
            StoredInstance(study, series, identity.sop_uid, identity.sop_class_uid, existing,
                           False, source_image), same_place=False)

    def _existing(self, sop_uid: str, target: Path) -> Path | None:
        """Where this SOP Instance UID is stored now, if anywhere (the target first)."""
        if target.is_file():
            return target
        with self._index_lock:
            if self._index is None:
                self._index = self._scan()
            known = self._index.get(sop_uid)
        return known if known is not None and known.is_file() else None

    def _remember(self, sop_uid: str, path: Path) -> None:
        with self._index_lock:
            self._added_since_scan += 1
            if self._index is None or self._added_since_scan > _RESCAN_EVERY:
                # studies removed after processing leave stale entries: start again from disk
                self._index, self._added_since_scan = self._scan(), 0
            self._index[sop_uid] = path

    def _scan(self) -> dict[str, Path]:
        """SOP Instance UID → file, for everything already in the spool (once per process)."""
        index: dict[str, Path] = {}
        for study in self.iter_studies():
            for series in (self.root / study).iterdir():
                if series.is_dir() and is_valid_uid(series.name):
                    for item in series.glob("*.dcm"):
                        index.setdefault(item.stem, item)
        return index

    def commit(self) -> None:
        """Return once every write made so far (``durable=False`` ones included) is on stable
        storage; concurrent callers share one flush (:class:`GroupCommit`)."""
        self.group_commit.sync()

    def quarantine(self, data: bytes, reason: str, *,
                   max_bytes: int = DEFAULT_QUARANTINE_MAX_BYTES) -> Path | None:
        """Keep bytes we refused, with the reason beside them, for a human to inspect.

        The quarantine holds at most ``max_bytes``: the oldest entries are dropped first, so
        a hostile or broken sender cannot fill the disk the spool needs. Returns None when
        the entry alone is larger than the limit (only its reason is kept, truncated data is
        useless).
        """
        digest = hashlib.sha256(data).hexdigest()[:16]
        now_ns = time.time_ns()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now_ns // 10**9))
        folder = self.root / QUARANTINE_DIR
        target = folder / f"{stamp}-{now_ns % 10**9:09d}-{digest}.dcm"
        note = (reason + "\n").encode()
        with self._quarantine_lock:
            kept = len(data) + len(note) <= max_bytes
            if kept:
                write_durably(target, data)
            write_durably(target.with_suffix(".reason.txt"),
                          note if kept else (reason + f" (not kept: {len(data)} bytes is over "
                                                       f"the {max_bytes}-byte quarantine)\n"
                                             ).encode())
            _prune(folder, max_bytes, keep=target)
        return target if kept else None

def _prune(folder: Path, max_bytes: int, keep: Path) -> None:
    """Drop the oldest quarantine entries (data and reason) until the folder fits."""
    entries: dict[str, list[os.DirEntry[str]]] = {}
    with os.scandir(folder) as scan:
        for item in scan:
            if item.is_file() and not item.name.startswith("."):
                entries.setdefault(item.name.split(".", 1)[0], []).append(item)
    sizes = {key: sum(e.stat().st_size for e in files) for key, files in entries.items()}
    total = sum(sizes.values())
    newest = keep.name.split(".", 1)[0]
    for key in sorted(entries):  # names start with a UTC time stamp: oldest first
        if total <= max_bytes:
            break
        if key == newest:
            continue
        for item in entries[key]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(item.path)
        total -= sizes[key]


def _checked(uid: str, what: str) -> str:
    """``uid`` if it is safe as a path component, else :class:`InvalidInstanceError`."""
    try:
        return checked_uid(uid, what)
    except InvalidUidError as exc:
        raise InvalidInstanceError(str(exc)) from None
