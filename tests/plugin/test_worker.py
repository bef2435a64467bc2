"""The one worker loop (issue 10) and its fault handling (issue 15 part 0): a job's error fails
the job, never the thread; a full disk under the job database is survived; delivery is its own
retried state with a cap, delivered exactly once to a real DCMTK storescp."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dicom_io.sender import Peer
from plugin.cli.demo import free_port, start_archive
from plugin.node.config import HepaticaConfig, PipelineConfig
from plugin.node.jobs import Job, JobQueue, JobState
from plugin.node.transports import DimseOutbox
from plugin.node.worker import DeliveryPolicy, Worker, pipeline_settings
from plugin.pipeline.run import PipelineError
from tests.plugin.node_helpers import (
    STUDY,
    fill,
    small_filesystem,
    sop_uids,
    tiny_ct,
    wait_until,
)

VERSION = "hepatica-test+worker"


@dataclass
class RaisingInbox:
    """An inbox whose study raises ``error``; with a ``folder``, it yields it first and raises
    when the run ends, standing for a pipeline error that quotes header values."""

    error: BaseException
    folder: Path | None = None
    calls: list[int] = field(default_factory=list)
    timing_key: str | None = None

    def tick(self, queue: JobQueue) -> None:
        pass

    @contextmanager
    def study(self, job: Job) -> Iterator[Path]:
        self.calls.append(job.id)
        if self.folder is None:
            raise self.error
        try:
            yield self.folder
        finally:
            raise self.error


class NoOutbox:
    name, timing_key = "nowhere", "send"

    def deliver(self, files: object, acknowledged: object) -> None:
        raise AssertionError("nothing should be delivered")


def config(tmp_path: Path, **pipeline: object) -> HepaticaConfig:
    return HepaticaConfig(data_dir=tmp_path / "data",
                          pipeline=PipelineConfig(**pipeline))  # type: ignore[arg-type]


def worker(cfg: HepaticaConfig, queue: JobQueue, inbox: object, outbox: object,
           policy: DeliveryPolicy | None = None) -> Worker:
    return Worker(cfg, queue, inbox, outbox, pipeline_settings(cfg, None),  # type: ignore[arg-type]
                  policy=policy or DeliveryPolicy(0.2, 0.4, 5))


def test_job_errors_fail_the_job_never_the_thread(tmp_path: Path) -> None:
    cfg = config(tmp_path, max_attempts=2, workers=1)
    queue = JobQueue(cfg.database, VERSION)
    inbox = RaisingInbox(RuntimeError("disk on fire"))
    node = worker(cfg, queue, inbox, NoOutbox())
    node.start()
    try:
        transient = queue.enqueue(STUDY)
        wait_until(lambda: queue.get(transient.id).state is JobState.DEAD)  # type: ignore[union-attr]
        assert inbox.calls.count(transient.id) == 2
        inbox.error = PipelineError("no arterial series")
        permanent = queue.enqueue(STUDY + ".1")
        wait_until(lambda: queue.get(permanent.id).state is JobState.FAILED)  # type: ignore[union-attr]
        assert inbox.calls.count(permanent.id) == 1
        assert len(node.alive) == 3  # the processing, delivery and heartbeat threads
    finally:
        node.stop()


def test_errors_quoting_patient_values_are_redacted(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    cfg = config(tmp_path, max_attempts=1)
    study = tmp_path / "study"
    tiny_ct(study / "1.dcm", PatientName="Doe^Jane", PatientID="PAT-7788",
            PatientBirthDate="19610723")
    queue = JobQueue(cfg.database, VERSION)
    inbox = RaisingInbox(ValueError("bad DA '1961-07-23' for Doe^Jane, PAT-7788"), study)
    job = queue.enqueue(STUDY)
    claimed = queue.claim()
    assert claimed is not None
    with caplog.at_level(logging.DEBUG):
        dead = worker(cfg, queue, inbox, NoOutbox()).run_job(claimed)
    assert dead is not None and dead.id == job.id and dead.state is JobState.DEAD
    stored = sqlite3.connect(cfg.database).execute("SELECT error FROM jobs").fetchone()[0]
    for secret in ("1961-07-23", "Doe", "Jane", "PAT-7788"):
        assert secret not in stored and secret not in caplog.text
    assert "[date]" in stored and "[id " in stored
    queue.close()


def test_a_full_disk_under_the_job_database_is_survived(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    try:
        mount = small_filesystem(tmp_path / "fs", "2m")
        fs = mount.__enter__()
    except PermissionError as exc:
        pytest.skip(f"needs a tmpfs mount (root with CAP_SYS_ADMIN): {exc}")
    try:
        cfg = config(tmp_path, workers=1)
        queue = JobQueue(fs / "jobs.sqlite3", VERSION)
        job = queue.enqueue(STUDY)
        with sqlite3.connect(fs / "jobs.sqlite3") as raw:  # empty the WAL: writes must grow it
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        filler = fill(fs)
        inbox = RaisingInbox(PipelineError("no arterial series"))
        node = worker(cfg, queue, inbox, NoOutbox())
        with caplog.at_level(logging.INFO):
            node.start()
            try:
                wait_until(lambda: "database or disk is full" in caplog.text, 10)
                assert queue.get(job.id).state is JobState.QUEUED  # type: ignore[union-attr]
                assert inbox.calls == [] and len(node.alive) == 3
                filler.unlink()  # space returns: the same threads carry on
                wait_until(lambda: queue.get(job.id).state is JobState.FAILED, 20)  # type: ignore[union-attr]
                assert inbox.calls == [job.id] and len(node.alive) == 3
                assert "the job queue works again" in caplog.text
            finally:
                node.stop()
    finally:
        mount.__exit__(None, None, None)


def results(tmp_path: Path, count: int = 3) -> tuple[Path, list[str]]:
    folder = tmp_path / "results" / STUDY
    names = [f"r{n}.dcm" for n in range(count)]
    for name in names:
        tiny_ct(folder / name)
    return folder, names


def held_job(queue: JobQueue, folder: Path, names: list[str]) -> Job:
    queue.enqueue(STUDY)
    job = queue.claim()
    assert job is not None
    return queue.results_ready(job.id, str(folder), names)


@pytest.mark.network
@pytest.mark.dcmtk
def test_results_wait_for_the_archive_and_arrive_once(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    port = free_port()
    outbox = DimseOutbox(Peer("ARCHIVE", "127.0.0.1", port), retries=0, backoff_s=0.1)
    queue = JobQueue(cfg.database, VERSION)
    folder, names = results(tmp_path)
    node = worker(cfg, queue, RaisingInbox(AssertionError("no run")), outbox)
    job = node.deliver(held_job(queue, folder, names))  # the archive is down
    assert job is not None and job.state is JobState.SEND_QUEUED and job.error
    node.start()
    try:
        wait_until(lambda: queue.get(job.id).send_attempts >= 3)  # type: ignore[union-attr]
        assert queue.get(job.id).state in (JobState.SEND_QUEUED, JobState.SENDING)  # type: ignore[union-attr]
        archive = start_archive(tmp_path / "archive", port)
        try:
            wait_until(lambda: queue.get(job.id).state is JobState.DONE)  # type: ignore[union-attr]
        finally:
            archive.terminate()
            archive.wait(10)
    finally:
        node.stop()
    assert sop_uids(tmp_path / "archive") == sop_uids(folder)  # each result exactly once
    done = JobQueue(cfg.database, VERSION).get(job.id)
    assert done is not None and done.attempts == 1 and set(done.sent) == set(names)


@pytest.mark.network
@pytest.mark.dcmtk
def test_the_cap_leaves_results_unsent_and_resend_delivers_them(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    port = free_port()
    outbox = DimseOutbox(Peer("ARCHIVE", "127.0.0.1", port), retries=0, backoff_s=0.1)
    queue = JobQueue(cfg.database, VERSION)
    folder, names = results(tmp_path)
    node = worker(cfg, queue, RaisingInbox(AssertionError("no run")), outbox,
                  DeliveryPolicy(0.1, 0.1, 2))
    job = node.deliver(held_job(queue, folder, names))
    assert job is not None
    node.start()
    try:
        wait_until(lambda: queue.get(job.id).state is JobState.UNSENT)  # type: ignore[union-attr]
        assert queue.get(job.id).send_attempts == 2  # type: ignore[union-attr]
        archive = start_archive(tmp_path / "archive", port)
        try:
            assert [j.id for j in queue.resend()] == [job.id]  # what `hepatica resend --all` does
            wait_until(lambda: queue.get(job.id).state is JobState.DONE)  # type: ignore[union-attr]
        finally:
            archive.terminate()
            archive.wait(10)
    finally:
        node.stop()
    assert sop_uids(tmp_path / "archive") == sop_uids(folder)
