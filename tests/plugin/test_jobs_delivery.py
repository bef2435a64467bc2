"""The job queue's delivery states, quiet-period restart, expected priors and migration
(issue 15, part 0: sending is its own retried state; only instances received while the node
runs count towards the quiet period; expected priors persisted)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from dicom_io.uids import InvalidUidError
from plugin.node import jobs as jobs_module
from plugin.node.jobs import SCHEMA_VERSION, Job, JobQueue, JobState, format_jobs_table

VERSION = "hepatica-test+bundles-1"
UID = "1.2.826.0.1.3680043.8.498.22222"


class Clock:
    def __init__(self) -> None:
        self.now = 2_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def queue(tmp_path: Path, clock: Clock) -> Iterator[JobQueue]:
    q = JobQueue(tmp_path / "jobs.sqlite3", VERSION, clock=clock)
    yield q
    q.close()


def sending(queue: JobQueue, uid: str = UID) -> Job:
    queue.enqueue(uid)
    job = queue.claim()
    assert job is not None
    return queue.results_ready(job.id, "/results/x", ["seg.dcm", "sr.dcm"], {"segment": 1.0})


def test_a_failed_delivery_keeps_the_results_and_never_reruns(queue: JobQueue,
                                                              clock: Clock) -> None:
    job = sending(queue)
    assert (job.state, job.send_attempts, job.results) == (JobState.SENDING, 1,
                                                          ("seg.dcm", "sr.dcm"))
    queue.record_sent(job.id, ["seg.dcm"])
    waiting = queue.send_failed(job.id, "archive down", retry_in=30)
    assert waiting.state is JobState.SEND_QUEUED and waiting.next_send_at == clock.now + 30
    assert waiting.attempts == 1 and waiting.unsent_results == ("sr.dcm",)
    assert queue.claim() is None  # inference is not run again
    assert queue.claim_delivery() is None  # not due yet
    clock.now += 30
    again = queue.claim_delivery()
    assert again is not None and (again.state, again.send_attempts) == (JobState.SENDING, 2)
    done = queue.mark(job.id, JobState.DONE, timings={"send": 0.2})
    assert done.state is JobState.DONE and done.error is None and done.attempts == 1
    assert done.timings == {"segment": 1.0, "send": 0.2}


def test_the_cap_leaves_results_unsent_until_resend(queue: JobQueue, clock: Clock) -> None:
    job = sending(queue)
    queue.record_sent(job.id, ["seg.dcm"])
    unsent = queue.send_failed(job.id, "archive down", retry_in=None)
    assert unsent.state is JobState.UNSENT and unsent.next_send_at is None
    clock.now += 10_000
    assert queue.claim_delivery() is None
    [again] = queue.resend(job.id)
    assert (again.state, again.send_attempts, again.sent) == (JobState.SEND_QUEUED, 0,
                                                             ("seg.dcm",))
    claimed = queue.claim_delivery()
    assert claimed is not None and claimed.unsent_results == ("sr.dcm",)
    queue.record_sent(job.id, ["sr.dcm"])
    queue.mark(job.id, JobState.DONE)
    [full] = queue.resend(job.id)  # a done job: the archive lost them, send everything
    assert full.sent == () and full.unsent_results == ("seg.dcm", "sr.dcm")


def test_resend_all_takes_only_undelivered_jobs(queue: JobQueue) -> None:
    first = sending(queue, UID + ".1")
    queue.send_failed(first.id, "down", retry_in=None)
    second = sending(queue, UID + ".2")
    queue.mark(second.id, JobState.DONE)
    queue.enqueue(UID + ".3")
    assert [job.id for job in queue.resend()] == [first.id]
    with pytest.raises(jobs_module.JobStateError):
        queue.resend(queue.by_study(UID + ".3").id)  # type: ignore[union-attr]


def test_a_crash_while_sending_resumes_the_delivery_not_the_run(queue: JobQueue,
                                                                clock: Clock) -> None:
    job = sending(queue)
    queue.enqueue(UID + ".9")
    running = queue.claim()
    assert running is not None
    recovered = {j.id: j for j in queue.recover(max_attempts=3)}
    assert recovered[job.id].state is JobState.SEND_QUEUED
    assert recovered[job.id].attempts == 1 and "interrupted" in (recovered[job.id].error or "")
    assert recovered[running.id].state is JobState.QUEUED
    assert queue.claim_delivery() is not None  # due at once


def test_new_instances_make_waiting_results_stale(queue: JobQueue) -> None:
    job = sending(queue)
    queue.send_failed(job.id, "down", retry_in=5)
    reopened = queue.record_instance(UID, new=True)
    assert reopened.state is JobState.RECEIVED
    assert (reopened.results, reopened.sent, reopened.send_attempts) == ((), (), 0)
    job = queue.enqueue(UID)
    job = queue.claim()  # type: ignore[assignment]
    queue.results_ready(job.id, "/r", ["a.dcm"])
    queue.record_instance(UID, new=True)  # arrives while sending: run again afterwards
    after = queue.send_failed(job.id, "down", retry_in=5)
    assert after.state is JobState.RECEIVED and after.results == ()


def test_restart_clocks_gives_a_study_a_full_quiet_period_again(queue: JobQueue,
                                                                clock: Clock) -> None:
    queue.record_instance(UID, new=True)
    clock.now += 3600  # the node was down for an hour after half the study arrived
    assert queue.restart_clocks() == 1
    assert queue.promote_stable(30) == []
    clock.now += 31
    assert [job.study_uid for job in queue.promote_stable(30)] == [UID]


def test_expected_priors_survive_a_restart(tmp_path: Path) -> None:
    first = JobQueue(tmp_path / "jobs.sqlite3", VERSION)
    first.expect_prior(UID)
    first.close()
    second = JobQueue(tmp_path / "jobs.sqlite3", "another-version")
    try:
        assert second.is_expected_prior(UID) and not second.is_expected_prior(UID + ".1")
    finally:
        second.close()


@pytest.mark.parametrize("bad", ["../../canary", "/tmp/x", "1.2..3", ""])
def test_a_study_uid_that_is_not_a_uid_never_becomes_a_job(queue: JobQueue, bad: str) -> None:
    with pytest.raises(InvalidUidError):
        queue.record_instance(bad, new=True)
    with pytest.raises(InvalidUidError):
        queue.enqueue(bad)
    assert queue.list() == []


def test_a_version_1_database_is_migrated_keeping_its_jobs(tmp_path: Path) -> None:
    database = tmp_path / "jobs.sqlite3"
    raw = sqlite3.connect(database)
    raw.executescript(jobs_module._MIGRATIONS[0])
    raw.execute("INSERT INTO jobs (study_uid, pipeline_version, state, attempts, created_at,"
                " updated_at, last_instance_at) VALUES (?, ?, 'done', 1, 1, 2, 1)",
                (UID, VERSION))
    raw.execute("PRAGMA user_version = 1")
    raw.commit()
    raw.close()
    queue = JobQueue(database, VERSION)
    try:
        [job] = queue.list()
        assert (job.study_uid, job.state, job.attempts, job.results) == (UID, JobState.DONE,
                                                                         1, ())
        assert queue.enqueue(UID + ".5").id > job.id
    finally:
        queue.close()
    with sqlite3.connect(database) as check:
        assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_jobs_table_shows_delivery_progress(queue: JobQueue) -> None:
    job = sending(queue)
    queue.record_sent(job.id, ["seg.dcm"])
    waiting = queue.send_failed(job.id, "C-STORE refused: archive down", retry_in=60)
    console = Console(width=220, record=True, color_system=None)
    console.print(format_jobs_table([waiting]))
    text = console.export_text()
    assert "send_queued" in text and "1/2 (1×)" in text and "archive down" in text


def test_results_of_an_older_version_are_still_delivered(tmp_path: Path) -> None:
    old = JobQueue(tmp_path / "jobs.sqlite3", "hepatica-old")
    job = sending(old)
    old.close()
    new = JobQueue(tmp_path / "jobs.sqlite3", "hepatica-new")  # upgraded while sending
    try:
        [resumed] = new.recover(max_attempts=3)
        assert resumed.id == job.id and resumed.state is JobState.SEND_QUEUED
        claimed = new.claim_delivery()
        assert claimed is not None and claimed.id == job.id
        assert new.claim() is None  # but no old-version job is run again
    finally:
        new.close()
