"""Issue 14 part 3: results returned by STOW-RS through the node, to a real Orthanc.

`hepatica serve` with ``[destination] kind = "stow-rs"`` sends a phantom's results to Orthanc's
DICOMweb plugin (a plain archive, no Hepatica plugin). Orthanc is down at first: the results
wait as ``send_queued`` and arrive once it is up (the durable delivery state of C-STORE).
The same kept files then go out again through the C-STORE path (`hepatica resend` to DCMTK
storescp): what Orthanc gives back is byte for byte the node's files, and what storescp got
is the same datasets. A second STOW-RS delivery leaves one copy of each.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.filebase import DicomBytesIO

from plugin.node.jobs import Job, JobState
from tests.integration.nodes import start_archive, start_node, stop, storescu, wait_for_job
from tests.integration.scale_helpers import SMALL_RESULTS, node_config, small_study
from tests.orthanc.orthanc_server import (
    DICOMWEB_PLUGIN,
    ORTHANC,
    PASSWORD,
    USER,
    OrthancServer,
    free_port,
)

pytestmark = [pytest.mark.network, pytest.mark.orthanc, pytest.mark.dcmtk, pytest.mark.slow]

SEED = 424_301
FINISHED = {JobState.DONE, JobState.FAILED, JobState.DEAD, JobState.UNSENT}


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[OrthancServer]:
    missing = [str(p) for p in (ORTHANC, DICOMWEB_PLUGIN) if not p.exists()]
    if missing:
        pytest.skip(f"Orthanc or its DICOMweb plugin not installed ({', '.join(missing)})")
    server = OrthancServer(tmp_path / "orthanc", tmp_path / "unused.toml", python_plugin=False)
    yield server  # not started: the test starts it late
    server.stop()


def _stow_config(path: Path, data_dir: Path, port: int, orthanc: OrthancServer) -> Path:
    return node_config(path, data_dir=data_dir, port=port, extra=f"""[destination]
kind = "stow-rs"
url = "{orthanc.url}/dicom-web"
username = "{USER}"
retries = 0
backoff_seconds = 0.2
redeliver_seconds = 1.0
redeliver_max_seconds = 2.0
timeout_seconds = 30.0
""")


def _cstore_config(path: Path, data_dir: Path, port: int, archive_port: int) -> Path:
    return node_config(path, data_dir=data_dir, port=port, extra=f"""[destination]
kind = "c-store"
ae_title = "ARCHIVE"
port = {archive_port}
retries = 2
backoff_seconds = 0.5
""")


def _orthanc_file(server: OrthancServer, sop_uid: str) -> bytes:
    status, body = server.request("POST", "/tools/lookup", sop_uid.encode(), "text/plain")
    assert status == 200, body
    (match,) = [m for m in json.loads(body) if m["Type"] == "Instance"]
    status, data = server.request("GET", f"/instances/{match['ID']}/file")
    assert status == 200
    return data


def _resend(config: Path, job_id: int) -> None:
    done = subprocess.run([sys.executable, "-m", "plugin.cli", "resend", str(job_id),
                           "--config", str(config)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_results_reach_orthanc_by_stow_rs_and_match_the_c_store_path(
        orthanc: OrthancServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study, study_uid = small_study(tmp_path / "study", SEED)
    data_dir, port = tmp_path / "node", free_port()
    config = _stow_config(tmp_path / "stow.toml", data_dir, port, orthanc)
    log = tmp_path / "serve.log"
    monkeypatch.setenv("HEPATICA_DESTINATION__PASSWORD", PASSWORD)  # the documented way
    node = start_node(config, log, port)
    try:
        assert storescu([study], port).returncode == 0
        # Orthanc is not up: the first delivery fails and the results are kept for later
        waiting = wait_for_job(data_dir / "jobs.sqlite3", study_uid, {JobState.SEND_QUEUED,
                                                                     *FINISHED}, timeout=180)
        assert waiting.state == JobState.SEND_QUEUED, waiting
        assert "STOW-RS" in (waiting.error or "") and waiting.sent == ()
        orthanc.start()
        job = wait_for_job(data_dir / "jobs.sqlite3", study_uid, FINISHED, timeout=120)
        assert job.state == JobState.DONE, job.error
        assert job.send_attempts >= 2 and job.attempts == 1  # delivered again, never re-run
        kept = sorted(Path(job.result_dir or "").joinpath(name) for name in job.results)
        assert len(kept) == SMALL_RESULTS
        for path in kept:  # Orthanc keeps the Part 10 file exactly as the node wrote it
            uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            assert _orthanc_file(orthanc, uid) == path.read_bytes(), path.name
        # idempotent: a second STOW-RS delivery of the same results adds nothing
        _resend(config, job.id)
        again = _redelivered(data_dir, study_uid, job.updated_at)
        assert again.state == JobState.DONE and again.attempts == 1, again.error
        stored = orthanc.get(f"/studies/{_orthanc_study(orthanc, study_uid)}/instances")
        result_instances = [i for i in stored if i["MainDicomTags"]["SOPInstanceUID"]
                            in {_uid(p) for p in kept}]
        assert len(result_instances) == SMALL_RESULTS
    finally:
        stop(node)
    # the C-STORE path: the same kept results, resent to DCMTK storescp
    archive_port = free_port()
    archive = start_archive(tmp_path / "archive", archive_port)
    try:
        cstore = _cstore_config(tmp_path / "cstore.toml", data_dir, port, archive_port)
        _resend(cstore, job.id)
        node = start_node(cstore, log, port)
        try:
            assert _redelivered(data_dir, study_uid, again.updated_at).state == JobState.DONE
            received = _wait_files(tmp_path / "archive", SMALL_RESULTS)
        finally:
            stop(node)
    finally:
        stop(archive)
    by_uid = {_uid(p): p for p in received}
    assert set(by_uid) == {_uid(p) for p in kept}
    for path in kept:
        via_stow = pydicom.dcmread(DicomBytesIO(_orthanc_file(orthanc, _uid(path))))
        via_cstore = pydicom.dcmread(by_uid[_uid(path)])
        assert via_stow == via_cstore, path.name  # every element, pixel data included
    assert "Doe" not in log.read_text()


def _redelivered(data_dir: Path, study_uid: str, after: float, timeout: float = 90.0) -> Job:
    """The job once a delivery later than ``after`` has finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = wait_for_job(data_dir / "jobs.sqlite3", study_uid, FINISHED, timeout=timeout)
        if job.updated_at > after:
            return job
        time.sleep(0.2)
    raise AssertionError("the resent results were not delivered")


def _uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _orthanc_study(server: OrthancServer, study_uid: str) -> str:
    status, body = server.request("POST", "/tools/lookup", study_uid.encode(), "text/plain")
    assert status == 200
    return str(next(m["ID"] for m in json.loads(body) if m["Type"] == "Study"))


def _wait_files(folder: Path, count: int, timeout: float = 60.0) -> list[Path]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        if len(files) >= count:
            return files
        time.sleep(0.2)
    raise AssertionError(f"storescp received {len(files)} of {count} files")
