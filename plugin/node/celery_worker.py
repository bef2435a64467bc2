"""`hepatica worker --celery URL`: one worker process on the Celery queue.

It needs the same model bundles as the node (the pipeline version is checked per job) and a
way to the studies: the node's spool on shared storage (the worker's ``data_dir`` is the same
folder, mounted) or Orthanc's REST API (``[orthanc]``). Results go to the worker's
``[destination]`` (studies from the spool) or back into Orthanc (studies from Orthanc), and
are kept in ``data_dir/results`` so that the node can deliver them again if that fails.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from dicom_io.privacy import use_installation_key
from dicom_io.spool import Spool
from plugin.node.celery_app import WorkerRuntime, broker_url, make_app
from plugin.node.config import HepaticaConfig
from plugin.node.status import StatusServer, start_status_server
from plugin.node.transports import SpoolInbox, dicom_outbox
from plugin.node.worker import Inbox, Outbox, pipeline_settings
from plugin.pipeline.models import installed_version

__all__ = ["run_worker", "worker_runtime"]

log = logging.getLogger(__name__)


def worker_runtime(config: HepaticaConfig) -> WorkerRuntime:
    """Everything a task needs in this process, built once."""
    import redis

    config.data_dir.mkdir(parents=True, exist_ok=True)
    use_installation_key(config.data_dir)
    return WorkerRuntime(
        config=config, version=installed_version(config.pipeline.bundle_dirs),
        settings=pipeline_settings(config, None),
        spool_inbox=SpoolInbox(Spool(config.spool_dir), config.pipeline.stable_seconds),
        spool_outbox=dicom_outbox(config), orthanc=_orthanc_transports(config),
        redis=redis.Redis.from_url(broker_url(config.celery.url)))


def _orthanc_transports(config: HepaticaConfig) -> tuple[Inbox, Outbox]:
    from plugin.node.orthanc.filters import TriggerRules
    from plugin.node.orthanc_worker import OrthancClient, OrthancInbox, OrthancOutbox

    client = OrthancClient.from_config(config)
    rules = TriggerRules.from_config(config.orthanc, config.pipeline.series_number_base)
    return OrthancInbox(client, rules, config.data_dir / "orthanc-work"), OrthancOutbox(client)


def run_worker(config: HepaticaConfig, url: str, *, name: str = "", pool: str = "threads",
               concurrency: int | None = None, status_port: int | None = None) -> int:
    """Consume the queue until stopped (SIGTERM: warm shutdown, the running job finishes)."""
    config = replace(config, celery=replace(config.celery, url=url))
    runtime = worker_runtime(config)
    runtime.name = name
    runtime.install()
    app = make_app(config)
    status: StatusServer | None = start_status_server(
        config, runtime.version, "worker", with_jobs=False, port=status_port)
    argv = ["worker", "--loglevel", "INFO", "--queues", config.celery.queue, "--pool", pool,
            "--concurrency", str(concurrency or config.pipeline.workers),
            "--without-gossip", "--without-mingle", "--without-heartbeat"]
    if name:
        argv += ["--hostname", name]
    log.info("hepatica worker %s: pipeline %s, queue %r", runtime.name, runtime.version,
             config.celery.queue)
    try:
        app.worker_main(argv)
    finally:
        if status is not None:
            status.stop()
    return 0
