"""StorageSCP against an in-process pynetdicom SCU and DCMTK's storescu, on loopback."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import UltrasoundImageStorage
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage, Verification  # type: ignore[attr-defined]

from dicom_io.listener import ListenerSettings, StorageSCP, StoreRejected, failure_for
from dicom_io.privacy import hash_identifier
from dicom_io.spool import InvalidInstanceError, Spool, StoredInstance
from dicom_io.status import Status

pytestmark = pytest.mark.network

SCP_AET = "HEPATICA"
TIMEOUT_S = 10


class Recorder:
    """on_stored callback that notes whether each file was already on disk when called."""

    def __init__(self) -> None:
        self.stored: list[StoredInstance] = []
        self.lock = threading.Lock()
        self.file_present: list[bool] = []

    def __call__(self, item: StoredInstance) -> None:
        with self.lock:
            self.stored.append(item)
            self.file_present.append(item.path.is_file())


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def scp(tmp_path: Path, recorder: Recorder) -> Iterator[StorageSCP]:
    settings = ListenerSettings(SCP_AET, "127.0.0.1", 0, allowed_callers=("SCU", "STORESCU"))
    server = StorageSCP(settings, Spool(tmp_path / "spool"), recorder)
    server.start()
    yield server
    server.stop()


def _associate(port: int, calling: str = "SCU", contexts: tuple[str, ...] = (MRImageStorage,)
               ) -> Any:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT_S
    ae.add_requested_context(Verification)
    for sop_class in contexts:
        ae.add_requested_context(sop_class)
    return ae.associate("127.0.0.1", port, ae_title=SCP_AET)


def test_port_zero_reports_the_bound_port(scp: StorageSCP) -> None:
    assert scp.port > 0


def test_c_echo(scp: StorageSCP) -> None:
    assoc = _associate(scp.port)
    assert assoc.is_established
    assert assoc.send_c_echo().Status == Status.SUCCESS
    assoc.release()


def test_stored_before_success_and_bad_instance_isolated(
    scp: StorageSCP, recorder: Recorder, make_series: Any, caplog: pytest.LogCaptureFixture
) -> None:
    good = make_series(3)
    bad = make_series(1)[0]
    del bad.StudyInstanceUID
    caplog.set_level(logging.INFO, logger="dicom_io")
    assoc = _associate(scp.port)
    statuses = []
    for ds in (good[0], bad, good[1], good[2]):
        rsp = assoc.send_c_store(ds)
        statuses.append(int(rsp.Status))
        if ds is not bad:  # durable before the response reached us
            assert (scp.spool.study_dir(ds.StudyInstanceUID) / ds.SeriesInstanceUID
                    / f"{ds.SOPInstanceUID}.dcm").is_file()
    assoc.release()
    assert statuses == [Status.SUCCESS, Status.CANNOT_UNDERSTAND, Status.SUCCESS, Status.SUCCESS]
    assert [s.sop_uid for s in recorder.stored] == [good[k].SOPInstanceUID for k in range(3)]
    assert all(recorder.file_present)
    quarantined = list((scp.spool.root / "_quarantine").glob("*.dcm"))
    assert len(quarantined) == 1
    assert pydicom.dcmread(quarantined[0]).SOPInstanceUID == bad.SOPInstanceUID
    assert "StudyInstanceUID is missing" in quarantined[0].with_suffix(".reason.txt").read_text()
    assert "Doe^Jane" not in caplog.text and "PAT-0001" not in caplog.text
    assert hash_identifier("PAT-0001") in caplog.text


def test_resend_is_not_new(scp: StorageSCP, recorder: Recorder, make_series: Any) -> None:
    ds = make_series(2)[0]
    assoc = _associate(scp.port)
    assert assoc.send_c_store(ds).Status == Status.SUCCESS
    assert assoc.send_c_store(ds).Status == Status.SUCCESS
    assoc.release()
    assert [s.new for s in recorder.stored] == [True, False]


def test_callback_failure_is_a_failure_status_not_a_crash(
    tmp_path: Path, make_series: Any
) -> None:
    def explode(_: StoredInstance) -> None:
        raise RuntimeError("queue down")

    settings = ListenerSettings(SCP_AET, "127.0.0.1", 0)
    with StorageSCP(settings, Spool(tmp_path), explode) as server:
        assoc = _associate(server.port)
        rsp = assoc.send_c_store(make_series(2)[0])
        assert rsp.Status == Status.HANDLER_EXCEPTION
        assert "RuntimeError" in rsp.ErrorComment
        assert assoc.send_c_echo().Status == Status.SUCCESS  # the node still answers
        assoc.release()


def test_disallowed_caller_is_rejected(scp: StorageSCP) -> None:
    assoc = _associate(scp.port, calling="INTRUDER")
    assert assoc.is_rejected and not assoc.is_established


def test_unsupported_sop_class_not_negotiated(scp: StorageSCP) -> None:
    assoc = _associate(scp.port, contexts=(UltrasoundImageStorage,))
    assert assoc.is_established
    accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
    assert str(UltrasoundImageStorage) not in accepted
    assoc.release()


def test_failure_mapping() -> None:
    assert failure_for(InvalidInstanceError("x")).status == Status.CANNOT_UNDERSTAND
    disk_full = failure_for(OSError(28, "No space left on device"))
    assert disk_full.status == Status.OUT_OF_RESOURCES and not disk_full.quarantine
    assert failure_for(KeyError("k")).status == Status.HANDLER_EXCEPTION
    keep = StoreRejected(Status.DATA_SET_DOES_NOT_MATCH_SOP_CLASS, "mismatch")
    assert failure_for(keep) is keep


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="AE title"):
        ListenerSettings("", "127.0.0.1", 104)
    with pytest.raises(ValueError, match="port"):
        ListenerSettings("A", "127.0.0.1", 70000)


# --- DCMTK storescu as the sender ------------------------------------------------------

def _storescu(
    port: int, files: list[Path], calling: str = "STORESCU"
) -> subprocess.CompletedProcess[str]:
    """Run DCMTK storescu (continues after a failed instance, like a PACS batch)."""
    args = ["/usr/bin/storescu", "-v", "--no-halt", "-aet", calling, "-aec", SCP_AET,
            "127.0.0.1", str(port), *map(str, files)]
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False,
                          env=_dcmtk_env())


def _dcmtk_env() -> dict[str, str]:
    """DCMTK leaves Nagle on unless told otherwise (FACTS.md)."""
    return {**os.environ, "TCP_NODELAY": "1"}


@pytest.fixture
def _has_storescu() -> None:
    if not os.access("/usr/bin/storescu", os.X_OK):
        pytest.skip("DCMTK storescu is not installed")


@pytest.mark.dcmtk
@pytest.mark.usefixtures("_has_storescu")
def test_dcmtk_storescu_series_and_bad_file(
    scp: StorageSCP, recorder: Recorder, make_series: Any, write_series: Any, tmp_path: Path
) -> None:
    datasets = make_series(5)
    bad = make_series(1)[0]
    del bad.SeriesInstanceUID
    files = write_series(datasets[:2], tmp_path / "in")
    files += write_series([bad], tmp_path / "bad")
    files += write_series(datasets[2:], tmp_path / "in2")
    result = _storescu(scp.port, files)
    assert sorted(s.sop_uid for s in recorder.stored) == sorted(d.SOPInstanceUID for d in datasets)
    assert "Received Store Response (Error: CannotUnderstand)" in result.stdout + result.stderr
    assert len(list((scp.spool.root / "_quarantine").glob("*.dcm"))) == 1


@pytest.mark.dcmtk
@pytest.mark.usefixtures("_has_storescu")
def test_dcmtk_storescu_unsupported_class_fails(
    scp: StorageSCP, recorder: Recorder, make_series: Any, write_series: Any, tmp_path: Path
) -> None:
    us: Dataset = make_series(1, sop_class=UltrasoundImageStorage, modality="US")[0]
    result = _storescu(scp.port, write_series([us], tmp_path / "us"))
    # With --no-halt storescu exits 0 but reports the refused context for the file.
    assert "no presentation context for: (us)" in (result.stdout + result.stderr).lower()
    assert recorder.stored == []
    assert list(scp.spool.iter_studies()) == []


@pytest.mark.dcmtk
@pytest.mark.usefixtures("_has_storescu")
def test_dcmtk_storescu_disallowed_caller(
    scp: StorageSCP, recorder: Recorder, make_series: Any, write_series: Any, tmp_path: Path
) -> None:
    result = _storescu(scp.port, write_series(make_series(1), tmp_path / "x"), calling="EVIL")
    assert result.returncode != 0
    assert "reject" in (result.stdout + result.stderr).lower()
    assert recorder.stored == []


def test_truncated_pixel_data_is_refused_and_others_kept(
    scp: StorageSCP, recorder: Recorder, make_series: Any
) -> None:
    good, truncated = make_series(2)
    truncated.PixelData = truncated.PixelData[: len(truncated.PixelData) // 3]
    assoc = _associate(scp.port)
    statuses = [int(assoc.send_c_store(ds).Status) for ds in (truncated, good)]
    assoc.release()
    assert statuses == [Status.CANNOT_DECODE_DATA_SET, Status.SUCCESS]
    assert [s.sop_uid for s in recorder.stored] == [good.SOPInstanceUID]
    reasons = [p.read_text() for p in (scp.spool.root / "_quarantine").glob("*.reason.txt")]
    assert len(reasons) == 1 and "pixel data truncated" in reasons[0]
