"""Hostile input against the storage SCP (issue 15 part 4): seeded, bounded in count and time.

Each case is sent over a real association exactly as built (pynetdicom's chunked mode sends a
file's data set bytes untouched), so the SCP sees truncations, flipped bytes and wrong lengths
as a broken modality or an attacker would send them. Every case must end as a success whose
bytes are on disk, or a failure status whose bytes are in quarantine with a reason (0xA700
excepted: the sender keeps its copy and retries); the node answers C-ECHO throughout, nothing
is written outside the spool, no patient value reaches the log, and memory stays bounded.
``pytest -s`` prints the outcome table.
"""

from __future__ import annotations

import collections
import logging
import random
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_files
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000Lossless
from pynetdicom import AE, _config
from pynetdicom.dsutils import split_dataset
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicom_io.listener import ListenerSettings, StorageSCP
from dicom_io.spool import QUARANTINE_DIR, Spool, StoredInstance, is_valid_uid
from dicom_io.status import Status, is_failure
from tests.dicom_io.conftest import UID_ROOT, make_series

pytestmark = pytest.mark.network

SEED = 20_150_415
SCP_AET = "HEPATICA"
BUDGET_S = 75.0  # each test; the network watchdog ends the run at 90 s
SECRET_NAMES = ("FUZZ^SECRET", "Müller^Zoë", "山田^太郎", "Ødegård^Åse")
MAX_RSS_GROWTH_KB = 300 * 1024


@dataclass
class Tally:
    """Per class: cases tried, outcomes, instances lost (acknowledged but not kept)."""

    tried: collections.Counter[str] = field(default_factory=collections.Counter)
    outcomes: dict[str, collections.Counter[str]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter))
    lost: collections.Counter[str] = field(default_factory=collections.Counter)

    def table(self) -> str:
        lines = ["| class | tried | outcome | lost |", "|---|---|---|---|"]
        for name in self.tried:
            outcome = ", ".join(f"{k} ×{v}" for k, v in sorted(self.outcomes[name].items()))
            lines.append(f"| {name} | {self.tried[name]} | {outcome} | {self.lost[name]} |")
        return "\n".join(lines)


class Harness:
    """Our SCP, a raw sender, and the bookkeeping that decides 'lost'."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.inputs = root / "inputs"
        self.inputs.mkdir()
        self.stored: list[StoredInstance] = []
        self.scp = StorageSCP(ListenerSettings(SCP_AET, "127.0.0.1", 0),
                              Spool(root / "spool"), self.stored.append, notify_all=True)
        self.tally = Tally()
        self.count = 0

    @property
    def quarantine(self) -> Path:
        return self.scp.spool.root / QUARANTINE_DIR

    def _quarantined(self) -> int:
        return len(list(self.quarantine.glob("*.reason.txt"))) if self.quarantine.exists() else 0

    def write(self, data: bytes) -> Path:
        self.count += 1
        path = self.inputs / f"case{self.count:04d}.dcm"
        path.write_bytes(data)
        return path

    def send(self, name: str, path: Path) -> None:
        """Send ``path`` as is; classify the outcome; count a loss if one occurred."""
        self.tally.tried[name] += 1
        before = self._quarantined()
        outcome, status = self._send(path)
        self.tally.outcomes[name][outcome] += 1
        if status is None:
            return  # never offered: the sender still has it (not negotiated / unsendable)
        body = path.read_bytes()[split_dataset(path)[1]:]
        if not is_failure(status):
            kept = any(p.read_bytes().endswith(body) for p in self._spool_files())
            if not kept and self._quarantined() == before:
                self.tally.lost[name] += 1
        elif status != Status.OUT_OF_RESOURCES and self._quarantined() == before:
            self.tally.lost[name] += 1  # refused, and no trace kept

    def _spool_files(self) -> Iterator[Path]:
        for study in self.scp.spool.iter_studies():
            yield from (self.scp.spool.root / study).rglob("*.dcm")

    def _send(self, path: Path) -> tuple[str, int | None]:
        try:
            meta, _ = split_dataset(path)
            sop_class = str(meta.MediaStorageSOPClassUID)
            syntax = str(meta.TransferSyntaxUID)
        except Exception as exc:
            return f"unsendable: no usable file meta ({type(exc).__name__})", None
        ae = AE(ae_title="FUZZER")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 15
        try:
            ae.add_requested_context(sop_class, [syntax])
        except Exception:
            return "unsendable: SCU refuses the UIDs", None
        assoc = ae.associate("127.0.0.1", self.scp.port, ae_title=SCP_AET)
        if not assoc.is_established:
            if assoc.is_rejected:
                return "association rejected", None
            return "not negotiated (class or syntax)", None  # pynetdicom aborts then
        try:
            if not assoc.accepted_contexts:
                return "not negotiated (class or syntax)", None
            try:
                rsp = assoc.send_c_store(path)
            except (ValueError, AttributeError, KeyError, TypeError) as exc:
                return f"unsendable: SCU ({type(exc).__name__})", None
            if "Status" not in rsp:
                return "NO RESPONSE", None
            status = int(rsp.Status)
            return (f"0x{status:04X}" if status else "stored"), status
        finally:
            if assoc.is_established:
                assoc.release()

    def echo_ok(self) -> bool:
        ae = AE(ae_title="FUZZER")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", self.scp.port, ae_title=SCP_AET)
        if not assoc.is_established:
            return False
        try:
            return int(assoc.send_c_echo().get("Status", -1)) == 0
        finally:
            assoc.release()


@pytest.fixture
def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            caplog: pytest.LogCaptureFixture) -> Iterator[Harness]:
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    caplog.set_level(logging.INFO)
    h = Harness(tmp_path)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with h.scp:
        yield h
        assert h.echo_ok(), "the node stopped answering"
    print("\n" + h.tally.table())
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < MAX_RSS_GROWTH_KB
    _assert_confined(tmp_path, h)
    for name in SECRET_NAMES:
        assert name not in caplog.text
    assert "NO RESPONSE" not in h.tally.table()
    assert sum(h.tally.lost.values()) == 0, h.tally.table()


def _assert_confined(root: Path, h: Harness) -> None:
    """Nothing outside inputs/ and the spool; in the spool only UID folders and quarantine."""
    for path in root.rglob("*"):
        assert path.is_relative_to(h.inputs) or path.is_relative_to(h.scp.spool.root), path
    for entry in h.scp.spool.root.iterdir():
        assert entry.name == QUARANTINE_DIR or is_valid_uid(entry.name), entry.name
    for path in h.scp.spool.root.rglob("*"):
        if not path.is_relative_to(h.quarantine):
            assert all(is_valid_uid(part) for part in path.relative_to(h.scp.spool.root)
                       .with_suffix("").parts), path


# --- case builders ----------------------------------------------------------------------

def _part10(ds: Dataset) -> bytes:
    buffer = BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _seeded_uids(ds: Dataset, rng: random.Random, *, keep_study_series: bool = False
                 ) -> Dataset:
    """UIDs from ``rng`` (make_series draws random ones), so a seed replays the same bytes."""
    def uid() -> str:
        return f"{UID_ROOT}{rng.getrandbits(96)}"

    if not keep_study_series:
        ds.StudyInstanceUID, ds.SeriesInstanceUID = uid(), uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid()
    ds.FrameOfReferenceUID = uid()
    return ds


def _seed_instance(rng: random.Random) -> Dataset:
    ds = _seeded_uids(make_series(2, rows=16, cols=16)[rng.randrange(2)], rng)
    ds.PatientName = SECRET_NAMES[0]
    ds.PatientID = "FUZZ-ID-4711"
    return ds


def _body_offset(data: bytes, h: Harness) -> int:
    return split_dataset(h.write(data))[1]


def _mutations(rng: random.Random, h: Harness) -> Iterator[tuple[str, bytes]]:
    """(class, file bytes) for every mutation class; file meta stays valid so it can be sent."""
    for _ in range(30):
        data = _part10(_seed_instance(rng))
        start = _body_offset(data, h)
        yield "truncated", data[: rng.randrange(start + 1, len(data))]
    for _ in range(40):
        data = bytearray(_part10(_seed_instance(rng)))
        start = _body_offset(bytes(data), h)
        for _ in range(rng.randint(1, 4)):  # within the header elements, before Pixel Data
            at = rng.randrange(start, min(len(data), start + 400))
            data[at] ^= 1 << rng.randrange(8)
        yield "flipped header bytes", bytes(data)
    for _ in range(30):
        yield "wrong VR length", _wrong_length(rng, h)
    for rows, cols, frames in [(65535, 65535, 1), (16384, 16384, 1), (512, 512, 100000),
                               (1, 1, 2**31 - 1), (0, 512, 1), (30000, 30000, 1)]:
        ds = _seed_instance(rng)
        ds.Rows, ds.Columns = rows, cols
        if frames > 1:
            ds.NumberOfFrames = frames
        yield "huge Rows x Columns, little pixel data", _part10(ds)
    for rows in (65535, 40000):
        ds = _seed_instance(rng)
        ds.Rows = ds.Columns = rows
        ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
        ds.PixelData = pydicom.encaps.encapsulate([b"\xff\x4f\xff\x51" + b"\0" * 60])
        ds["PixelData"].VR = "OB"
        yield "huge Rows x Columns, little pixel data", _part10(ds)
    for n in range(10):
        first = _seed_instance(rng)
        other = _seeded_uids(make_series(2, rows=16, cols=16)[1], rng)
        if n % 2:  # same study and series: by DICOM the same instance, content differs
            other.StudyInstanceUID = first.StudyInstanceUID
            other.SeriesInstanceUID = first.SeriesInstanceUID
        other.SOPInstanceUID = first.SOPInstanceUID
        other.file_meta.MediaStorageSOPInstanceUID = first.SOPInstanceUID
        yield "duplicate SOP UID, other content", _part10(first)
        yield "duplicate SOP UID, other content", _part10(other)
    hostile = ["../../escape", "/etc/passwd", "1.2/../../3", "..", "1.2.3/4", "1.2.3\\..\\4",
               "1.2.3\x00/x", "XXXXXXXXX", "1.2.abc", "1." + "2" * 80, "~/x", "1.2.3 .. 4"]
    for n, bad in enumerate(hostile):
        ds = _seed_instance(rng)
        keyword = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")[n % 3]
        setattr(ds, keyword, bad)
        # full-width digits (UTF-8, 9 bytes) cannot be encoded by pydicom: patched in
        yield "UID with / .. or non-UID characters", _part10(ds).replace(
            b"XXXXXXXXX", "１２３".encode())
    yield from _non_ascii(rng)


def _wrong_length(rng: random.Random, h: Harness) -> bytes:
    """Rewrite one explicit-VR element's 16- or 32-bit length with a wrong value."""
    ds = _seed_instance(rng)
    data = bytearray(_part10(ds))
    start = _body_offset(bytes(data), h)
    offsets = []
    at = start
    while at + 8 <= len(data):
        vr = bytes(data[at + 4: at + 6])
        if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT", b"OF", b"UC", b"UR"):
            length = int.from_bytes(data[at + 8: at + 12], "little")
            offsets.append((at + 8, 4))
            if vr == b"SQ" or length == 0xFFFFFFFF:
                break
            at += 12 + length
        else:
            offsets.append((at + 6, 2))
            at += 8 + int.from_bytes(data[at + 6: at + 8], "little")
    where, size = rng.choice(offsets)
    value = rng.choice([0, 1, 3, 0x7FFF, 0xFFFF, 0xFFFFFFF0 & ((1 << (8 * size)) - 1)])
    data[where: where + size] = value.to_bytes(size, "little")
    return bytes(data)


def _non_ascii(rng: random.Random) -> Iterator[tuple[str, bytes]]:
    for name, charset in [("Müller^Zoë", "ISO_IR 192"), ("山田^太郎", "ISO_IR 192"),
                          ("Ødegård^Åse", "ISO_IR 100")]:
        ds = _seed_instance(rng)
        ds.SpecificCharacterSet = charset
        ds.PatientName = name
        ds.StudyDescription = f"Leber {name}"
        yield "non-ASCII names", _part10(ds)
    ds = _seed_instance(rng)  # Latin-1 bytes declared as UTF-8: undecodable name
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Ødegård^Åse"
    yield "non-ASCII names", _part10(ds).replace(b"ISO_IR 100", b"ISO_IR 192")
    ds = _seed_instance(rng)  # no character set at all, raw high bytes
    ds.PatientName = "Ødegård^Åse".encode("latin-1")
    yield "non-ASCII names", _part10(ds)


def _run(h: Harness, cases: Iterator[tuple[str, bytes]] | list[tuple[str, Path]],
         write: Callable[[bytes], Path] | None = None) -> None:
    deadline = time.monotonic() + BUDGET_S
    for n, (name, item) in enumerate(cases):
        assert time.monotonic() < deadline, f"fuzz over its time budget after {n} cases"
        path = item if isinstance(item, Path) else h.write(item)
        h.send(name, path)
        if n % 25 == 24:
            assert h.echo_ok(), f"no C-ECHO after case {n} ({name})"


# --- the tests --------------------------------------------------------------------------

def test_mutated_instances_are_refused_or_kept_never_lost(harness: Harness) -> None:
    rng = random.Random(SEED)
    _run(harness, _mutations(rng, harness))
    outcomes = harness.tally.outcomes
    assert outcomes["truncated"]["stored"] < harness.tally.tried["truncated"]
    assert set(outcomes["huge Rows x Columns, little pixel data"]) <= {"0xC000", "0xC210"}
    assert "stored" not in outcomes["UID with / .. or non-UID characters"]
    dup = outcomes["duplicate SOP UID, other content"]
    assert dup["0x0111"] == 5 and dup["stored"] == 15  # 10 firsts + 5 same-series resends
    assert outcomes["non-ASCII names"]["stored"] >= 3


def test_pydicom_test_files_sent_as_they_are(harness: Harness) -> None:
    files = sorted(Path(p) for p in get_testdata_files() if Path(p).is_file())
    assert len(files) > 50
    _run(harness, [(_file_class(p), p) for p in files])
    assert sum(harness.tally.outcomes[c]["stored"] for c in harness.tally.tried) > 10


def _file_class(path: Path) -> str:
    """Group pydicom's test files by what they hold, for the table."""
    try:
        meta, _ = split_dataset(path)
        syntax = pydicom.uid.UID(str(meta.TransferSyntaxUID))
    except Exception:
        return "pydicom test files: no file meta"
    kind = "compressed" if syntax.is_compressed else "uncompressed"
    return f"pydicom test files: {kind}"

