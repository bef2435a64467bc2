"""`hepatica serve`: listener + persistent queue + workers + sender in one process group.

The C-STORE handler only records the instance in the queue (it never runs inference); a
ticker promotes studies that have been quiet for ``stable_seconds``; workers claim jobs,
run the pipeline and send the results. Every state lives in SQLite, so a crash loses
nothing: on start-up, jobs left running are queued again.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from pathlib import Path

from dicom_io.listener import ListenerSettings, StorageSCP
from dicom_io.privacy import hash_identifier
from dicom_io.sender import Peer, SendError, send_files
from dicom_io.spool import Spool, StoredInstance
from plugin.node.config import HepaticaConfig
from plugin.node.jobs import Job, JobQueue, JobState
from plugin.pipeline.models import NoModelError, installed_version
from plugin.pipeline.prediction import ResponseSettings
from plugin.pipeline.recist import dimse_priors
from plugin.pipeline.run import PipelineError, PipelineSettings, process_study

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25


class HepaticaService:
    """The embedded node: start(), then stop() (or run_forever())."""

    def __init__(self, config: HepaticaConfig) -> None:
        self.config = config
        self.settings = PipelineSettings(bundle_dirs=config.pipeline.bundle_dirs,
                                         series_number_base=config.pipeline.series_number_base,
                                         providers=config.pipeline.providers,
                                         response=ResponseSettings(config.data_dir),
                                         phase_rules=config.pipeline.phase_rules)
        self._expected_priors: set[str] = set()  # studies C-MOVEd in as priors: no job
        self.settings = replace(self.settings,
                                priors=dimse_priors(config, self._expected_priors.add))
        self.version = installed_version(config.pipeline.bundle_dirs)
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.spool = Spool(config.spool_dir)
        self.queue = JobQueue(config.database, self.version)
        self.scp = StorageSCP(_listener_settings(config), self.spool, self._on_stored)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        return self.scp.port

    def start(self) -> None:
        """Recover interrupted jobs, then listen and work."""
        for job in self.queue.recover(self.config.pipeline.max_attempts):
            log.info("recovered job %d (study …%s) as %s", job.id, job.study_uid[-12:],
                     job.state)
        self.scp.start()
        for i in range(self.config.pipeline.workers):
            thread = threading.Thread(target=self._work, name=f"hepatica-worker-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop listening; let the running job finish (up to ``timeout``)."""
        self._stop.set()
        self.scp.stop()
        for thread in self._threads:
            thread.join(timeout)
        self.queue.close()

    def run_forever(self) -> None:
        """Block until SIGINT/SIGTERM (raised as KeyboardInterrupt/SystemExit)."""
        try:
            while not self._stop.is_set():
                time.sleep(0.5)
        finally:
            self.stop()

    def _on_stored(self, instance: StoredInstance) -> None:
        if instance.study_uid in self._expected_priors:
            return
        job = self.queue.record_instance(instance.study_uid, instance.new)
        log.debug("stored %s for job %d (%s)", hash_identifier(instance.sop_uid), job.id,
                  "new" if instance.new else "duplicate")

    def _work(self) -> None:
        while not self._stop.is_set():
            self.queue.promote_stable(self.config.pipeline.stable_seconds)
            job = self.queue.claim()
            if job is None:
                self._stop.wait(POLL_SECONDS)
                continue
            self.run_job(job)

    def run_job(self, job: Job) -> Job:
        """Process, send and record one claimed job; one place turns errors into states."""
        started = time.perf_counter()
        out_dir = self.config.results_dir / job.study_uid
        try:
            result = process_study(self.spool.study_dir(job.study_uid), out_dir, self.settings)
            self.queue.mark(job.id, JobState.SENDING, timings=result.summary["timings_s"],
                            result_dir=str(out_dir))
            send_seconds = self._send(result.files)
        except (PipelineError, NoModelError) as exc:  # permanent: retrying cannot help
            log.error("job %d failed: %s", job.id, exc)
            return self.queue.mark(job.id, JobState.FAILED, error=str(exc))
        except Exception as exc:  # transient or unknown: retried up to max_attempts
            log.exception("job %d attempt %d failed", job.id, job.attempts)
            return self.queue.fail(job.id, f"{type(exc).__name__}: {exc}",
                                   self.config.pipeline.max_attempts)
        timings = {**result.summary["timings_s"], "send": send_seconds,
                   "total": round(time.perf_counter() - started, 3)}
        log.info("job %d done in %.1f s", job.id, timings["total"])
        return self.queue.mark(job.id, JobState.DONE, timings=timings)

    def _send(self, files: list[Path]) -> float:
        destination = self.config.destination
        if not destination.enabled:
            return 0.0
        started = time.perf_counter()
        peer = Peer(destination.ae_title, destination.host, destination.port,
                    calling_ae=self.config.listener.ae_title)
        report = send_files(files, peer, retries=destination.retries,
                            backoff_s=destination.backoff_seconds)
        if report.failed:
            reasons = "; ".join(f"{p.name}: {why}" for p, why in report.failed)
            raise SendError(f"the archive refused {len(report.failed)} result(s): {reasons}")
        return round(time.perf_counter() - started, 3)


def _listener_settings(config: HepaticaConfig) -> ListenerSettings:
    listener = config.listener
    return ListenerSettings(listener.ae_title, listener.host, listener.port,
                            listener.allowed_callers)
