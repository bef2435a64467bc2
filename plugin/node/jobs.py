"""A persistent job queue on SQLite: one job per (study, pipeline version), surviving crashes.

Why SQLite: the embedded node needs a queue that outlives the process, is shared by the
listener and the workers (threads or processes on one machine) and needs no server. WAL mode
lets readers (``hepatica jobs``, the status page) run while a worker writes; every write is a
``BEGIN IMMEDIATE`` transaction, which takes the write lock up front, so two workers can never
both see the same queued job as free (a deferred transaction could read, then fail to upgrade).

States: ``received → queued → running → sending → done | failed | dead``, and, when the
destination does not take the results, ``sending → send_queued → sending …`` (the results are
kept on disk and delivered again later, never recomputed) until a cap of delivery attempts
leaves them ``unsent`` for ``hepatica resend``. A study that receives new instances after (or
while) it was processed is processed again: the listener reports every stored instance through
:meth:`JobQueue.record_instance`.

Only instances that arrive while the node runs count towards the quiet period: at start-up
:meth:`JobQueue.restart_clocks` restarts the stability clock of every study still receiving,
so a node that crashed mid-receive waits for the sender to resend the rest.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from rich.console import JustifyMethod
from rich.markup import escape
from rich.table import Table

from dicom_io.uids import checked_uid

__all__ = ["SCHEMA_VERSION", "Job", "JobQueue", "JobState", "JobStateError", "format_jobs_table"]


class JobState(StrEnum):
    RECEIVED = "received"
    QUEUED = "queued"
    RUNNING = "running"
    SENDING = "sending"
    DONE = "done"
    FAILED = "failed"
    DEAD = "dead"
    SEND_QUEUED = "send_queued"
    UNSENT = "unsent"


_ACTIVE = (JobState.RUNNING, JobState.SENDING)
# States a new instance or a queue request re-opens (the study is processed again; results
# still waiting for delivery are stale then, and are dropped with the old run).
_FINISHED = (JobState.DONE, JobState.FAILED, JobState.DEAD, JobState.SEND_QUEUED,
             JobState.UNSENT)
_RESENDABLE = (JobState.DONE, JobState.SEND_QUEUED, JobState.UNSENT)
# What mark() may do: a worker reports progress on a job it holds. Queueing goes through
# enqueue/fail/recover and taking a job through claim, so their rules live in one place each.
_MARK_FROM: dict[JobState, tuple[JobState, ...]] = {
    JobState.RUNNING: (JobState.RUNNING,),
    JobState.SENDING: _ACTIVE,
    JobState.DONE: _ACTIVE,
    JobState.FAILED: _ACTIVE,
    JobState.DEAD: _ACTIVE,
}


class JobStateError(ValueError):
    """A transition the job's current state does not allow (e.g. a stale worker's report)."""


@dataclass(frozen=True)
class Job:
    """One study under one pipeline version; ``timings`` are seconds per pipeline step."""

    id: int
    study_uid: str
    pipeline_version: str
    state: JobState
    attempts: int
    error: str | None
    timings: dict[str, float]
    created_at: float
    updated_at: float
    last_instance_at: float
    instances: int
    result_dir: str | None
    send_attempts: int = 0
    next_send_at: float | None = None
    results: tuple[str, ...] = ()
    sent: tuple[str, ...] = ()

    @property
    def unsent_results(self) -> tuple[str, ...]:
        """Result files (names in ``result_dir``) the destination has not acknowledged."""
        return tuple(name for name in self.results if name not in set(self.sent))

    @property
    def total_seconds(self) -> float:
        """The pipeline's own ``total`` when it recorded one, else the sum of the steps."""
        return self.timings.get("total", sum(self.timings.values()))


SCHEMA_VERSION = 2
# Migration n takes the schema from version n-1 to n; append, never edit a released one.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE jobs (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        study_uid        TEXT    NOT NULL,
        pipeline_version TEXT    NOT NULL,
        state            TEXT    NOT NULL CHECK (state IN
                         ('received','queued','running','sending','done','failed','dead')),
        attempts         INTEGER NOT NULL DEFAULT 0,
        error            TEXT,
        timings          TEXT    NOT NULL DEFAULT '{}',
        created_at       REAL    NOT NULL,
        updated_at       REAL    NOT NULL,
        last_instance_at REAL    NOT NULL,
        instances        INTEGER NOT NULL DEFAULT 0,
        result_dir       TEXT,
        queued_at        REAL,
        rerun_state      TEXT CHECK (rerun_state IN ('received','queued')),
        UNIQUE (study_uid, pipeline_version)
    );
    CREATE INDEX jobs_by_state ON jobs (pipeline_version, state, queued_at, id);
    """,
    # 2: delivery is its own retried state (results kept, never recomputed); the studies
    # expected as priors are remembered across restarts. SQLite cannot change a CHECK
    # constraint in place, hence the copy.
    """
    CREATE TABLE jobs_v2 (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        study_uid        TEXT    NOT NULL,
        pipeline_version TEXT    NOT NULL,
        state            TEXT    NOT NULL CHECK (state IN
                         ('received','queued','running','sending','done','failed','dead',
                          'send_queued','unsent')),
        attempts         INTEGER NOT NULL DEFAULT 0,
        error            TEXT,
        timings          TEXT    NOT NULL DEFAULT '{}',
        created_at       REAL    NOT NULL,
        updated_at       REAL    NOT NULL,
        last_instance_at REAL    NOT NULL,
        instances        INTEGER NOT NULL DEFAULT 0,
        result_dir       TEXT,
        queued_at        REAL,
        rerun_state      TEXT CHECK (rerun_state IN ('received','queued')),
        send_attempts    INTEGER NOT NULL DEFAULT 0,
        next_send_at     REAL,
        results          TEXT    NOT NULL DEFAULT '[]',
        sent             TEXT    NOT NULL DEFAULT '[]',
        UNIQUE (study_uid, pipeline_version)
    );
    INSERT INTO jobs_v2 (id, study_uid, pipeline_version, state, attempts, error, timings,
        created_at, updated_at, last_instance_at, instances, result_dir, queued_at, rerun_state)
    SELECT id, study_uid, pipeline_version, state, attempts, error, timings, created_at,
        updated_at, last_instance_at, instances, result_dir, queued_at, rerun_state FROM jobs;
    DROP TABLE jobs;
    ALTER TABLE jobs_v2 RENAME TO jobs;
    CREATE INDEX jobs_by_state ON jobs (pipeline_version, state, queued_at, id);
    CREATE INDEX jobs_by_delivery ON jobs (pipeline_version, state, next_send_at, id);
    CREATE TABLE expected_priors (
        study_uid  TEXT PRIMARY KEY,
        created_at REAL NOT NULL
    );
    """,
)
_COLUMNS = (
    "id, study_uid, pipeline_version, state, attempts, error, timings, created_at,"
    " updated_at, last_instance_at, instances, result_dir, send_attempts, next_send_at,"
    " results, sent"
)
# Columns a re-opened job starts again from (its old results are stale).
_RESET_RUN = (
    "attempts = 0, error = NULL, timings = '{}', send_attempts = 0, next_send_at = NULL,"
    " results = '[]', sent = '[]'"
)
_BUSY_TIMEOUT_S = 10.0


class JobQueue:
    """The queue for one pipeline version; safe to share between threads and processes.

    One connection guarded by a lock serves all threads of a process (SQLite serialises writers
    anyway, so per-thread connections would buy nothing but contention on the file lock); other
    processes open their own ``JobQueue``. A forked child that inherits this object reconnects
    instead of reusing the parent's connection, which SQLite forbids across ``fork``.

    ``synchronous=FULL``: the listener answers C-STORE success only after the instance is
    durable in the spool, and the job recorded for it must be as durable; NORMAL in WAL mode may
    lose the last commits on power loss, which would leave a stored study that never runs. The
    storage SCP's records are the exception (``record_instance(flush=False)``): they are
    committed without an fsync of their own and made durable by the spool's group commit (one
    flush of the file system for the instance, its record and any concurrent ones).
    """

    def __init__(
        self, database: Path, pipeline_version: str, clock: Callable[[], float] = time.time
    ):
        self.database = Path(database)
        self.pipeline_version = pipeline_version
        self._clock = clock
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._closed = False
        self._connection: sqlite3.Connection | None = self._connect()

    # ----------------------------------------------------------------- connection, schema
    def _connect(self) -> sqlite3.Connection:
        self.database.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(
            self.database,
            timeout=_BUSY_TIMEOUT_S,
            isolation_level=None,  # we issue BEGIN IMMEDIATE / COMMIT ourselves
            check_same_thread=False,  # guarded by self._lock
        )
        connection.row_factory = sqlite3.Row
        connection.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
        mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            connection.close()
            raise RuntimeError(f"{self.database}: SQLite refused WAL mode (got {mode!r})")
        connection.execute("PRAGMA synchronous = FULL")
        try:
            _migrate(connection, self.database)
        except BaseException:
            connection.close()
            raise
        return connection

    @contextmanager
    def _write(self, flush: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction holding SQLite's write lock from its first statement.

        Any failure (a full disk makes SQLite raise "database or disk is full" in the middle of
        a statement or at COMMIT) rolls back; a connection that cannot even roll back is
        dropped and opened again on the next call, so the queue works again once space returns.
        ``flush=False``: COMMIT does not fsync (``synchronous=NORMAL`` for this transaction);
        the caller makes it durable with a later flush of the file system (group commit).
        """
        with self._lock:
            connection = self._conn()
            if not flush:
                connection.execute("PRAGMA synchronous = NORMAL")
            try:
                connection.execute("BEGIN IMMEDIATE")
                yield connection
                connection.execute("COMMIT")
            except BaseException:
                self._abandon(connection)
                raise
            finally:
                if not flush and self._connection is connection:
                    with suppress(sqlite3.Error):
                        connection.execute("PRAGMA synchronous = FULL")

    def _abandon(self, connection: sqlite3.Connection) -> None:
        try:
            if connection.in_transaction:  # SQLite may already have rolled back
                connection.execute("ROLLBACK")
        except sqlite3.Error:
            with suppress(sqlite3.Error):
                connection.close()
            self._connection = None

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise RuntimeError(f"job queue {self.database} is closed")
        if self._pid != os.getpid():  # inherited through fork: never touch the parent's handle
            self._pid = os.getpid()
            self._connection = None
        if self._connection is None:
            self._connection = self._connect()
        return self._connection

    def close(self) -> None:
        """Close the connection; later calls raise. Safe to call twice."""
        with self._lock:
            if self._connection is not None and self._pid == os.getpid():
                self._connection.close()
            self._connection = None
            self._closed = True

    # ----------------------------------------------------------------- producers
    def record_instance(self, study_uid: str, new: bool, *, flush: bool = True) -> Job:
        """Note one stored instance; ``new`` is False for a duplicate the spool already had.

        A duplicate never changes an existing job (a PACS resending a study must not cause a
        second run). A new instance restarts the stability clock, sends a queued job back to
        waiting, re-opens a finished job, and asks a running job to run again when it finishes.
        ``flush=False`` (the storage SCP's group commit): the record becomes durable with the
        file-system flush that also makes the instance durable, before the sender is answered.
        """
        checked_uid(study_uid, "StudyInstanceUID")
        now = self._clock()
        with self._write(flush) as db:
            row = self._row_for(db, study_uid)
            if row is None:
                count = 1 if new else 0
                return self._insert(db, study_uid, JobState.RECEIVED, now, count)
            if not new:
                return _to_job(row)
            return self._on_new_instance(db, row, now)

    def _on_new_instance(self, db: sqlite3.Connection, row: sqlite3.Row, now: float) -> Job:
        state = JobState(row["state"])
        sets = "last_instance_at = ?, instances = instances + 1, updated_at = ?"
        if state in _ACTIVE:
            sets += ", rerun_state = 'received'"
        elif state in _FINISHED:
            sets += f", state = 'received', {_RESET_RUN}"
        elif state is JobState.QUEUED:
            sets += ", state = 'received', queued_at = NULL"
        return self._update(db, row["id"], sets, now, now)

    def enqueue(self, study_uid: str) -> Job:
        """Queue a study now (stable event, ``hepatica run``, re-run request).

        A finished job is queued again with its attempts reset. A running job is left alone but
        flagged, so it is queued again as soon as the current run ends.
        """
        checked_uid(study_uid, "StudyInstanceUID")
        now = self._clock()
        with self._write() as db:
            row = self._row_for(db, study_uid)
            if row is None:
                return self._insert(db, study_uid, JobState.QUEUED, now, 0)
            state = JobState(row["state"])
            if state in _ACTIVE:
                return self._update(db, row["id"], "rerun_state = 'queued', updated_at = ?", now)
            if state is JobState.QUEUED:
                return _to_job(row)
            sets = "state = 'queued', queued_at = ?, updated_at = ?"
            if state in _FINISHED:
                sets += f", {_RESET_RUN}"
            return self._update(db, row["id"], sets, now, now)

    def promote_stable(self, stable_seconds: float) -> list[Job]:
        """Queue every received study that has had no new instance for ``stable_seconds``."""
        now = self._clock()
        with self._write() as db:
            rows = db.execute(
                f"UPDATE jobs SET state = 'queued', queued_at = ?, updated_at = ?"
                f" WHERE pipeline_version = ? AND state = 'received' AND last_instance_at <= ?"
                f" RETURNING {_COLUMNS}",
                (now, now, self.pipeline_version, now - stable_seconds),
            ).fetchall()
        return sorted((_to_job(row) for row in rows), key=lambda job: job.id)

    def quiet_received(self, quiet_seconds: float) -> list[Job]:
        """Received studies that have had no new instance for ``quiet_seconds`` (oldest first):
        the candidates for an early start once their series are known to be what is needed."""
        now = self._clock()
        with self._lock:
            rows = self._conn().execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE pipeline_version = ? AND state = 'received'"
                " AND last_instance_at <= ? ORDER BY last_instance_at, id",
                (self.pipeline_version, now - quiet_seconds),
            ).fetchall()
        return [_to_job(row) for row in rows]

    def enqueue_if_unchanged(self, study_uid: str, last_instance_at: float) -> Job | None:
        """Queue a received study, provided no instance arrived since ``last_instance_at``
        (the moment its series were judged complete); None when it changed or moved on."""
        now = self._clock()
        with self._write() as db:
            row = db.execute(
                f"UPDATE jobs SET state = 'queued', queued_at = ?, updated_at = ?"
                " WHERE study_uid = ? AND pipeline_version = ? AND state = 'received'"
                f" AND last_instance_at = ? RETURNING {_COLUMNS}",
                (now, now, study_uid, self.pipeline_version, last_instance_at),
            ).fetchone()
        return None if row is None else _to_job(row)

    def restart_clocks(self) -> int:
        """At start-up: the quiet period of every study still receiving starts again now.

        Time the node was down is not quiet time: a sender cut off by a crash has not finished
        and will resend, and processing the half study at once would send partial results.
        Returns how many studies were affected.
        """
        now = self._clock()
        with self._write() as db:
            changed = db.execute(
                "UPDATE jobs SET last_instance_at = ? WHERE pipeline_version = ?"
                " AND state = 'received' AND last_instance_at < ?",
                (now, self.pipeline_version, now),
            ).rowcount
        return int(changed)

    # ----------------------------------------------------------------- workers
    def claim(self) -> Job | None:
        """Take the job queued longest ago: RUNNING, one more attempt. None when idle."""
        now = self._clock()
        with self._write() as db:
            row = db.execute(
                "SELECT id FROM jobs WHERE pipeline_version = ? AND state = 'queued'"
                " ORDER BY queued_at, id LIMIT 1",
                (self.pipeline_version,),
            ).fetchone()
            if row is None:
                return None
            sets = "state = 'running', attempts = attempts + 1, rerun_state = NULL, updated_at = ?"
            return self._update(db, row["id"], sets, now)

    def mark(
        self,
        job_id: int,
        state: JobState,
        *,
        error: str | None = None,
        timings: dict[str, float] | None = None,
        result_dir: str | None = None,
    ) -> Job:
        """Report progress on a claimed job; ``timings`` are merged into those recorded.

        ``None`` leaves a field unchanged, except that DONE clears the error. If the study
        changed while it ran (see :meth:`record_instance`), a finishing state sends the job back
        to be processed again instead; the returned job shows where it went.
        """
        state = JobState(state)
        allowed = _MARK_FROM.get(state)
        if allowed is None:
            raise JobStateError(f"mark() cannot set {state}: use enqueue(), claim() or fail()")
        now = self._clock()
        with self._write() as db:
            row = self._held_row(db, job_id, allowed, f"mark {state}")
            merged = json.loads(row["timings"]) | (timings or {})
            new_error = None if state is JobState.DONE else (error or row["error"])
            target, attempts = _after_run(row, state)
            return self._update(
                db,
                job_id,
                "state = ?, attempts = ?, error = ?, timings = ?, result_dir = ?, updated_at = ?,"
                " queued_at = ?, rerun_state = ?",
                target.value,
                attempts,
                new_error,
                json.dumps(merged),
                result_dir if result_dir is not None else row["result_dir"],
                now,
                now if target is JobState.QUEUED else row["queued_at"],
                row["rerun_state"] if target is state else None,
            )

    def fail(self, job_id: int, error: str, max_attempts: int) -> Job:
        """A run failed: queue it again (at the back) while attempts remain, else DEAD."""
        now = self._clock()
        with self._write() as db:
            row = self._held_row(db, job_id, _ACTIVE, "fail")
            return self._leave_run(db, row, error, max_attempts, now)

    # ----------------------------------------------------------------- delivery
    def results_ready(self, job_id: int, result_dir: str, results: Sequence[str],
                      timings: dict[str, float] | None = None) -> Job:
        """The pipeline wrote (and synced) ``results`` in ``result_dir``: RUNNING → SENDING.

        From here on the job is about delivery only: a failed delivery never runs the
        pipeline again (:meth:`send_failed`), a crash while sending resumes the delivery
        (:meth:`recover`). This first delivery counts as send attempt 1.
        """
        now = self._clock()
        with self._write() as db:
            row = self._held_row(db, job_id, (JobState.RUNNING,), "hold results of")
            merged = json.loads(row["timings"]) | (timings or {})
            return self._update(
                db, job_id,
                "state = 'sending', timings = ?, result_dir = ?, results = ?, sent = '[]',"
                " send_attempts = 1, next_send_at = NULL, updated_at = ?",
                json.dumps(merged), result_dir, json.dumps(list(results)), now)

    def record_sent(self, job_id: int, names: Iterable[str]) -> Job:
        """The destination acknowledged these result files: a later retry skips them."""
        now = self._clock()
        with self._write() as db:
            row = self._held_row(db, job_id, (JobState.SENDING,), "record delivery of")
            sent = list(dict.fromkeys([*json.loads(row["sent"]), *names]))
            return self._update(db, job_id, "sent = ?, updated_at = ?", json.dumps(sent), now)

    def send_failed(self, job_id: int, error: str, retry_in: float | None) -> Job:
        """A delivery failed: SEND_QUEUED again in ``retry_in`` seconds, or UNSENT (None).

        The retry policy (backoff, cap) is the caller's; the results stay where they are.
        If the study changed meanwhile, it goes back to be processed instead.
        """
        now = self._clock()
        with self._write() as db:
            row = self._held_row(db, job_id, (JobState.SENDING,), "fail delivery of")
            wanted = JobState.UNSENT if retry_in is None else JobState.SEND_QUEUED
            target, attempts = _after_run(row, wanted)
            reset = f", {_RESET_RUN}" if target is not wanted else ""
            return self._update(
                db, job_id,
                "state = ?, attempts = ?, error = ?, next_send_at = ?, updated_at = ?,"
                f" queued_at = ?, rerun_state = NULL{reset}",
                target.value, attempts, error,
                None if retry_in is None else now + max(0.0, retry_in), now,
                now if target is JobState.QUEUED else row["queued_at"])

    def claim_delivery(self) -> Job | None:
        """Take the delivery due longest ago: SEND_QUEUED → SENDING, one more send attempt.

        Of any pipeline version: the results are finished files, and results an upgrade left
        undelivered must still reach the archive.
        """
        now = self._clock()
        with self._write() as db:
            row = db.execute(
                "SELECT id FROM jobs WHERE state = 'send_queued' AND next_send_at <= ?"
                " ORDER BY next_send_at, id LIMIT 1",
                (now,),
            ).fetchone()
            if row is None:
                return None
            return self._update(
                db, row["id"],
                "state = 'sending', send_attempts = send_attempts + 1, updated_at = ?", now)

    def resend(self, job_id: int | None = None) -> list[Job]:
        """Deliver results again now (``hepatica resend``); returns the jobs queued for it.

        One job: any job whose results are kept (DONE sends all of them again, the archive may
        have lost them; SEND_QUEUED/UNSENT send what was not acknowledged). No job: every
        SEND_QUEUED or UNSENT job, of any pipeline version. Send attempts start again from 0.
        """
        now = self._clock()
        with self._write() as db:
            if job_id is None:
                rows = db.execute(
                    "SELECT * FROM jobs WHERE state IN ('send_queued','unsent') ORDER BY id"
                ).fetchall()
            else:
                rows = [self._held_row(db, job_id, _RESENDABLE, "resend")]
            jobs = []
            for row in rows:
                if not json.loads(row["results"]):
                    raise JobStateError(f"job {row['id']} kept no results to send (it ran "
                                        "before results were kept, or wrote none)")
                sent = "'[]'" if row["state"] == JobState.DONE.value else "sent"
                jobs.append(self._update(
                    db, row["id"],
                    f"state = 'send_queued', send_attempts = 0, next_send_at = ?, sent = {sent},"
                    " updated_at = ?", now, now))
            return jobs

    def recover(self, max_attempts: int) -> list[Job]:
        """At start-up, take back the jobs a crashed process left RUNNING or SENDING.

        A RUNNING job is queued again; a crash counts as an attempt, so a study that kills
        the process every time ends DEAD instead of crashing the node forever. A SENDING job
        with kept results goes back to SEND_QUEUED, due now: its delivery resumes, nothing is
        recomputed; deliveries are resumed whatever their pipeline version, like
        :meth:`claim_delivery` takes them. Call it only while no other worker process uses this
        database: a live worker's job looks exactly like a crashed one.
        """
        now = self._clock()
        with self._write() as db:
            rows = db.execute(
                "SELECT * FROM jobs WHERE (pipeline_version = ? AND state IN ('running','sending'))"
                " OR (state = 'sending' AND results != '[]') ORDER BY id",
                (self.pipeline_version,),
            ).fetchall()
            return [self._resume_delivery(db, row, now)
                    if row["state"] == JobState.SENDING.value and json.loads(row["results"])
                    else self._leave_run(db, row, _interrupted(row), max_attempts, now)
                    for row in rows]

    def _resume_delivery(self, db: sqlite3.Connection, row: sqlite3.Row, now: float) -> Job:
        target, attempts = _after_run(row, JobState.SEND_QUEUED)
        reset = f", {_RESET_RUN}" if target is not JobState.SEND_QUEUED else ""
        return self._update(
            db, row["id"],
            "state = ?, attempts = ?, error = ?, next_send_at = ?, updated_at = ?, queued_at = ?,"
            f" rerun_state = NULL{reset}",
            target.value, attempts, _interrupted(row), now, now,
            now if target is JobState.QUEUED else row["queued_at"])

    # ----------------------------------------------------------------- expected priors
    def expect_prior(self, study_uid: str) -> None:
        """Note a study about to arrive as a prior (C-MOVE to our own SCP): it makes no job.

        Kept in the database, not in memory, so a restart between the request and the
        arrival (or a second process) still files it as a prior.
        """
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO expected_priors (study_uid, created_at)"
                       " VALUES (?, ?)", (study_uid, self._clock()))

    def is_expected_prior(self, study_uid: str) -> bool:
        with self._lock:
            row = self._conn().execute("SELECT 1 FROM expected_priors WHERE study_uid = ?",
                                       (study_uid,)).fetchone()
        return row is not None

    def _leave_run(
        self, db: sqlite3.Connection, row: sqlite3.Row, error: str, max_attempts: int, now: float
    ) -> Job:
        wanted = JobState.QUEUED if row["attempts"] < max_attempts else JobState.DEAD
        target, attempts = _after_run(row, wanted)
        return self._update(
            db,
            row["id"],
            "state = ?, attempts = ?, error = ?, updated_at = ?, queued_at = ?, rerun_state = NULL",
            target.value,
            attempts,
            error,
            now,
            now if target is JobState.QUEUED else row["queued_at"],
        )

    # ----------------------------------------------------------------- readers
    def get(self, job_id: int) -> Job | None:
        """Any job by id, whatever its pipeline version."""
        with self._lock:
            row = self._conn().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else _to_job(row)

    def by_study(self, study_uid: str) -> Job | None:
        """The job of this study under this queue's pipeline version."""
        with self._lock:
            row = self._row_for(self._conn(), study_uid)
        return None if row is None else _to_job(row)

    def list(
        self,
        states: Iterable[JobState] | None = None,
        limit: int = 100,
        *,
        pipeline_version: str | None = None,
    ) -> list[Job]:
        """Most recently updated first, of every pipeline version unless one is given.

        Every version by default because this is the history ``hepatica jobs`` shows; work
        selection (``claim``, ``promote_stable``, ``recover``) is what keeps versions apart.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        where, params = _list_filter(states, pipeline_version)
        query = f"SELECT * FROM jobs{where} ORDER BY updated_at DESC, id DESC LIMIT ?"
        with self._lock:
            rows = self._conn().execute(query, (*params, limit)).fetchall()
        return [_to_job(row) for row in rows]

    # ----------------------------------------------------------------- row helpers
    def _row_for(self, db: sqlite3.Connection, study_uid: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = db.execute(
            "SELECT * FROM jobs WHERE study_uid = ? AND pipeline_version = ?",
            (study_uid, self.pipeline_version),
        ).fetchone()
        return row

    def _held_row(
        self, db: sqlite3.Connection, job_id: int, allowed: tuple[JobState, ...], action: str
    ) -> sqlite3.Row:
        """The job's row, provided it is in a state that ``action`` may leave."""
        query = "SELECT * FROM jobs WHERE id = ?"
        row: sqlite3.Row | None = db.execute(query, (job_id,)).fetchone()
        if row is None:
            raise KeyError(f"no job {job_id} in {self.database}")
        if JobState(row["state"]) not in allowed:
            names = ", ".join(state.value for state in allowed)
            raise JobStateError(
                f"cannot {action} job {job_id}: it is {row['state']}, expected one of {names}"
                " (was it recovered or re-queued by another process?)"
            )
        return row

    def _insert(
        self, db: sqlite3.Connection, study_uid: str, state: JobState, now: float, count: int
    ) -> Job:
        row = db.execute(
            "INSERT INTO jobs (study_uid, pipeline_version, state, created_at, updated_at,"
            f" last_instance_at, instances, queued_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            f" RETURNING {_COLUMNS}",
            (
                study_uid,
                self.pipeline_version,
                state.value,
                now,
                now,
                now,
                count,
                now if state is JobState.QUEUED else None,
            ),
        ).fetchone()
        return _to_job(row)

    def _update(self, db: sqlite3.Connection, job_id: int, sets: str, *params: object) -> Job:
        row = db.execute(
            f"UPDATE jobs SET {sets} WHERE id = ? RETURNING {_COLUMNS}", (*params, job_id)
        ).fetchone()
        return _to_job(row)


def _migrate(connection: sqlite3.Connection, database: Path) -> None:
    """Bring the schema to SCHEMA_VERSION, one recorded step at a time (``user_version``)."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        version = int(connection.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"{database} has job schema {version}, newer than this Hepatica's"
                f" {SCHEMA_VERSION}; upgrade Hepatica or use another data_dir"
            )
        for number in range(version + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[number - 1].split(";"):
                if statement.strip():
                    connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {number}")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _after_run(row: sqlite3.Row, wanted: JobState) -> tuple[JobState, int]:
    """State and attempts when a run ends: ``wanted``, unless the study changed meanwhile,
    in which case it goes back (attempts reset) to be processed again."""
    rerun = row["rerun_state"]
    if rerun is None or wanted in _ACTIVE:
        return wanted, row["attempts"]
    return JobState(rerun), 0


def _interrupted(row: sqlite3.Row) -> str:
    previous = f"; before that: {row['error']}" if row["error"] else ""
    return f"interrupted while {row['state']} (process stopped){previous}"


def _list_filter(
    states: Iterable[JobState] | None, version: str | None
) -> tuple[str, list[object]]:
    clauses: list[str] = []
    params: list[object] = []
    if version is not None:
        clauses.append("pipeline_version = ?")
        params.append(version)
    if states is not None:
        values = [JobState(state).value for state in states]
        clauses.append(f"state IN ({', '.join('?' for _ in values)})" if values else "0")
        params.extend(values)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _to_job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        study_uid=row["study_uid"],
        pipeline_version=row["pipeline_version"],
        state=JobState(row["state"]),
        attempts=row["attempts"],
        error=row["error"],
        timings={str(k): float(v) for k, v in json.loads(row["timings"]).items()},
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_instance_at=row["last_instance_at"],
        instances=row["instances"],
        result_dir=row["result_dir"],
        send_attempts=row["send_attempts"],
        next_send_at=row["next_send_at"],
        results=tuple(json.loads(row["results"])),
        sent=tuple(json.loads(row["sent"])),
    )


# ----------------------------------------------------------------------- display
_STATE_STYLES = {
    JobState.RECEIVED: "cyan",
    JobState.QUEUED: "blue",
    JobState.RUNNING: "yellow",
    JobState.SENDING: "yellow",
    JobState.DONE: "green",
    JobState.FAILED: "red",
    JobState.DEAD: "bold red",
    JobState.SEND_QUEUED: "magenta",
    JobState.UNSENT: "bold magenta",
}
_UID_TAIL = 12
_ERROR_WIDTH = 60


def format_jobs_table(jobs: Sequence[Job]) -> Table:
    """The ``hepatica jobs`` table. Study UIDs are not patient identifiers; the tail suffices
    to tell studies apart on screen and keeps the table narrow."""
    table = Table(title="Hepatica jobs")
    for name, justify in _TABLE_COLUMNS:
        table.add_column(name, justify=justify)
    for job in jobs:
        table.add_row(*_table_row(job))
    return table


_TABLE_COLUMNS: tuple[tuple[str, JustifyMethod], ...] = (
    ("id", "right"),
    ("study", "left"),
    ("state", "left"),
    ("attempts", "right"),
    ("sent", "right"),
    ("next send", "left"),
    ("updated", "left"),
    ("total s", "right"),
    ("error", "left"),
)


def _table_row(job: Job) -> tuple[str, ...]:
    uid = job.study_uid
    study = uid if len(uid) <= _UID_TAIL else "…" + uid[-_UID_TAIL:]
    style = _STATE_STYLES[job.state]
    total = f"{job.total_seconds:.1f}" if job.timings else ""
    sent = f"{len(job.sent)}/{len(job.results)} ({job.send_attempts}×)" if job.results else ""
    due = job.next_send_at if job.state is JobState.SEND_QUEUED else None
    return (
        str(job.id),
        study,
        f"[{style}]{job.state.value}[/{style}]",
        str(job.attempts),
        sent,
        time.strftime("%H:%M:%S", time.localtime(due)) if due is not None else "",
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.updated_at)),
        total,
        _short_error(job.error),
    )


def _short_error(error: str | None) -> str:
    """First line only, cut to a width that keeps one job on one line of the table."""
    if not error:
        return ""
    line = error.strip().splitlines()[0] if error.strip() else ""
    text = line if len(line) <= _ERROR_WIDTH else line[: _ERROR_WIDTH - 1] + "…"
    return escape(text)  # rich markup must not eat text from the error
