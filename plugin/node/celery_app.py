"""Jobs as Celery tasks on a Redis broker: the task, and what a worker process needs to run it.

The node keeps receiving and keeps its SQLite job table (``plugin.node.celery_node``); what it
sends to the queue is one task per run of a job: ``{job_id, study_uid, pipeline_version,
source}``, with a task id derived from the job and its attempt. A worker
(``hepatica worker --celery URL``) takes the study from shared storage (``source = "spool"``:
its own ``data_dir/spool``, the same files) or from Orthanc's REST API (``"orthanc"``), runs
the pipeline, delivers the results to its ``[destination]`` (or back into Orthanc) and
returns the outcome, which the node records.

Why this is safe with several workers:

- **late acknowledgement** (``acks_late``, ``reject_on_worker_lost``): a message is removed
  from Redis only when its task has finished, so a worker killed mid-job leaves it to be
  delivered again (after ``visibility_timeout_seconds``, Redis having no consumer liveness);
- **one run per study at a time**: a Redis lock keyed by the study (``SET NX`` with an
  expiry, renewed while the job runs) — a duplicate delivery, or another job of the same
  study, is put back with a short countdown instead of running beside it; a dead worker's
  lock lapses after ``lock_seconds``;
- **once per task**: a finished task's outcome is kept under its id, and a redelivered copy
  returns that instead of running again. Results are idempotent anyway (deterministic UIDs),
  so a crash between delivering and recording re-delivers, never duplicates.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dicom_io.privacy import redact
from dicom_io.uids import checked_uid, path_under
from plugin.node import metrics
from plugin.node.config import HepaticaConfig
from plugin.node.jobs import Job, JobState
from plugin.node.worker import PERMANENT_ERRORS, Inbox, Outbox, _identifiers, fsync_files
from plugin.pipeline.run import PipelineSettings, process_study

if TYPE_CHECKING:
    from celery import Celery
    from redis import Redis

__all__ = ["TASK_NAME", "WorkerRuntime", "broker_url", "make_app", "task_id"]

log = logging.getLogger(__name__)

TASK_NAME = "hepatica.process_study"
DONE_KEEP_SECONDS = 7 * 24 * 3600
RUNS_KEY = "hepatica:runs"
RUNS_KEPT = 1000
ACTIVE_PREFIX = "hepatica:active:"


def broker_url(url: str) -> str:
    """``celery://host:port/db`` (the CLI's spelling) → ``redis://host:port/db``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"not a broker URL: {url!r} (e.g. celery://127.0.0.1:6379/0)")
    return f"redis://{rest}" if scheme == "celery" else url


def task_id(job: Job) -> str:
    """One id per run of a job: a redelivered message keeps it, a new attempt gets another."""
    return f"hepatica:{job.id}:{job.attempts}:{job.study_uid}"


def make_app(config: HepaticaConfig) -> Celery:
    """The Celery app of node and workers; Redis is broker and result store."""
    try:
        from celery import Celery
    except ImportError as exc:  # the 'scale' extra
        raise RuntimeError("the Celery queue needs the 'scale' extra: "
                           "pip install 'hepatica[scale]' (celery, redis)") from exc
    c = config.celery
    url = broker_url(c.url)
    app = Celery("hepatica", broker=url, backend=url, set_as_current=False)
    visibility = c.visibility_timeout_seconds
    transport = {"visibility_timeout": visibility,
                 "unacked_restore_interval": max(1, min(10, int(visibility / 4))),
                 "unacked_restore_throttle": 1}
    app.conf.update(
        task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
        task_default_queue=c.queue, task_serializer="json", result_serializer="json",
        accept_content=["json"], broker_transport_options=transport,
        result_backend_transport_options=transport, result_expires=DONE_KEEP_SECONDS,
        broker_connection_retry_on_startup=True, worker_hijack_root_logger=False,
        task_track_started=True, worker_send_task_events=False,
        worker_cancel_long_running_tasks_on_connection_loss=False)
    app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True,
             max_retries=None)(_process_task)
    return app


# ----------------------------------------------------------------------- the worker side
_runtime: WorkerRuntime | None = None


def _process_task(task: Any, payload: dict[str, Any]) -> dict[str, Any]:
    if _runtime is None:
        raise RuntimeError("this process is not a Hepatica worker (hepatica worker --celery)")
    return _runtime.run(task, payload)


@dataclass
class WorkerRuntime:
    """What one worker process runs tasks with; :meth:`install` makes it the process's."""

    config: HepaticaConfig
    version: str
    settings: PipelineSettings
    spool_inbox: Inbox
    spool_outbox: Outbox
    orthanc: tuple[Inbox, Outbox] | None
    redis: Redis
    name: str = ""

    def install(self) -> None:
        global _runtime
        self.name = self.name or f"{socket.gethostname()}:{os.getpid()}"
        _runtime = self

    def run(self, task: Any, payload: dict[str, Any]) -> dict[str, Any]:
        tid = str(task.request.id)
        done_key = f"hepatica:done:{tid}"
        kept = self.redis.get(done_key)
        if kept is not None:  # a redelivered copy of a finished task
            log.info("task for job %s already finished; its outcome stands", payload["job_id"])
            return dict(json.loads(kept))
        study_uid = checked_uid(str(payload["study_uid"]), "StudyInstanceUID")
        if payload["pipeline_version"] != self.version:
            return {"outcome": "failed", "worker": self.name,
                    "error": f"worker {self.name} runs pipeline {self.version}, the job wants "
                             f"{payload['pipeline_version']}: install the same bundles on "
                             "every worker"}
        with self._study_lock(study_uid) as held:
            if not held:
                metrics.LOCK_WAITS.inc()
                log.info("job %s: study …%s is being processed elsewhere; put back",
                         payload["job_id"], study_uid[-12:])
                raise task.retry(countdown=min(5.0, self.config.celery.lock_seconds / 2))
            kept = self.redis.get(done_key)  # finished by the holder we waited for
            if kept is not None:
                return dict(json.loads(kept))
            started = time.time()
            self._mark_active(tid, study_uid, started)
            try:
                outcome = self._run_once(payload, study_uid)
            finally:
                self.redis.delete(ACTIVE_PREFIX + tid)
            outcome |= {"worker": self.name, "started": started, "finished": time.time()}
            self.redis.set(done_key, json.dumps(outcome), ex=DONE_KEEP_SECONDS)
            self._ledger({"task": tid, "study": study_uid, "outcome": outcome["outcome"],
                          "worker": self.name, "started": started,
                          "finished": outcome["finished"]})
            return outcome

    def _mark_active(self, tid: str, study_uid: str, started: float) -> None:
        self.redis.set(ACTIVE_PREFIX + tid, json.dumps(
            {"study": study_uid, "worker": self.name, "pid": os.getpid(), "started": started}),
            ex=int(self.config.celery.visibility_timeout_seconds * 2) + 60)

    def _ledger(self, entry: dict[str, Any]) -> None:
        """Finished runs, newest first, for operators and tests (bounded)."""
        pipe = self.redis.pipeline()
        pipe.lpush(RUNS_KEY, json.dumps(entry))
        pipe.ltrim(RUNS_KEY, 0, RUNS_KEPT - 1)
        pipe.execute()

    @contextmanager
    def _study_lock(self, study_uid: str) -> Iterator[bool]:
        """The study's lock, renewed every third of its expiry until released."""
        from redis.exceptions import LockError

        seconds = self.config.celery.lock_seconds
        lock = self.redis.lock(f"hepatica:lock:study:{study_uid}", timeout=seconds,
                               thread_local=False)
        if not lock.acquire(blocking=False):
            yield False
            return
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(seconds / 3):
                try:
                    lock.reacquire()
                except LockError as exc:
                    log.error("lost the lock of study …%s (%s): another worker may start it",
                              study_uid[-12:], exc)
                    return
                except Exception as exc:  # Redis briefly away: try again next turn
                    log.warning("could not renew the study lock: %s", exc)

        renewer = threading.Thread(target=renew, name="hepatica-lock", daemon=True)
        renewer.start()
        try:
            yield True
        finally:
            stop.set()
            renewer.join(5)
            with suppress(LockError):  # expired meanwhile: nothing of ours to release
                lock.release()

    def _run_once(self, payload: dict[str, Any], study_uid: str) -> dict[str, Any]:
        """Fetch, process, deliver: the outcome the node records. Transient errors raise
        (the node counts an attempt and queues the job again)."""
        source = str(payload.get("source", "spool"))
        inbox, outbox = self._transports(source)
        job = _job(payload, study_uid)
        begun = time.perf_counter()
        timings: dict[str, float] = {}
        identifiers: list[str] = []
        out_dir = path_under(self.config.results_dir, study_uid)
        metrics.JOBS_STARTED.inc()
        try:
            fetch = time.perf_counter()
            with inbox.study(job) as folder:
                if inbox.timing_key:
                    timings[inbox.timing_key] = round(time.perf_counter() - fetch, 3)
                identifiers = _identifiers(folder)
                result = process_study(folder, out_dir, self.settings)
            summary = out_dir / "summary.json"
            fsync_files([*result.files, *([summary] if summary.exists() else [])])
        except PERMANENT_ERRORS as exc:
            metrics.JOBS_FINISHED.labels("failed").inc()
            return {"outcome": "failed", "error": redact(str(exc), identifiers)}
        except Exception as exc:
            message = redact(f"{type(exc).__name__}: {exc}", identifiers)
            log.warning("job %s failed on %s: %s\n%s", job.id, self.name, message,
                        redact("".join(traceback.format_exception(exc)), identifiers))
            metrics.JOB_RETRIES.inc()
            raise RuntimeError(message) from None  # the node sees the redacted text only
        timings |= result.summary.get("timings_s", {})
        metrics.observe_run(timings, str(out_dir))
        names = [str(Path(f).relative_to(out_dir)) for f in result.files]
        sent: list[str] = []
        send = time.perf_counter()
        try:
            outbox.deliver([out_dir / n for n in names],
                           lambda paths: sent.extend(str(p.relative_to(out_dir)) for p in paths))
        except Exception as exc:
            metrics.DELIVERY_FAILURES.inc()
            error = redact(f"delivery 1 to {outbox.name} failed: {type(exc).__name__}: {exc}")
            log.warning("job %s: %s; results kept in %s", job.id, error, out_dir)
            return {"outcome": "unsent", "error": error, "result_dir": str(out_dir),
                    "results": names, "sent": sent, "timings": timings}
        done = {outbox.timing_key: round(time.perf_counter() - send, 3),
                "total": round(time.perf_counter() - begun, 3)}
        for step, seconds in done.items():
            metrics.STEP_SECONDS.labels(step).observe(seconds)
        metrics.JOBS_FINISHED.labels("done").inc()
        log.info("job %s (study …%s) processed and delivered by %s in %.1f s", job.id,
                 study_uid[-12:], self.name, done["total"])
        return {"outcome": "done", "result_dir": str(out_dir), "results": names,
                "sent": sent, "timings": timings, "delivery_timings": done}

    def _transports(self, source: str) -> tuple[Inbox, Outbox]:
        if source == "spool":
            return self.spool_inbox, self.spool_outbox
        if source == "orthanc" and self.orthanc is not None:
            return self.orthanc
        raise LookupError(f"this worker cannot reach a study from source {source!r}")


def _job(payload: dict[str, Any], study_uid: str) -> Job:
    """The job as the transports know it (they read its id and study only)."""
    now = time.time()
    return Job(id=int(payload["job_id"]), study_uid=study_uid,
               pipeline_version=str(payload["pipeline_version"]), state=JobState.RUNNING,
               attempts=int(payload.get("run", 1)), error=None, timings={}, created_at=now,
               updated_at=now, last_instance_at=now, instances=0, result_dir=None)
