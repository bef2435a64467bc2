"""Issue 15 part 0, listener level, each reproduced with real associations on loopback: idle
sockets no longer lock callers out, the called AE title is checked, a SOP Instance UID keeps its
first durable copy, the quarantine is bounded, and library warnings carry no patient values."""

from __future__ import annotations

import copy
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage, Verification  # type: ignore[attr-defined]

from dicom_io.listener import ListenerSettings, StorageSCP
from dicom_io.spool import Spool, StoredInstance
from dicom_io.status import Status
from tests.dicom_io.conftest import make_series

pytestmark = pytest.mark.network

SCP_AET = "HEPATICA"


def _associate(port: int, called: str = SCP_AET) -> Any:
    ae = AE(ae_title="SCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(Verification)
    ae.add_requested_context(MRImageStorage)
    return ae.associate("127.0.0.1", port, ae_title=called)


def _scp(tmp_path: Path, stored: list[StoredInstance] | None = None,
         **settings: Any) -> StorageSCP:
    sink = stored if stored is not None else []
    return StorageSCP(ListenerSettings(SCP_AET, "127.0.0.1", 0, **settings),
                      Spool(tmp_path / "spool"), sink.append)


@pytest.fixture
def scp(tmp_path: Path) -> Iterator[StorageSCP]:
    with _scp(tmp_path) as server:
        yield server


def _idle_sockets(stack: ExitStack, port: int, n: int) -> None:
    for _ in range(n):
        stack.enter_context(socket.create_connection(("127.0.0.1", port)))
    time.sleep(0.3)  # let the server accept them all


def test_ten_idle_connections_do_not_lock_callers_out(scp: StorageSCP) -> None:
    """pynetdicom's default allowed 10 connections, idle or not: the 11th caller was refused."""
    with ExitStack() as stack:
        _idle_sockets(stack, scp.port, 12)
        assoc = _associate(scp.port)
        assert assoc.is_established
        assert assoc.send_c_echo().Status == Status.SUCCESS
        assoc.release()


def test_idle_connections_are_dropped_after_the_acse_timeout(tmp_path: Path) -> None:
    with _scp(tmp_path, max_associations=3, acse_timeout_s=1.0) as server, ExitStack() as stack:
        _idle_sockets(stack, server.port, 3)
        full = _associate(server.port)
        assert not full.is_established  # at the limit: refused, not hung
        time.sleep(1.8)  # the idle sockets said nothing within the ACSE timeout: closed
        assoc = _associate(server.port)
        assert assoc.is_established
        assoc.release()


def test_wrong_called_ae_title_is_rejected(scp: StorageSCP) -> None:
    assoc = _associate(scp.port, called="SOMEONE_ELSE")
    assert assoc.is_rejected and not assoc.is_established
    ok = _associate(scp.port)
    assert ok.is_established
    ok.release()


def _store(port: int, *datasets: pydicom.Dataset) -> list[tuple[int, str]]:
    assoc = _associate(port)
    try:
        out = []
        for ds in datasets:
            rsp = assoc.send_c_store(ds)
            out.append((int(rsp.Status), str(rsp.get("ErrorComment", ""))))
        return out
    finally:
        assoc.release()


def test_same_sop_uid_under_another_study_is_refused_first_copy_wins(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stored: list[StoredInstance] = []
    first = make_series(2)[0]
    clash = make_series(2)[1]  # another study and series, same SOP Instance UID
    clash.SOPInstanceUID = first.SOPInstanceUID
    clash.file_meta.MediaStorageSOPInstanceUID = first.SOPInstanceUID
    clash.PatientName = "Other^Patient"
    caplog.set_level(logging.INFO, logger="dicom_io")
    with _scp(tmp_path, stored) as server:
        statuses = _store(server.port, first, clash)
        # survives a restart: the spool's index is rebuilt from disk
    with _scp(tmp_path, stored) as server:
        statuses += _store(server.port, clash)
        spool = server.spool
    assert [s for s, _ in statuses] == [Status.SUCCESS, Status.DUPLICATE_SOP_INSTANCE,
                                        Status.DUPLICATE_SOP_INSTANCE]
    assert "another series or study" in statuses[1][1]
    kept = spool.study_dir(first.StudyInstanceUID) / first.SeriesInstanceUID
    assert pydicom.dcmread(kept / f"{first.SOPInstanceUID}.dcm").PatientName == "Doe^Jane"
    assert not spool.study_dir(clash.StudyInstanceUID).exists()
    reasons = [p.read_text() for p in (spool.root / "_quarantine").glob("*.reason.txt")]
    assert len(reasons) == 2 and all("0x0111" in r for r in reasons)
    assert "refused C-STORE" in caplog.text
    assert "Other^Patient" not in caplog.text and "Doe^Jane" not in caplog.text
    assert len(stored) == 1


def test_same_sop_uid_same_series_other_content_keeps_first_and_quarantines(
    scp: StorageSCP
) -> None:
    ds = make_series(2)[0]
    changed = copy.deepcopy(ds)
    changed.SeriesDescription = "edited on the way"
    statuses = _store(scp.port, ds, changed, ds)
    assert [s for s, _ in statuses] == [Status.SUCCESS] * 3
    path = scp.spool.study_dir(ds.StudyInstanceUID) / ds.SeriesInstanceUID / \
        f"{ds.SOPInstanceUID}.dcm"
    assert pydicom.dcmread(path).SeriesDescription == ds.SeriesDescription
    (reason,) = [p.read_text() for p in (scp.spool.root / "_quarantine").glob("*.reason.txt")]
    assert "different content; first copy kept" in reason


def test_quarantine_stays_under_its_limit(tmp_path: Path) -> None:
    bad = []
    for _ in range(8):
        ds = make_series(1)[0]
        del ds.StudyInstanceUID  # refused and quarantined (about 2.6 kB each)
        bad.append(ds)
    with _scp(tmp_path, quarantine_max_bytes=8000) as server:
        statuses = _store(server.port, *bad)
        folder = server.spool.root / "_quarantine"
    assert {s for s, _ in statuses} == {Status.CANNOT_UNDERSTAND}
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 8000
    kept = sorted(folder.glob("*.dcm"))
    assert 1 <= len(kept) < 8
    newest = pydicom.dcmread(kept[-1], force=True).SOPInstanceUID
    assert newest == bad[-1].SOPInstanceUID  # the oldest went first


def test_library_warnings_in_the_log_carry_no_values(
    scp: StorageSCP, caplog: pytest.LogCaptureFixture
) -> None:
    ds = make_series(2)[0]
    with pytest.warns(UserWarning):
        ds.PatientBirthDate = "1961-07-23"
        ds.PatientSex = "secret sex"
    caplog.set_level(logging.DEBUG)
    assert _store(scp.port, ds)[0][0] == Status.SUCCESS
    assert "Invalid value for VR DA" in caplog.text  # pydicom did complain …
    assert "1961-07-23" not in caplog.text and "secret sex" not in caplog.text  # … blindly


def test_printed_warnings_carry_no_values_and_repeat_once(tmp_path: Path) -> None:
    """Outside pytest's own warning capture: what a running node prints on stderr."""
    script = (
        "import warnings, pydicom\n"
        "from dicom_io.log_redaction import redact_library_warnings\n"
        "redact_library_warnings()\n"
        "from pydicom.dataset import Dataset\n"
        "for name in ('1961-07-23', '1970-01-02', '1980-03-04'):\n"
        "    Dataset().PatientBirthDate = name\n")
    result = subprocess.run([sys.executable, "-W", "always", "-c", script], cwd=Path.cwd(),
                            capture_output=True, text=True, timeout=60, check=True)
    for value in ("1961-07-23", "1970-01-02", "1980-03-04"):
        assert value not in result.stderr
    assert result.stderr.count("Invalid value for VR DA: '…'") == 1
