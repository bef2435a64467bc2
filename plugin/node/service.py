"""`hepatica serve`: listener + persistent queue + the worker loop with DICOM transports.

The C-STORE handler only records the instance in the queue (it never runs inference); the
worker loop (``plugin.node.worker``) promotes studies that hold every series a model needs
and have been quiet for ``ready_seconds`` (``plugin.node.readiness``), or any study quiet for
``stable_seconds``, claims jobs, runs the pipeline and sends the results by C-STORE. Every
state lives in SQLite, so a crash loses nothing: on start-up, jobs left running are queued
again, deliveries left half-way resume, and studies still receiving wait a full quiet period.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING

from dicom_io.listener import ListenerSettings, StorageSCP
from dicom_io.privacy import hash_identifier
from dicom_io.spool import Spool, StoredInstance
from plugin.node.config import HepaticaConfig
from plugin.node.jobs import Job
from plugin.node.metrics import MeteredQueue
from plugin.node.readiness import ReadyInbox
from plugin.node.status import StatusServer, start_status_server
from plugin.node.transports import dicom_outbox
from plugin.node.worker import Worker, pipeline_settings
from plugin.pipeline.models import installed_version
from plugin.pipeline.recist import dimse_priors

if TYPE_CHECKING:
    from plugin.node.celery_node import CeleryDispatcher

log = logging.getLogger(__name__)

HEARTBEAT_FILE = "node.json"


class HepaticaService:
    """The embedded node: start(), then stop() (or run_forever())."""

    def __init__(self, config: HepaticaConfig) -> None:
        self.config = config
        self.version = installed_version(config.pipeline.bundle_dirs)
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.spool = Spool(config.spool_dir)
        self.queue = MeteredQueue(config.database, self.version)  # counts for /metrics
        # the SCP's group commit flushes the job records it writes with the instances
        self.spool.group_commit.add(config.database.parent)
        # studies C-MOVEd in as priors make no job; the set lives in the job database
        settings = pipeline_settings(config, dimse_priors(config, self.queue.expect_prior))
        self.worker = Worker(config, self.queue, _inbox(config, self.spool),
                             dicom_outbox(config), settings,
                             heartbeat=config.data_dir / HEARTBEAT_FILE,
                             heartbeat_info={"ae_title": config.listener.ae_title})
        self.scp = StorageSCP(_listener_settings(config), self.spool, self._on_stored)
        self.status: StatusServer | None = None
        # [celery] url set: jobs run on Celery workers; this process dispatches and delivers
        self.runner: Worker | CeleryDispatcher = self.worker
        if config.celery.url:
            from plugin.node.celery_node import CeleryDispatcher

            self.runner = CeleryDispatcher(config, self.queue, self.worker.inbox, self.worker)

    @property
    def port(self) -> int:
        return self.scp.port

    def start(self) -> None:
        """Recover interrupted jobs, then work and listen."""
        self.runner.start("hepatica-worker")
        self.scp.start()
        celery = None if isinstance(self.runner, Worker) else self.runner
        self.status = start_status_server(
            self.config, self.version, "node", heartbeat=self.config.data_dir / HEARTBEAT_FILE,
            extra_depths=celery.depth if celery is not None else None,
            checks=[celery.broker_problem] if celery is not None else [])

    def stop(self, timeout: float = 30.0) -> None:
        """Stop listening; let the running job finish (up to ``timeout``)."""
        self.scp.stop()
        self._stop_status()
        self.runner.stop(timeout)

    def _stop_status(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None

    def run_forever(self) -> None:
        """Block until SIGINT/SIGTERM (raised as KeyboardInterrupt/SystemExit)."""
        try:
            self.runner.run_forever()
        finally:
            self.scp.stop()
            self._stop_status()

    def run_job(self, job: Job) -> Job | None:
        return self.worker.run_job(job)

    def _on_stored(self, instance: StoredInstance) -> None:
        """Record a stored instance; if that fails, undo the store and answer a failure.

        The sender is then told Out of Resources and sends the instance again later, when it
        is new to the spool again (a kept copy would be a duplicate that re-opens nothing).
        """
        try:
            if self.queue.is_expected_prior(instance.study_uid):
                return
            # made durable by the SCP's group commit before the sender is answered
            job = self.queue.record_instance(instance.study_uid, instance.new, flush=False)
        except sqlite3.Error as exc:  # e.g. "database or disk is full"
            if instance.new:
                with suppress(OSError):
                    instance.path.unlink()
            raise OSError(errno.ENOSPC, f"job queue: {exc}") from exc
        log.debug("stored %s for job %d (%s)", hash_identifier(instance.sop_uid), job.id,
                  "new" if instance.new else "duplicate")


def _inbox(config: HepaticaConfig, spool: Spool) -> ReadyInbox:
    """Studies from the spool: started ``ready_seconds`` after their last instance when they
    hold every series an installed bundle needs, else after the ``stable_seconds`` quiet
    period (``plugin.node.readiness``)."""
    p = config.pipeline
    return ReadyInbox(spool, p.stable_seconds, p.ready_seconds, tuple(p.bundle_dirs),
                      tuple(p.phase_rules))


def _listener_settings(config: HepaticaConfig) -> ListenerSettings:
    """The SCP's settings: limits, timeouts, and TLS when a certificate is configured."""
    from dicom_io.tls import TlsSettings

    listener = config.listener
    tls = None
    if listener.tls_certificate:
        tls = TlsSettings(Path(listener.tls_certificate),
                          Path(listener.tls_key) if listener.tls_key else None,
                          Path(listener.tls_ca) if listener.tls_ca else None,
                          require_client_certificate=listener.tls_require_client_certificate)
    return ListenerSettings(
        listener.ae_title, listener.host, listener.port, listener.allowed_callers,
        max_associations=listener.max_associations,
        acse_timeout_s=listener.acse_timeout_seconds,
        idle_timeout_s=listener.idle_timeout_seconds,
        dimse_timeout_s=listener.dimse_timeout_seconds,
        quarantine_max_bytes=listener.quarantine_max_megabytes * 1024 * 1024,
        tls=tls)
