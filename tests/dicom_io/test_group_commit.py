"""Issue 13 part 1: the storage SCP receives durably at speed: TCP_NODELAY on its sockets,
one file-system flush shared by concurrent writers (group commit) before any Success, torn
copies replaced, four concurrent associations without loss, one INFO line per series."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import MRImageStorage  # type: ignore[attr-defined]

import dicom_io.listener as listener
from dicom_io.listener import ListenerSettings, StorageSCP
from dicom_io.spool import GroupCommit, Spool, StoredInstance, identify

pytestmark = pytest.mark.network

SCP_AET = "HEPATICA"
STORESCU = "/usr/bin/storescu"


class Recorder:
    def __init__(self) -> None:
        self.stored: list[StoredInstance] = []
        self.lock = threading.Lock()

    def __call__(self, item: StoredInstance) -> None:
        with self.lock:
            self.stored.append(item)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def scp(tmp_path: Path, recorder: Recorder) -> Iterator[StorageSCP]:
    server = StorageSCP(ListenerSettings(SCP_AET, "127.0.0.1", 0, max_associations=8),
                        Spool(tmp_path / "spool"), recorder)
    server.start()
    yield server
    server.stop()


def test_group_commit_shares_flushes_between_writers(tmp_path: Path) -> None:
    """Writers syncing at the same moment are covered by fewer flushes than writers, and
    each returns only after a flush that began after its own write."""
    commit = GroupCommit(tmp_path)
    flushed: list[int] = []
    started = threading.Barrier(8)
    original = commit._flush

    def slow_flush() -> None:
        flushed.append(1)
        threading.Event().wait(0.05)  # a slow disk: others pile up behind the leader
        original()

    commit._flush = slow_flush  # type: ignore[method-assign]

    def writer(k: int) -> None:
        (tmp_path / f"w{k}").write_bytes(b"x" * 100)
        started.wait()
        for _ in range(5):
            commit.sync()

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert commit.flushes == len(flushed)
    assert 0 < commit.flushes < 40  # 40 syncs, far fewer flushes


def test_failed_flush_fails_the_writers_it_covered(tmp_path: Path) -> None:
    commit = GroupCommit(tmp_path)

    def broken() -> None:
        raise OSError(5, "I/O error")

    commit._flush = broken  # type: ignore[method-assign]
    with pytest.raises(OSError, match="I/O error"):
        commit.sync()


def test_pending_write_then_commit_and_torn_copy_replaced(tmp_path: Path,
                                                         make_series: Any) -> None:
    spool = Spool(tmp_path / "spool")
    ds = make_series(1)[0]
    buffer = _part10(ds)
    identity = identify(ds)
    first = spool.store_encoded(buffer, identity, durable=False)
    spool.commit()
    assert first.new and first.path.read_bytes() == buffer
    again = spool.store_encoded(buffer, identity, durable=False)
    assert not again.new
    first.path.write_bytes(b"")  # what a power cut before the commit may leave
    healed = spool.store_encoded(buffer, identity, durable=False)
    spool.commit()
    assert healed.new and healed.path.read_bytes() == buffer


def _part10(ds: Dataset) -> bytes:
    from dicom_io.spool import encode_part10

    return encode_part10(ds)


def test_accepted_sockets_have_nodelay(scp: StorageSCP, make_series: Any,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    real = listener.set_nodelay

    def spy(sock: socket.socket) -> None:
        real(sock)
        seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    monkeypatch.setattr(listener, "set_nodelay", spy)
    ae = AE(ae_title="SCU")
    ae.add_requested_context(MRImageStorage)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title=SCP_AET,
                         evt_handlers=[(evt.EVT_CONN_OPEN, listener.nodelay_on_connect)])
    assert assoc.is_established
    client: Any = assoc.dul.socket.socket  # type: ignore[union-attr]
    assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0  # our SCU side
    assert assoc.send_c_store(make_series(1)[0]).Status == 0
    assoc.release()
    assert seen and all(value != 0 for value in seen)  # the SCP side


def test_success_only_after_a_flush(scp: StorageSCP, make_series: Any) -> None:
    """Every Success was preceded by a group-commit flush that covered the instance."""
    flushes_before = scp.spool.group_commit.flushes
    ae = AE(ae_title="SCU")
    ae.add_requested_context(MRImageStorage)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title=SCP_AET)
    for ds in make_series(3):
        assert assoc.send_c_store(ds).Status == 0
        assert scp.spool.group_commit._durable >= scp.spool.group_commit._registered
    assoc.release()
    assert scp.spool.group_commit.flushes > flushes_before


@pytest.mark.dcmtk
def test_four_concurrent_associations_lose_nothing(
        scp: StorageSCP, recorder: Recorder, make_series: Any, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """Four DCMTK storescu processes at once, 25 instances each: every one acknowledged is
    in the spool, whole, and was reported once; one INFO line per series, none per
    instance; concurrent writers shared flushes."""
    caplog.set_level(logging.INFO, logger="dicom_io")
    folders = []
    for k in range(4):
        folder = tmp_path / f"send{k}"
        folder.mkdir()
        for i, ds in enumerate(make_series(25)):
            ds.save_as(folder / f"{i:03d}.dcm", enforce_file_format=True)
        folders.append(folder)
    env = {**os.environ, "TCP_NODELAY": "1"}
    procs = [subprocess.Popen([STORESCU, "-aet", "STORESCU", "-aec", SCP_AET, "+sd",
                               "127.0.0.1", str(scp.port), str(folder)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for folder in folders]
    for proc in procs:
        proc.communicate(timeout=300)
        assert proc.returncode == 0
    sent = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p
            for folder in folders for p in folder.glob("*.dcm")}
    spooled = {p.stem: p for p in scp.spool.root.rglob("*.dcm") if "_quarantine" not in p.parts}
    assert set(sent) <= set(spooled)
    for uid, path in sent.items():
        original = pydicom.dcmread(path)
        kept = pydicom.dcmread(spooled[uid])
        assert kept.PixelData == original.PixelData
    assert sorted(s.sop_uid for s in recorder.stored) == sorted(sent)

    def info() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]

    for _ in range(100):  # the summary is written when the SCP side of each socket closes
        if sum(m.startswith("received series=") for m in info()) >= 4:
            break
        threading.Event().wait(0.1)
    messages = info()
    assert sum(m.startswith("receiving series=") for m in messages) == 4
    assert sum(m.startswith("received series=") for m in messages) == 4
    assert not any(m.startswith("stored sop=") for m in messages)
    assert scp.spool.group_commit.flushes <= len(sent)
