"""send_files against DCMTK storescp (started late, to exercise retries) and our own SCP."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import SecondaryCaptureImageStorage, UltrasoundImageStorage

from dicom_io.listener import ListenerSettings, StorageSCP
from dicom_io.sender import Peer, SendError, send_files
from dicom_io.spool import Spool

pytestmark = pytest.mark.network


@pytest.mark.dcmtk
def test_retries_until_storescp_is_up(
    storescp: Any, make_series: Any, write_series: Any, tmp_path: Path
) -> None:
    mr = write_series(make_series(4), tmp_path / "mr")
    sc = write_series(make_series(1, sop_class=SecondaryCaptureImageStorage, modality="OT"),
                      tmp_path / "sc")
    starter = threading.Timer(1.0, storescp.start)
    starter.start()
    progress: list[tuple[int, int]] = []
    try:
        report = send_files([*mr, *sc], Peer(storescp.ae_title, "127.0.0.1", storescp.port),
                            retries=5, backoff_s=0.4,
                            progress=lambda done, total: progress.append((done, total)))
    finally:
        starter.join()
    assert report.sent == 5 and report.failed == []
    assert progress[-1] == (5, 5)
    received = {pydicom.dcmread(p).SOPInstanceUID for p in storescp.out_dir.iterdir()}
    expected = {pydicom.dcmread(p).SOPInstanceUID for p in [*mr, *sc]}
    assert received == expected


def test_unreachable_peer_raises_after_retries(
    free_port: Any, make_series: Any, write_series: Any, tmp_path: Path
) -> None:
    files = write_series(make_series(1), tmp_path / "mr")
    started = time.monotonic()
    with pytest.raises(SendError, match=r"could not send 1 of 1 files .* after 3 attempts"):
        send_files(files, Peer("NOBODY", "127.0.0.1", free_port()), retries=2, backoff_s=0.05)
    assert time.monotonic() - started < 5


def test_refused_instances_are_reported_not_raised(
    make_series: Any, write_series: Any, tmp_path: Path
) -> None:
    mr = write_series(make_series(2), tmp_path / "mr")
    sc = write_series(make_series(1, sop_class=UltrasoundImageStorage, modality="US"),
                      tmp_path / "us")
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"nope")
    settings = ListenerSettings("HEPATICA", "127.0.0.1", 0)
    with StorageSCP(settings, Spool(tmp_path / "spool"), lambda _: None) as scp:
        report = send_files([*mr, *sc, junk], Peer("HEPATICA", "127.0.0.1", scp.port),
                            retries=0)
    assert report.sent == 2
    reasons = dict(report.failed)
    assert "no presentation context" in reasons[sc[0]]
    assert "unreadable" in reasons[junk]


def test_permanent_rejection_is_not_retried(
    make_series: Any, write_series: Any, tmp_path: Path
) -> None:
    files = write_series(make_series(1), tmp_path / "mr")
    settings = ListenerSettings("HEPATICA", "127.0.0.1", 0, allowed_callers=("OTHER",))
    with StorageSCP(settings, Spool(tmp_path / "spool"), lambda _: None) as scp:
        started = time.monotonic()
        with pytest.raises(SendError, match="rejected the association"):
            send_files(files, Peer("HEPATICA", "127.0.0.1", scp.port), retries=3, backoff_s=2)
        assert time.monotonic() - started < 2
