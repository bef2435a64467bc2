"""A real Orthanc (Debian's 1.10 + orthanc-python 4.0) with the plugin, and the worker.

Done-when of issue 7: a phantom sent with storescu gets SEG, SR and heatmaps in the same
Orthanc study, once; the REST routes report the job; restarting Orthanc or the worker
mid-job loses nothing and duplicates nothing.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.orthanc.conftest import PHANTOM_SEEDS, Node, phantom
from tests.orthanc.orthanc_server import storescu

pytestmark = [pytest.mark.orthanc, pytest.mark.network, pytest.mark.dcmtk, pytest.mark.slow]

JOB_TIMEOUT_S = 300.0
RESULT_MODALITIES = Counter({"SEG": 1, "SR": 1})


def study_uid_of(folder: Path) -> str:
    first = next(p for p in sorted((folder / "dicom").rglob("*")) if p.is_file())
    return str(pydicom.dcmread(first, stop_before_pixels=True).StudyInstanceUID)


def job_of(node: Node, study_uid: str) -> dict[str, Any] | None:
    status, body = node.orthanc.request("GET", f"/hepatica/jobs?study={study_uid}")
    assert status == 200, body
    jobs = json.loads(body)["jobs"]
    return jobs[0] if jobs else None


def wait_for(node: Node, study_uid: str, states: set[str], timeout: float = JOB_TIMEOUT_S,
             min_attempts: int = 0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    job = None
    while time.monotonic() < deadline:
        try:
            job = job_of(node, study_uid)
        except OSError:  # Orthanc restarting
            job = None
        if job is not None and job["state"] in states and job["attempts"] >= min_attempts:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job of {study_uid} not in {states} after {timeout} s: {job}\n"
                         + node.logs())


def wait_for_text(path: Path, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.5)
    raise AssertionError(f"{text!r} not in {path} after {timeout} s")


def result_series(node: Node, study_uid: str, source_count: int) -> dict[str, list[str]]:
    """Modality → SOP Instance UIDs of the study's non-source series, from Orthanc's index."""
    study_id = json.loads(node.orthanc.request("POST", "/tools/lookup", study_uid.encode(),
                                               "text/plain")[1])[0]["ID"]
    found: dict[str, list[str]] = {}
    series = node.orthanc.get(f"/studies/{study_id}/series")
    for entry in series:
        tags = entry["MainDicomTags"]
        if tags.get("Manufacturer") != "Hepatica":
            continue
        for instance in entry["Instances"]:
            uid = node.orthanc.get(f"/instances/{instance}")["MainDicomTags"]["SOPInstanceUID"]
            found.setdefault(tags["Modality"], []).append(uid)
    assert len(series) - len(found) == source_count, [s["MainDicomTags"] for s in series]
    return found


def assert_results_once(node: Node, study_uid: str, heatmaps: int = 4) -> None:
    found = result_series(node, study_uid, source_count=4)
    assert {k: len(v) for k, v in found.items()} == {"SEG": 1, "SR": 1, "OT": heatmaps}
    every = [uid for uids in found.values() for uid in uids]
    assert len(every) == len(set(every))


def test_phantom_gets_seg_sr_heatmaps_once_and_routes_report_it(
    node: Node, phantom_dirs: dict[int, Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    study = phantom(phantom_dirs, tmp_path_factory, PHANTOM_SEEDS[0])
    uid = study_uid_of(study)
    storescu(study / "dicom", node.orthanc.dicom_port)
    job = wait_for(node, uid, {"done", "failed", "dead"})
    assert job["state"] == "done", job
    assert job["attempts"] == 1
    assert {"download", "segment", "upload", "total"} <= set(job["timings"])
    # Our results make the study change again; the next stable event must not re-queue it.
    time.sleep(node.orthanc.stable_age + 3)
    again = job_of(node, uid)
    assert again is not None and again["state"] == "done" and again["attempts"] == 1
    assert again["updated_at"] == job["updated_at"]
    assert "source instances unchanged" in node.orthanc.log_path.read_text(errors="replace")
    assert_results_once(node, uid)

    status, body = node.orthanc.request("GET", f"/hepatica/jobs/{job['id']}")
    assert status == 200 and json.loads(body)["study_uid"] == uid
    status, body = node.orthanc.request("GET", "/hepatica/health")
    health = json.loads(body)
    assert status == 200, health
    assert health["worker"]["pid"] == node.worker.pid  # type: ignore[union-attr]

    status, body = node.orthanc.request("POST", f"/hepatica/studies/{uid}/clinical",
                                        json.dumps({"AFP_ng_ml": 412.5, "ChildPugh": "A"}
                                                   ).encode())
    assert status == 200, body
    assert json.loads(body)["variables"] == {"AFP_ng_ml": 412.5, "ChildPugh": "A"}
    status, body = node.orthanc.request("POST", f"/hepatica/studies/{uid}/clinical", b"[1]")
    assert status == 400 and b"JSON object" in body


def test_restarts_of_orthanc_and_worker_lose_and_duplicate_nothing(
    node: Node, phantom_dirs: dict[int, Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    study = phantom(phantom_dirs, tmp_path_factory, PHANTOM_SEEDS[1])
    uid = study_uid_of(study)
    # 1. Orthanc stops before the study is stable: no stable event will ever come for it;
    #    the plugin's start-up catch-up finds it in Orthanc's change log.
    storescu(study / "dicom", node.orthanc.dicom_port)
    node.orthanc.stop()
    assert node.orthanc.proc is not None and node.orthanc.proc.returncode == 0
    node.orthanc.start()
    # 2. Orthanc is down while the worker runs the job; it comes back only once the worker
    #    has found it unreachable (uploading), and the worker carries on.
    wait_for(node, uid, {"running", "sending"})
    assert "catch-up: study" in node.orthanc.log_path.read_text(errors="replace")
    node.orthanc.stop()
    wait_for_text(node.worker_log, "retrying in", JOB_TIMEOUT_S)
    node.orthanc.start()
    job = wait_for(node, uid, {"done", "failed", "dead"})
    assert job["state"] == "done", job
    assert job["attempts"] == 1
    assert_results_once(node, uid)
    # 3. The worker is killed mid-job (a re-run): the next worker recovers the job.
    status, body = node.orthanc.request("POST", f"/hepatica/studies/{uid}/rerun", b"")
    assert status == 200, body
    wait_for(node, uid, {"running", "sending"})
    assert node.worker is not None
    node.worker.send_signal(signal.SIGKILL)
    node.worker.wait(10)
    node.start_worker()
    job = wait_for(node, uid, {"done", "failed", "dead"}, min_attempts=2)
    assert job["state"] == "done" and job["attempts"] == 2, job
    assert_results_once(node, uid)
