"""The one worker loop of both node kinds: claim a job, run the pipeline, deliver the results.

What differs between the DICOM node (spool in, C-STORE out) and the worker beside Orthanc
(REST download in, REST upload out) is only the transport, so that is all they provide:

- an :class:`Inbox` gives the claimed study as a folder (the spool's, or a download) and may
  move jobs forward on each turn of the loop (the spool's quiet period);
- an :class:`Outbox` delivers result files and says which the destination took. C-STORE and
  Orthanc REST are two small classes; STOW-RS would be a third.

Everything else is here, once: the loop that survives every exception (a job's error fails the
job, never the thread; a full disk that stops the job database is logged and retried until
space returns), the failure policy (permanent errors fail at once, others are retried up to
``max_attempts``), delivery as its own retried state (results are synced to disk before the
first attempt and a failed delivery never runs inference again; a delivery thread retries with
a capped backoff until ``delivery_attempts``, then leaves the job ``unsent`` for
``hepatica resend``), patient values kept out of the job table and the logs, the heartbeat
file, and the lock that keeps a second worker process off the same job database.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

from dicom_io.privacy import identifiers_of, redact
from dicom_io.spool import InvalidInstanceError
from dicom_io.uids import InvalidUidError, path_under
from plugin.node.config import HepaticaConfig
from plugin.node.jobs import Job, JobQueue, JobState, JobStateError
from plugin.node.lifecycle import NodeThreads
from plugin.pipeline.models import NoModelError
from plugin.pipeline.prediction import ResponseSettings
from plugin.pipeline.recist import PriorSettings
from plugin.pipeline.run import PipelineError, PipelineSettings, process_study

__all__ = ["PERMANENT_ERRORS", "DeliveryPolicy", "Inbox", "Outbox", "Worker", "exclusive_lock",
           "pipeline_settings"]

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
HEARTBEAT_SECONDS = 5.0
MAX_BACKOFF_SECONDS = 30.0
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    PipelineError, NoModelError, InvalidUidError, InvalidInstanceError, LookupError)
"""Errors that retrying cannot mend: the job fails at once with the reason."""

T = TypeVar("T")
Acknowledge = Callable[[Sequence[Path]], None]


class Inbox(Protocol):
    """Where a claimed job's study comes from."""

    timing_key: str | None
    """Name under which the time to provide the study is recorded (None: not timed)."""

    def tick(self, queue: JobQueue) -> None:
        """Called on every turn of the loop before claiming (may raise: it is retried)."""

    def study(self, job: Job) -> AbstractContextManager[Path]:
        """The study's instances as a folder, for the duration of the run."""


class Outbox(Protocol):
    """Where results go. ``deliver`` raises when any file was not taken."""

    @property
    def name(self) -> str:
        """The destination, for messages."""

    @property
    def timing_key(self) -> str:
        """Name under which the delivery time is recorded."""

    def deliver(self, files: Sequence[Path], acknowledged: Acknowledge) -> None:
        """Send ``files``; call ``acknowledged`` with those the destination took."""


@dataclass(frozen=True)
class DeliveryPolicy:
    """When a failed delivery is tried again: ``first_s`` doubling up to ``max_s``, at most
    ``attempts`` deliveries in all (0: for ever)."""

    first_s: float = 60.0
    max_s: float = 900.0
    attempts: int = 48

    def retry_in(self, attempts_made: int) -> float | None:
        """Seconds until the next delivery, or None when the cap is reached."""
        if self.attempts and attempts_made >= self.attempts:
            return None
        return float(min(self.first_s * 2.0 ** max(0, attempts_made - 1), self.max_s))

    @classmethod
    def from_config(cls, config: HepaticaConfig) -> DeliveryPolicy:
        d = config.destination
        return cls(d.redeliver_seconds, d.redeliver_max_seconds, d.delivery_attempts)


def pipeline_settings(config: HepaticaConfig, priors: PriorSettings | None) -> PipelineSettings:
    """What ``process_study`` needs, from the node's configuration."""
    p = config.pipeline
    return PipelineSettings(bundle_dirs=p.bundle_dirs, series_number_base=p.series_number_base,
                            providers=p.providers, response=ResponseSettings(config.data_dir),
                            priors=priors, phase_rules=p.phase_rules)


@dataclass
class Worker(NodeThreads):
    """``workers`` processing threads and one delivery thread over one job queue."""

    config: HepaticaConfig
    queue: JobQueue
    inbox: Inbox
    outbox: Outbox
    settings: PipelineSettings
    heartbeat: Path | None = None
    heartbeat_info: dict[str, Any] = field(default_factory=dict)
    policy: DeliveryPolicy | None = None

    def __post_init__(self) -> None:
        if self.policy is None:
            self.policy = DeliveryPolicy.from_config(self.config)

    # ----------------------------------------------------------------- life cycle
    def start(self, name: str = "hepatica") -> None:
        """Take the database, recover what a crash left, restart quiet periods, then work."""
        self._take_data_dir()
        for job in self.queue.recover(self.config.pipeline.max_attempts):
            log.info("recovered job %d (study …%s) as %s", job.id, job.study_uid[-12:],
                     job.state)
        restarted = self.queue.restart_clocks()
        if restarted:
            log.info("%d study(ies) still receiving: their quiet period starts again now",
                     restarted)
        self._beat("starting")
        loops: list[Callable[[], None]] = [self._process_loop] * self.config.pipeline.workers
        loops += [self._delivery_loop, self._heartbeat_loop]
        self._run_threads(loops, name)

    # ----------------------------------------------------------------- the loop
    def _process_loop(self) -> None:
        warm_up(self.settings)
        self._loop("claim a job", self._claim_job, self.run_job)

    def _delivery_loop(self) -> None:
        self._loop("claim a delivery", self.queue.claim_delivery, self.deliver)

    def _claim_job(self) -> Job | None:
        self.inbox.tick(self.queue)
        return self.queue.claim()

    def _loop(self, what: str, claim: Callable[[], Job | None],
              handle: Callable[[Job], object]) -> None:
        """Claim and handle until stopped; no exception ends the thread."""
        failures = 0
        while not self._stop.is_set():
            try:
                job = claim()
            except Exception as exc:  # e.g. sqlite3 "database or disk is full"
                failures += 1
                delay = min(POLL_SECONDS * 2**failures, MAX_BACKOFF_SECONDS)
                log.warning("cannot %s (%s: %s); trying again in %.1f s", what,
                            type(exc).__name__, exc, delay)
                self._stop.wait(delay)
                continue
            if failures:
                log.info("the job queue works again after %d failed attempt(s)", failures)
                failures = 0
            if job is None:
                self._stop.wait(POLL_SECONDS)
                continue
            try:
                handle(job)
            except JobStateError as exc:  # another process re-queued it: its report wins
                log.warning("job %d: %s", job.id, exc)
            except Exception:  # handle() records its own errors; this is a bug, not a job's
                log.exception("job %d: unexpected error in the worker loop", job.id)

    def _durably(self, what: str, write: Callable[[], T]) -> T | None:
        """Record a job's outcome, retrying while the job database cannot be written.

        Gives up only when the worker stops; the job is then recovered at the next start.
        """
        delay = POLL_SECONDS
        while True:
            try:
                return write()
            except JobStateError:
                raise
            except Exception as exc:
                if self._stop.is_set():
                    log.error("could not record %s before stopping (%s); it is recovered "
                              "at the next start", what, exc)
                    return None
                log.warning("cannot record %s (%s: %s); trying again in %.1f s", what,
                            type(exc).__name__, exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, MAX_BACKOFF_SECONDS)

    # ----------------------------------------------------------------- one job
    def run_job(self, job: Job) -> Job | None:
        """Process one claimed job and make its first delivery; errors become states."""
        started = time.perf_counter()
        identifiers: list[str] = []
        timings: dict[str, float] = {}
        try:
            out_dir = path_under(self.config.results_dir, job.study_uid)
            fetch = time.perf_counter()
            with self.inbox.study(job) as folder:
                if self.inbox.timing_key:
                    timings[self.inbox.timing_key] = round(time.perf_counter() - fetch, 3)
                identifiers = _identifiers(folder)
                result = process_study(folder, out_dir, self.settings)
            summary = out_dir / "summary.json"
            fsync_files([*result.files, *([summary] if summary.exists() else [])])
            names = [str(Path(f).relative_to(out_dir)) for f in result.files]
        except PERMANENT_ERRORS as exc:
            message = redact(str(exc), identifiers)
            log.error("job %d failed: %s", job.id, message)
            return self._durably(f"job {job.id} failed", lambda: self.queue.mark(
                job.id, JobState.FAILED, error=message))
        except Exception as exc:  # transient or unknown: retried up to max_attempts
            message = redact(f"{type(exc).__name__}: {exc}", identifiers)
            log.warning("job %d attempt %d failed: %s\n%s", job.id, job.attempts, message,
                        redact("".join(traceback.format_exception(exc)), identifiers))
            return self._durably(f"job {job.id} failed", lambda: self.queue.fail(
                job.id, message, self.config.pipeline.max_attempts))
        timings |= result.summary.get("timings_s", {})
        held = self._durably(f"job {job.id} results", lambda: self.queue.results_ready(
            job.id, str(out_dir), names, timings))
        if held is None:
            return None
        return self.deliver(held, started)

    def deliver(self, job: Job, started: float | None = None) -> Job | None:
        """One delivery of a SENDING job's unacknowledged results; never re-runs anything."""
        assert self.policy is not None
        begun = time.perf_counter()
        folder = Path(job.result_dir or "")
        pending = [folder / name for name in job.unsent_results]
        try:
            missing = [path.name for path in pending if not path.is_file()]
            if missing:
                raise FileNotFoundError(f"result file(s) {', '.join(missing)} no longer in "
                                        f"{folder}")
            self.outbox.deliver(pending, lambda paths: self._acknowledge(job, folder, paths))
        except Exception as exc:
            retry_in = (None if isinstance(exc, FileNotFoundError)
                        else self.policy.retry_in(job.send_attempts))
            error = redact(f"delivery {job.send_attempts} to {self.outbox.name} failed: "
                           f"{type(exc).__name__}: {exc}")
            then = "left unsent" if retry_in is None else f"next try in {retry_in:.0f} s"
            log.warning("job %d: %s; results kept, %s", job.id, error, then)
            return self._durably(f"job {job.id} delivery", lambda: self.queue.send_failed(
                job.id, error, retry_in))
        timings = {self.outbox.timing_key: round(time.perf_counter() - begun, 3)}
        if started is not None:
            timings["total"] = round(time.perf_counter() - started, 3)
        log.info("job %d delivered (%d file(s), delivery %d)%s", job.id, len(pending),
                 job.send_attempts, f" in {timings['total']:.1f} s" if started else "")
        return self._durably(f"job {job.id} done", lambda: self.queue.mark(
            job.id, JobState.DONE, timings=timings))

    def _acknowledge(self, job: Job, folder: Path, paths: Sequence[Path]) -> None:
        if paths:
            self.queue.record_sent(job.id, [str(p.relative_to(folder)) for p in paths])

    # ----------------------------------------------------------------- heartbeat
    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self._beat("running")
            except OSError as exc:  # a full disk must not end the heartbeat for good
                log.warning("cannot write the heartbeat: %s", exc)

    def _beat(self, state: str) -> None:
        if self.heartbeat is None:
            return
        beat = {"pid": os.getpid(), "time": time.time(), "state": state,
                "pipeline_version": self.queue.pipeline_version, **self.heartbeat_info}
        tmp = self.heartbeat.with_suffix(".tmp")
        tmp.write_text(json.dumps(beat))
        tmp.replace(self.heartbeat)


def warm_up(settings: PipelineSettings) -> None:
    """Load, in the processing thread, what its first job would otherwise load while a
    sender waits for results: the segmentation models' sessions (cached by
    ``inference.runtime``), the DICOM writers, and this thread's heatmap frame (matplotlib's
    fonts and colour bar). Nothing here may stop the node: a failure is only logged."""
    started = time.perf_counter()
    try:
        import numpy as np

        from export.sc.render import render_heatmap
        from inference.runtime import create_session
        from plugin.pipeline import report  # noqa: F401  (imports the SEG/SR/SC builders)
        from plugin.pipeline.models import segmentation_bundles

        for bundle in segmentation_bundles(settings.bundle_dirs):
            create_session(bundle.model_file, providers=list(settings.providers) or None)
        render_heatmap(np.zeros((8, 8)), np.zeros((8, 8)), title="", caption_lines=[])
    except Exception as exc:  # a broken bundle shows in its job, with the reason
        log.debug("warm-up incomplete (%s: %s)", type(exc).__name__, exc)
        return
    log.debug("warmed up in %.1f s", time.perf_counter() - started)


def _identifiers(folder: Path) -> list[str]:
    """The patient's identifying values, from the first readable instance of the study, so
    that errors quoting them (a DICOM library refusing a value) can be redacted."""
    import pydicom

    for path in _first_files(folder.rglob("*"), 5):
        try:
            return identifiers_of(pydicom.dcmread(path, stop_before_pixels=True, force=True))
        except Exception:  # an unreadable file says nothing; try the next
            continue
    return []


def _first_files(paths: Iterable[Path], limit: int) -> Iterator[Path]:
    count = 0
    for path in paths:
        if path.is_file():
            yield path
            count += 1
            if count >= limit:
                return


def fsync_files(paths: Iterable[Path]) -> None:
    """Make the pipeline's result files durable, with their folders, before the first
    delivery: until the destination has them they are the only copy of an inference run,
    and a power cut must not leave empty or half-written files to be sent later."""
    folders: set[Path] = set()
    for path in paths:
        _fsync(Path(path))
        folders.add(Path(path).parent)
    for folder in sorted(folders):
        _fsync(folder)
        _fsync(folder.parent)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if path.is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def exclusive_lock(path: Path) -> IO[str]:
    """One worker process per job database: recovery at start-up cannot tell a live worker's
    job from a dead one's, so a second process is refused instead."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RuntimeError(f"another Hepatica worker holds {path}; run one node or worker "
                           "process per data_dir (raise [pipeline] workers for more threads)"
                           ) from None
    return handle
