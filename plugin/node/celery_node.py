"""The node's side of the Celery queue (``hepatica serve --queue celery://…``).

Receiving, the quiet period and the job table stay as they are (SQLite, one node); instead of
running jobs itself the node hands each claimed job to Celery (``plugin.node.celery_app``) and
records what the worker reports. It replaces the worker loop's processing threads only:

- **dispatch**: promote quiet studies, claim a queued job (RUNNING, one more attempt), send
  its task with an id derived from the job and attempt;
- **collect**: for each RUNNING job, read its task's state in Redis. ``done`` → DONE with the
  worker's timings; ``unsent`` → the results are kept (shared storage) and the node's own
  delivery thread retries them, never recomputing; ``failed`` → FAILED with the reason; a task
  that raised → one failed attempt, queued again up to ``max_attempts``;
- **deliver**: the worker loop's delivery (``Worker.deliver``) for SEND_QUEUED jobs.

A node restart loses nothing: RUNNING jobs are not re-queued (their tasks are still in Redis,
or running, and the task id is derived again from the job), and deliveries left half-way are
queued again. If Redis itself lost a task (flushed, no persistence), its job stays RUNNING:
``hepatica rerun`` / the Orthanc rerun route queue it again.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dicom_io.privacy import redact
from plugin.node.celery_app import TASK_NAME, broker_url, make_app, task_id
from plugin.node.config import HepaticaConfig
from plugin.node.jobs import Job, JobQueue, JobState, JobStateError
from plugin.node.lifecycle import NodeThreads
from plugin.node.worker import Inbox, Worker

__all__ = ["CeleryDispatcher"]

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 5.0


@dataclass
class CeleryDispatcher(NodeThreads):
    """Start, stop, run_forever: the same life cycle as :class:`Worker`, which it uses for
    delivery retries only."""

    config: HepaticaConfig
    queue: JobQueue
    inbox: Inbox
    worker: Worker
    source: str = "spool"

    def __post_init__(self) -> None:
        self.app = make_app(self.config)
        import redis

        self.redis = redis.Redis.from_url(broker_url(self.config.celery.url))

    # ----------------------------------------------------------------- life cycle
    def start(self, name: str = "hepatica-dispatch") -> None:
        self._take_data_dir()
        version = self.queue.pipeline_version
        for job in self.queue.list([JobState.SENDING], pipeline_version=version):
            self.queue.send_failed(job.id, "interrupted while sending (node stopped)", 0.0)
        self.queue.restart_clocks()
        loops: list[Callable[[], None]] = [self._dispatch_loop, self._collect_loop,
                                           self._delivery_loop, self._heartbeat_loop]
        self._run_threads(loops, name)
        log.info("jobs go to Celery queue %r at %s", self.config.celery.queue,
                 _without_password(self.config.celery.url))

    def depth(self) -> dict[str, int]:
        """Tasks waiting in the broker's list (for ``hepatica_queue_depth{queue="celery"}``)."""
        return {"celery": int(self.redis.llen(self.config.celery.queue))}

    def broker_problem(self) -> str | None:
        try:
            self.redis.ping()
        except Exception as exc:
            return f"the Celery broker does not answer ({type(exc).__name__})"
        return None

    # ----------------------------------------------------------------- loops
    def _guarded(self, what: str, step: Callable[[], bool]) -> None:
        """Run ``step`` until stopped; it returns True when it did something (no wait)."""
        failures = 0
        while not self._stop.is_set():
            try:
                busy = step()
                failures = 0
            except Exception as exc:
                failures += 1
                delay = min(POLL_SECONDS * 2**failures, 30.0)
                log.warning("cannot %s (%s: %s); trying again in %.1f s", what,
                            type(exc).__name__, redact(str(exc)), delay)
                self._stop.wait(delay)
                continue
            if not busy:
                self._stop.wait(POLL_SECONDS)

    def _dispatch_loop(self) -> None:
        self._guarded("dispatch a job", self._dispatch_one)

    def _collect_loop(self) -> None:
        self._guarded("collect job outcomes", self._collect)

    def _delivery_loop(self) -> None:
        def once() -> bool:
            job = self.queue.claim_delivery()
            if job is None:
                return False
            self.worker.deliver(job)
            return True

        self._guarded("deliver kept results", once)

    def _heartbeat_loop(self) -> None:
        path = self.worker.heartbeat or self.config.data_dir / "node.json"
        while True:
            beat = {"pid": os.getpid(), "time": time.time(), "state": "running",
                    "pipeline_version": self.queue.pipeline_version, "queue": "celery"}
            try:
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(beat))
                tmp.replace(path)
            except OSError as exc:
                log.warning("cannot write the heartbeat: %s", exc)
            if self._stop.wait(HEARTBEAT_SECONDS):
                return

    # ----------------------------------------------------------------- steps
    def _dispatch_one(self) -> bool:
        self.inbox.tick(self.queue)
        self.redis.ping()  # never claim a job the broker cannot take now
        job = self.queue.claim()
        if job is None:
            return False
        payload = {"job_id": job.id, "study_uid": job.study_uid, "run": job.attempts,
                   "pipeline_version": job.pipeline_version, "source": self.source}
        try:
            self.app.send_task(TASK_NAME, args=[payload], task_id=task_id(job),
                               queue=self.config.celery.queue)
        except Exception as exc:
            self.queue.fail(job.id, f"could not queue the task: {type(exc).__name__}: {exc}",
                            self.config.pipeline.max_attempts)
            raise
        log.info("job %d (study …%s, attempt %d) sent to the Celery queue", job.id,
                 job.study_uid[-12:], job.attempts)
        return True

    def _collect(self) -> bool:
        running = self.queue.list([JobState.RUNNING], limit=1000,
                                  pipeline_version=self.queue.pipeline_version)
        handled = False
        for job in running:
            result = self.app.AsyncResult(task_id(job))
            state = result.state
            if state == "SUCCESS":
                self._record(job, dict(result.result))
            elif state == "FAILURE":
                error = redact(f"worker: {result.result}")
                log.warning("job %d attempt %d failed on a worker: %s", job.id, job.attempts,
                            error)
                self.queue.fail(job.id, error, self.config.pipeline.max_attempts)
            else:
                continue  # PENDING, STARTED, RETRY: still the workers'
            handled = True
            result.forget()
        return handled

    def _record(self, job: Job, outcome: dict[str, Any]) -> None:
        """A worker's outcome, through the same transitions the local worker loop makes."""
        try:
            kind = outcome.get("outcome")
            if kind == "failed":
                self.queue.mark(job.id, JobState.FAILED, error=str(outcome.get("error", "")))
                return
            held = self.queue.results_ready(job.id, str(outcome["result_dir"]),
                                            list(outcome["results"]), outcome.get("timings"))
            if outcome.get("sent"):
                self.queue.record_sent(job.id, list(outcome["sent"]))
            if kind == "done":
                self.queue.mark(job.id, JobState.DONE,
                                timings=dict(outcome.get("delivery_timings", {})))
                log.info("job %d done on worker %s", job.id, outcome.get("worker", "?"))
            else:
                assert self.worker.policy is not None
                self.queue.send_failed(job.id, str(outcome.get("error", "")),
                                       self.worker.policy.retry_in(held.send_attempts))
        except JobStateError as exc:  # re-queued meanwhile (a rerun): its new run wins
            log.warning("job %d: %s", job.id, exc)


def _without_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return scheme + sep + rest
