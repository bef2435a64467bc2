"""Prometheus metrics of a node or worker process (``prometheus_client``).

Two kinds, because they come from two places:

- **events** (counters, histograms) are counted where they happen, in this process: instances
  received and refused, jobs started and finished, per-step durations, delivery failures and
  retries. :class:`MeteredQueue` counts them at the job queue's transitions, which every worker
  already goes through, so the worker loop needs no metrics code of its own; refusals are read
  from the storage SCP's own log record (:class:`RefusalCounter`), so ``dicom_io`` stays free
  of any metrics library.
- **states** (gauges) are read from the job database when Prometheus scrapes
  (:class:`JobStateCollector`): jobs and studies by state and the queue depth are true for
  every process sharing that database, not only for the one asked.

Label values are bounded sets (states, step names, status names), never study identifiers.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from plugin.node.jobs import Job, JobQueue, JobState

__all__ = ["EVENTS", "JobStateCollector", "MeteredQueue", "ModelCollector", "RefusalCounter",
           "exposition", "install_refusal_counter", "observe_run"]

log = logging.getLogger(__name__)

EVENTS = CollectorRegistry()
"""This process's event metrics (one per process; the state collectors are per server)."""

INSTANCES_RECEIVED = Counter(
    "hepatica_instances_received", "Instances stored by the listener (duplicates too).",
    ["outcome"], registry=EVENTS)
INSTANCES_REFUSED = Counter(
    "hepatica_instances_refused", "C-STORE requests answered with a failure status.",
    ["reason"], registry=EVENTS)
JOBS_STARTED = Counter("hepatica_jobs_started", "Pipeline runs started (attempts).",
                       registry=EVENTS)
JOBS_FINISHED = Counter(
    "hepatica_jobs_finished", "Jobs that reached a final state in this process.", ["state"],
    registry=EVENTS)
JOB_RETRIES = Counter("hepatica_job_retries", "Failed attempts queued to run again.",
                      registry=EVENTS)
STEP_SECONDS = Histogram(
    "hepatica_step_duration_seconds", "Duration of each pipeline step of a job.", ["step"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640), registry=EVENTS)
DELIVERY_FAILURES = Counter("hepatica_delivery_failures",
                            "Deliveries of results that the destination did not complete.",
                            registry=EVENTS)
DELIVERY_RETRIES = Counter("hepatica_delivery_retries",
                           "Deliveries after the first (kept results sent again).",
                           registry=EVENTS)
PROVIDER = Gauge("hepatica_onnx_provider", "ONNX Runtime providers of the last segmentation "
                 "(1 = in use).", ["provider"], registry=EVENTS)
LOCK_WAITS = Counter("hepatica_study_lock_waits",
                     "Celery jobs put back because another worker held the study.",
                     registry=EVENTS)

_providers_lock = threading.Lock()


def exposition(*registries: CollectorRegistry) -> bytes:
    """The text format of every registry, one after the other (their names never overlap)."""
    return b"".join(generate_latest(registry) for registry in registries)


def observe_run(timings: dict[str, float], result_dir: str | None) -> None:
    """Count a pipeline run's step durations and note the providers it used."""
    for step, seconds in timings.items():
        if "/" not in step and seconds >= 0:  # "segment/predict" is inside "segment"
            STEP_SECONDS.labels(step).observe(seconds)
    if result_dir:
        providers = _providers(Path(result_dir) / "summary.json")
        if providers:
            with _providers_lock:
                PROVIDER.clear()
                for provider in providers:
                    PROVIDER.labels(provider).set(1)


def _providers(summary: Path) -> list[str]:
    try:
        model = json.loads(summary.read_text()).get("model", {})
    except (OSError, ValueError):
        return []
    return [str(p) for p in model.get("providers", [])]


class MeteredQueue(JobQueue):
    """The job queue, counting its transitions as events.

    Every method forwards its arguments unchanged and counts from the job it returns, so
    the queue's rules stay in one place (``plugin.node.jobs``).
    """

    def record_instance(self, *args: Any, **kwargs: Any) -> Job:
        job = super().record_instance(*args, **kwargs)
        new = kwargs.get("new", args[1] if len(args) > 1 else True)
        INSTANCES_RECEIVED.labels("new" if new else "duplicate").inc()
        return job

    def claim(self, *args: Any, **kwargs: Any) -> Job | None:
        job = super().claim(*args, **kwargs)
        if job is not None:
            JOBS_STARTED.inc()
        return job

    def results_ready(self, *args: Any, **kwargs: Any) -> Job:
        job = super().results_ready(*args, **kwargs)
        observe_run(job.timings, job.result_dir)
        return job

    def mark(self, job_id: int, state: JobState, **kwargs: Any) -> Job:
        job = super().mark(job_id, state, **kwargs)
        timings: dict[str, float] = kwargs.get("timings") or {}
        if JobState(state) is JobState.DONE:
            for step, seconds in timings.items():  # delivery and total; the rest came earlier
                STEP_SECONDS.labels(step).observe(seconds)
        if job.state in (JobState.DONE, JobState.FAILED, JobState.DEAD):
            JOBS_FINISHED.labels(job.state.value).inc()
        return job

    def fail(self, *args: Any, **kwargs: Any) -> Job:
        job = super().fail(*args, **kwargs)
        if job.state is JobState.DEAD:
            JOBS_FINISHED.labels("dead").inc()
        else:
            JOB_RETRIES.inc()
        return job

    def send_failed(self, *args: Any, **kwargs: Any) -> Job:
        job = super().send_failed(*args, **kwargs)
        DELIVERY_FAILURES.inc()
        if job.state is JobState.UNSENT:
            JOBS_FINISHED.labels("unsent").inc()
        return job

    def claim_delivery(self, *args: Any, **kwargs: Any) -> Job | None:
        job = super().claim_delivery(*args, **kwargs)
        if job is not None:
            DELIVERY_RETRIES.inc()
        return job


class RefusalCounter(logging.Handler):
    """Counts the storage SCP's refusals by DICOM status, from its "refused C-STORE" record.

    The listener logs every refusal once, with the status as an argument; reading that
    record keeps the count exact without a metrics hook in ``dicom_io``.
    """

    def emit(self, record: logging.LogRecord) -> None:
        if not str(record.msg).startswith("refused C-STORE") or not record.args:
            return
        args = record.args if isinstance(record.args, tuple) else ()
        status = next((a for a in args if isinstance(a, int)), None)
        INSTANCES_REFUSED.labels(_status_name(status)).inc()


def _status_name(status: int | None) -> str:
    from dicom_io.status import Status

    if status is None:
        return "unknown"
    try:
        return Status(status).name.lower()
    except ValueError:
        return f"0x{status:04x}"


_refusals_installed = threading.Lock()


def install_refusal_counter(logger_name: str = "dicom_io.listener") -> None:
    """Attach one :class:`RefusalCounter` to the listener's logger (idempotent)."""
    logger = logging.getLogger(logger_name)
    with _refusals_installed:
        if not any(isinstance(h, RefusalCounter) for h in logger.handlers):
            logger.addHandler(RefusalCounter(logging.WARNING))


class JobStateCollector(Collector):
    """Jobs and studies by state, and queue depths, read from the job database per scrape.

    A read-only connection of its own (WAL lets it read while workers write); a database that
    does not exist yet reads as empty.
    """

    def __init__(self, database: Path, pipeline_version: str,
                 extra_depths: Callable[[], dict[str, int]] | None = None) -> None:
        self.database = Path(database)
        self.pipeline_version = pipeline_version
        self.extra_depths = extra_depths

    def describe(self) -> Iterable[Metric]:
        return []  # collected on demand: the values come from the database

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("hepatica_jobs", "Jobs of the current pipeline version by "
                                 "state.", labels=["state"])
        studies = GaugeMetricFamily("hepatica_studies", "Studies by the state of their latest "
                                    "job (every pipeline version).", labels=["state"])
        depth = GaugeMetricFamily("hepatica_queue_depth", "Work waiting: jobs queued to run, "
                                  "deliveries queued, tasks in the Celery queue.",
                                  labels=["queue"])
        by_job, by_study = self._counts()
        for state in JobState:
            jobs.add_metric([state.value], by_job.get(state.value, 0))
            studies.add_metric([state.value], by_study.get(state.value, 0))
        depth.add_metric(["jobs"], by_job.get(JobState.QUEUED.value, 0))
        depth.add_metric(["deliveries"], by_job.get(JobState.SEND_QUEUED.value, 0))
        if self.extra_depths is not None:
            try:
                for name, value in self.extra_depths().items():
                    depth.add_metric([name], value)
            except Exception as exc:  # a broker that is down must not break the scrape
                log.warning("queue depth not read: %s", exc)
        yield from (jobs, studies, depth)

    def _counts(self) -> tuple[dict[str, int], dict[str, int]]:
        if not self.database.exists():
            return {}, {}
        uri = f"file:{self.database}?mode=ro"
        try:
            connection = sqlite3.connect(uri, uri=True, timeout=5.0)
        except sqlite3.Error:
            return {}, {}
        try:
            by_job = dict(connection.execute(
                "SELECT state, COUNT(*) FROM jobs WHERE pipeline_version = ? GROUP BY state",
                (self.pipeline_version,)).fetchall())
            by_study = dict(connection.execute(
                "SELECT state, COUNT(*) FROM (SELECT study_uid, state, MAX(updated_at)"
                " FROM jobs GROUP BY study_uid) GROUP BY state").fetchall())
        except sqlite3.Error as exc:
            log.warning("job states not read for /metrics: %s", exc)
            return {}, {}
        finally:
            connection.close()
        return by_job, by_study


class ModelCollector(Collector):
    """The pipeline version and each installed model bundle, as info metrics."""

    def __init__(self, bundle_dirs: Sequence[Path], role: str) -> None:
        self.bundle_dirs = tuple(bundle_dirs)
        self.role = role

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        from plugin import __version__
        from plugin.pipeline.models import installed_bundles, pipeline_version

        bundles = installed_bundles(self.bundle_dirs)
        pipeline = InfoMetricFamily("hepatica_pipeline", "Hepatica and its pipeline version.")
        pipeline.add_metric([], {"hepatica": __version__, "role": self.role,
                                 "pipeline_version": pipeline_version(bundles)})
        models = InfoMetricFamily("hepatica_model", "An installed model bundle.",
                                  labels=["name"])
        for bundle in bundles:
            models.add_metric([bundle.name], {"version": bundle.version,
                                              "family": bundle.family})
        yield from (pipeline, models)
