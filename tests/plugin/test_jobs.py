"""The SQLite job queue: lifecycle, duplicates, stability, contention and crash recovery."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import threading
from collections.abc import Iterator
from multiprocessing.synchronize import Barrier as ProcessBarrier
from pathlib import Path

import pytest
from rich.console import Console

from plugin.node.jobs import (
    SCHEMA_VERSION,
    Job,
    JobQueue,
    JobState,
    JobStateError,
    format_jobs_table,
)

VERSION = "hepatica-0.1.0+bundles-1"
UID = "1.2.826.0.1.3680043.8.498.11111111111111111111"


class FakeClock:
    """Time that moves only when the test says so."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "data" / "jobs.sqlite3"


@pytest.fixture
def queue(database: Path, clock: FakeClock) -> Iterator[JobQueue]:
    jobs = JobQueue(database, VERSION, clock=clock)
    yield jobs
    jobs.close()


def uid(n: int) -> str:
    return f"1.2.826.0.1.3680043.8.498.{n}"


def test_database_is_wal_with_a_schema_version(queue: JobQueue, database: Path) -> None:
    with sqlite3.connect(database) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    raw.close()


def test_newer_schema_is_refused(database: Path) -> None:
    JobQueue(database, VERSION).close()
    raw = sqlite3.connect(database)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(RuntimeError, match="newer"):
        JobQueue(database, VERSION)


def test_full_lifecycle(queue: JobQueue, clock: FakeClock) -> None:
    job = queue.record_instance(UID, new=True)
    assert (job.state, job.instances, job.attempts) == (JobState.RECEIVED, 1, 0)
    assert job.study_uid == UID and job.pipeline_version == VERSION
    clock.advance(31)
    assert [j.id for j in queue.promote_stable(30)] == [job.id]
    claimed = queue.claim()
    assert claimed is not None and claimed.id == job.id
    assert (claimed.state, claimed.attempts) == (JobState.RUNNING, 1)
    assert queue.claim() is None
    sending = queue.mark(job.id, JobState.SENDING, timings={"series": 1.5, "inference": 3.0})
    assert sending.state is JobState.SENDING
    done = queue.mark(job.id, JobState.DONE, timings={"send": 0.5}, result_dir="/r/1")
    assert done.state is JobState.DONE
    assert done.timings == {"series": 1.5, "inference": 3.0, "send": 0.5}
    assert done.result_dir == "/r/1" and done.error is None
    assert queue.get(job.id) == done == queue.by_study(UID)


def test_duplicates_make_one_job_and_never_reopen(queue: JobQueue, clock: FakeClock) -> None:
    first = queue.record_instance(UID, new=True)
    clock.advance(5)
    again = queue.record_instance(UID, new=False)
    assert again == first  # a duplicate changes nothing, not even the stability clock
    queue.enqueue(UID)
    running = queue.claim()
    assert running is not None
    queue.mark(running.id, JobState.DONE)
    clock.advance(100)
    after = queue.record_instance(UID, new=False)
    assert after.state is JobState.DONE
    assert len(queue.list(limit=10)) == 1


def test_new_instance_reopens_a_finished_job(queue: JobQueue, clock: FakeClock) -> None:
    queue.enqueue(UID)
    job = queue.claim()
    assert job is not None
    queue.fail(job.id, "boom", max_attempts=1)
    assert queue.get(job.id) is not None
    clock.advance(60)
    reopened = queue.record_instance(UID, new=True)
    assert reopened.id == job.id
    assert (reopened.state, reopened.attempts, reopened.error) == (JobState.RECEIVED, 0, None)
    assert reopened.last_instance_at == clock.now and reopened.instances == 1


def test_new_instance_while_queued_waits_for_stability_again(
    queue: JobQueue, clock: FakeClock
) -> None:
    queue.record_instance(UID, new=True)
    clock.advance(31)
    queue.promote_stable(30)
    clock.advance(1)
    assert queue.record_instance(UID, new=True).state is JobState.RECEIVED
    assert queue.claim() is None


def test_new_instance_while_running_runs_again_after(queue: JobQueue, clock: FakeClock) -> None:
    queue.enqueue(UID)
    job = queue.claim()
    assert job is not None
    assert queue.record_instance(UID, new=True).state is JobState.RUNNING
    finished = queue.mark(job.id, JobState.DONE)
    assert (finished.state, finished.attempts) == (JobState.RECEIVED, 0)
    clock.advance(31)
    assert [j.id for j in queue.promote_stable(30)] == [job.id]


def test_enqueue_while_running_requeues_after_the_run(queue: JobQueue) -> None:
    queue.enqueue(UID)
    job = queue.claim()
    assert job is not None
    assert queue.enqueue(UID).state is JobState.RUNNING
    assert queue.mark(job.id, JobState.DONE).state is JobState.QUEUED
    rerun = queue.claim()
    assert rerun is not None and rerun.attempts == 1
    assert queue.mark(job.id, JobState.DONE).state is JobState.DONE


def test_enqueue_creates_and_requeues_finished_jobs(queue: JobQueue) -> None:
    created = queue.enqueue(UID)
    assert (created.state, created.instances) == (JobState.QUEUED, 0)
    assert queue.enqueue(UID) == created
    job = queue.claim()
    assert job is not None
    queue.mark(job.id, JobState.FAILED, error="no arterial phase")
    again = queue.enqueue(UID)
    assert (again.id, again.state, again.attempts, again.error) == (
        job.id,
        JobState.QUEUED,
        0,
        None,
    )


def test_promote_stable_uses_the_clock(queue: JobQueue, clock: FakeClock) -> None:
    early = queue.record_instance(uid(1), new=True)
    clock.advance(20)
    late = queue.record_instance(uid(2), new=True)
    clock.advance(10)
    assert [j.id for j in queue.promote_stable(30)] == [early.id]
    assert queue.promote_stable(30) == []
    clock.advance(19.9)
    assert queue.promote_stable(30) == []
    clock.advance(0.1)
    promoted = queue.promote_stable(30)
    assert [j.id for j in promoted] == [late.id]
    assert promoted[0].state is JobState.QUEUED


def test_claim_takes_the_oldest_queued_job(queue: JobQueue, clock: FakeClock) -> None:
    ids = []
    for n in range(3):
        ids.append(queue.enqueue(uid(n)).id)
        clock.advance(1)
    claimed = [queue.claim() for _ in range(3)]
    assert [job.id for job in claimed if job is not None] == ids


def test_fail_retries_then_dies(queue: JobQueue) -> None:
    queue.enqueue(UID)
    for attempt in (1, 2):
        job = queue.claim()
        assert job is not None and job.attempts == attempt
        failed = queue.fail(job.id, f"error {attempt}", max_attempts=3)
        assert (failed.state, failed.error) == (JobState.QUEUED, f"error {attempt}")
    job = queue.claim()
    assert job is not None and job.attempts == 3
    dead = queue.fail(job.id, "error 3", max_attempts=3)
    assert (dead.state, dead.attempts, dead.error) == (JobState.DEAD, 3, "error 3")
    assert queue.claim() is None


def test_failed_job_goes_to_the_back(queue: JobQueue, clock: FakeClock) -> None:
    first = queue.enqueue(uid(1))
    clock.advance(1)
    second = queue.enqueue(uid(2))
    job = queue.claim()
    assert job is not None and job.id == first.id
    clock.advance(1)
    queue.fail(job.id, "transient", max_attempts=3)
    nxt = queue.claim()
    assert nxt is not None and nxt.id == second.id


def test_illegal_transitions_raise(queue: JobQueue) -> None:
    job = queue.enqueue(UID)
    with pytest.raises(JobStateError, match="queued"):
        queue.mark(job.id, JobState.DONE)
    with pytest.raises(JobStateError):
        queue.fail(job.id, "x", max_attempts=3)
    with pytest.raises(JobStateError, match="enqueue"):
        queue.mark(job.id, JobState.QUEUED)
    with pytest.raises(KeyError):
        queue.mark(12345, JobState.DONE)


def test_versions_are_separate_jobs(database: Path, queue: JobQueue) -> None:
    other = JobQueue(database, "hepatica-0.2.0")
    try:
        a = queue.record_instance(UID, new=True)
        b = other.record_instance(UID, new=False)
        assert a.id != b.id and b.instances == 0
        assert [j.id for j in other.list(pipeline_version="hepatica-0.2.0")] == [b.id]
        assert {j.id for j in other.list()} == {a.id, b.id}  # history: every version
        assert other.by_study(UID) == b
        queue.enqueue(UID)
        assert other.claim() is None  # a worker only takes its own version's jobs
    finally:
        other.close()


def test_list_filters_and_limits(queue: JobQueue, clock: FakeClock) -> None:
    for n in range(5):
        queue.record_instance(uid(n), new=True)
        clock.advance(1)
    queue.enqueue(uid(0))
    assert [j.study_uid for j in queue.list([JobState.QUEUED])] == [uid(0)]
    assert [j.study_uid for j in queue.list(limit=2)] == [uid(0), uid(4)]
    assert queue.list([]) == []
    with pytest.raises(ValueError):
        queue.list(limit=0)


def test_state_survives_reopening(database: Path, queue: JobQueue) -> None:
    job = queue.enqueue(UID)
    queue.close()
    reopened = JobQueue(database, VERSION)
    try:
        assert reopened.get(job.id) == job
    finally:
        reopened.close()
    with pytest.raises(RuntimeError, match="closed"):
        queue.claim()


# --------------------------------------------------------------------------- contention
JOBS = 40


def _fill(database: Path) -> set[int]:
    jobs = JobQueue(database, VERSION)
    try:
        return {jobs.enqueue(uid(n)).id for n in range(JOBS)}
    finally:
        jobs.close()


def _drain(database: Path) -> list[int]:
    """Claim until the queue is empty; bounded so a bug cannot loop forever."""
    jobs = JobQueue(database, VERSION)
    claimed: list[int] = []
    try:
        for _ in range(JOBS + 1):
            job = jobs.claim()
            if job is None:
                break
            claimed.append(job.id)
    finally:
        jobs.close()
    return claimed


def test_two_threads_claim_disjoint_jobs(database: Path) -> None:
    expected = _fill(database)
    barrier = threading.Barrier(2)
    results: list[list[int]] = [[], []]

    def work(slot: int) -> None:
        barrier.wait(timeout=10)
        results[slot] = _drain(database)

    threads = [threading.Thread(target=work, args=(slot,)) for slot in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert not any(thread.is_alive() for thread in threads)
    assert not set(results[0]) & set(results[1])
    assert sorted(results[0] + results[1]) == sorted(expected)


def _drain_in_process(database: Path, barrier: ProcessBarrier, out: Path) -> None:
    barrier.wait(timeout=10)
    out.write_text(" ".join(str(job_id) for job_id in _drain(database)), encoding="utf-8")


@pytest.mark.skipif(os.name != "posix", reason="fork start method")
def test_two_processes_claim_disjoint_jobs(database: Path, tmp_path: Path) -> None:
    expected = _fill(database)
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2)
    outs = [tmp_path / "a.txt", tmp_path / "b.txt"]
    workers = [
        context.Process(target=_drain_in_process, args=(database, barrier, out)) for out in outs
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=20)
    assert [worker.exitcode for worker in workers] == [0, 0]
    claimed = [[int(x) for x in out.read_text(encoding="utf-8").split()] for out in outs]
    assert not set(claimed[0]) & set(claimed[1])
    assert sorted(claimed[0] + claimed[1]) == sorted(expected)


# --------------------------------------------------------------------------- crash
def _claim_then_die(database: Path) -> None:
    jobs = JobQueue(database, VERSION)
    jobs.claim()
    os.kill(os.getpid(), signal.SIGKILL)


def _crash_a_worker(database: Path) -> None:
    worker = multiprocessing.get_context("fork").Process(target=_claim_then_die, args=(database,))
    worker.start()
    worker.join(timeout=20)
    assert worker.exitcode == -signal.SIGKILL


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL and fork")
def test_recover_after_a_killed_worker(database: Path, queue: JobQueue) -> None:
    job = queue.enqueue(UID)
    _crash_a_worker(database)
    left = queue.get(job.id)
    assert left is not None and (left.state, left.attempts) == (JobState.RUNNING, 1)
    recovered = queue.recover(max_attempts=2)
    assert [(j.id, j.state) for j in recovered] == [(job.id, JobState.QUEUED)]
    assert recovered[0].error is not None and "interrupted" in recovered[0].error
    _crash_a_worker(database)
    dead = queue.recover(max_attempts=2)
    assert [(j.id, j.state, j.attempts) for j in dead] == [(job.id, JobState.DEAD, 2)]
    assert queue.recover(max_attempts=2) == []


def test_recover_leaves_other_states_alone(queue: JobQueue) -> None:
    queue.record_instance(uid(1), new=True)
    queue.enqueue(uid(2))
    assert queue.recover(max_attempts=3) == []


# --------------------------------------------------------------------------- table
def render(jobs: list[Job]) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(format_jobs_table(jobs))
    return console.export_text()


def test_jobs_table_shows_the_uid_tail_and_truncated_error(queue: JobQueue) -> None:
    queue.enqueue(UID)
    job = queue.claim()
    assert job is not None
    queue.mark(job.id, JobState.SENDING, timings={"series": 1.25, "inference": 2.5})
    failed = queue.mark(job.id, JobState.FAILED, error="[bold]no arterial phase[/] " + "x" * 200)
    text = render([failed])
    assert UID[-12:] in text and UID not in text
    assert "failed" in text and "3.8" in text
    assert "[bold]no arterial phase" in text  # shown literally, not as markup
    assert "x" * 100 not in text
