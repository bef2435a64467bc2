"""Issue 13 parts 1-2 on a real node: a SIGKILL right after the last acknowledgement loses
nothing (every acknowledged instance whole in the spool, the job recorded with all of them,
processed once after the restart), and a study holding the phases the bundle needs starts
long before its quiet period ends."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from plugin.node.jobs import JobQueue, JobState
from tests.integration.nodes import (
    free_port,
    start_archive,
    start_node,
    stop,
    storescu,
    wait_for_job,
    write_config,
)

pytestmark = [pytest.mark.slow, pytest.mark.network, pytest.mark.dcmtk]

FINISHED = {JobState.DONE, JobState.FAILED, JobState.DEAD}
QUIET_SECONDS = 120.0
"""Far longer than the test: a job that ran did not wait for the quiet period."""


@pytest.fixture
def procs() -> Iterator[list[object]]:
    started: list[object] = []
    yield started
    for proc in started:
        stop(proc, signal.SIGKILL)  # type: ignore[arg-type]


def _study_uid(folder: Path) -> str:
    return str(pydicom.dcmread(next(folder.rglob("*.dcm")), stop_before_pixels=True)
               .StudyInstanceUID)


def test_sigkill_after_last_ack_loses_nothing(procs: list[object], tmp_path: Path,
                                              phantom_study: Path) -> None:
    port, archive_port = free_port(), free_port()
    procs.append(start_archive(tmp_path / "archive", archive_port))
    config = write_config(tmp_path / "hepatica.toml", port=port, archive_port=archive_port,
                          data_dir=tmp_path / "data", stable_seconds=QUIET_SECONDS)
    node = start_node(config, tmp_path / "node.log", port)
    procs.append(node)
    dicom = phantom_study / "dicom"
    sent = storescu([dicom], port)
    node.send_signal(signal.SIGKILL)  # right after the last acknowledgement
    node.wait(30)
    assert sent.returncode == 0, sent.stdout[-2000:] + sent.stderr[-2000:]
    files = list(dicom.rglob("*.dcm"))
    spooled = {p.stem: p for p in (tmp_path / "data" / "spool").rglob("*.dcm")
               if "_quarantine" not in p.parts}
    for path in files:
        original = pydicom.dcmread(path)
        kept = pydicom.dcmread(spooled[str(original.SOPInstanceUID)])
        assert kept.PixelData == original.PixelData
    uid = _study_uid(dicom)
    queue = JobQueue(tmp_path / "data" / "jobs.sqlite3", pipeline_version="")
    try:
        [job] = [j for j in queue.list() if j.study_uid == uid]
    finally:
        queue.close()
    assert job.instances == len(files)
    node = start_node(config, tmp_path / "node.log", port)  # the study is processed, once
    procs.append(node)
    done = wait_for_job(tmp_path / "data" / "jobs.sqlite3", uid, FINISHED, 300)
    assert done.state is JobState.DONE and done.attempts == 1, done.error
    assert done.instances == len(files)


def test_study_with_needed_phases_starts_before_the_quiet_period(
        procs: list[object], tmp_path: Path, phantom_study: Path) -> None:
    """AP and PVP (what the shipped bundle reads) start the job seconds after they arrive;
    the late DP series re-opens the study, which is processed again with it."""
    port, archive_port = free_port(), free_port()
    procs.append(start_archive(tmp_path / "archive", archive_port))
    config = write_config(tmp_path / "hepatica.toml", port=port, archive_port=archive_port,
                          data_dir=tmp_path / "data", stable_seconds=QUIET_SECONDS)
    procs.append(start_node(config, tmp_path / "node.log", port))
    dicom = phantom_study / "dicom"
    uid, database = _study_uid(dicom), tmp_path / "data" / "jobs.sqlite3"
    acknowledged = time.monotonic()
    assert storescu([dicom / "AP", dicom / "PVP"], port).returncode == 0
    first = wait_for_job(database, uid, FINISHED, QUIET_SECONDS - 20)
    assert first.state is JobState.DONE, first.error
    assert time.monotonic() - acknowledged < QUIET_SECONDS
    assert storescu([dicom / "DP"], port).returncode == 0
    time.sleep(1.0)
    second = wait_for_job(database, uid, FINISHED, QUIET_SECONDS - 20)
    assert second.state is JobState.DONE, second.error
    assert second.instances == len(list(dicom.glob("[AD]P/*.dcm"))) + len(
        list(dicom.glob("PVP/*.dcm")))
    assert "started without waiting" in (tmp_path / "node.log").read_text(errors="replace")
