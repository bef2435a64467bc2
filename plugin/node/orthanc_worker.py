"""`hepatica serve --orthanc URL`: the worker beside Orthanc.

Claims the jobs that the Orthanc plugin (``plugin/orthanc``) queued in the shared SQLite
database, downloads each study's source instances over Orthanc's REST API, runs the
pipeline and stores SEG, SR and heatmaps back with ``POST /instances``, where they join the
same study. It runs in its own process because every Orthanc Python callback shares one
interpreter lock.

The loop, the failure policy and delivery retries are the shared worker loop's
(``plugin.node.worker``); this module is the transport: an :class:`OrthancInbox` that downloads
the study (its UID checked before it names the work folder, which is removed afterwards) and an
:class:`OrthancOutbox` that uploads. Nothing is lost or duplicated across restarts: jobs live in
SQLite, result UIDs derive from the study and the pipeline version (a re-upload replaces or is
reported ``AlreadyStored``, never a second copy), and every request to Orthanc is retried while
Orthanc is unreachable, up to ``[orthanc] retry_seconds``; after that the results wait for the
delivery thread, never recomputed.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from dicom_io.spool import write_durably
from dicom_io.uids import path_under
from plugin.node.config import HepaticaConfig
from plugin.node.jobs import Job, JobQueue
from plugin.node.metrics import MeteredQueue
from plugin.node.orthanc.app import heartbeat_path
from plugin.node.orthanc.filters import TriggerRules, is_own_series
from plugin.node.orthanc.study import get_json, is_orthanc_id, lookup_study, series_facts
from plugin.node.orthanc_priors import orthanc_priors
from plugin.node.worker import Acknowledge, Worker, pipeline_settings
from plugin.pipeline.models import installed_version

__all__ = ["OrthancClient", "OrthancError", "OrthancInbox", "OrthancOutbox",
           "OrthancUnavailable", "OrthancWorker"]

log = logging.getLogger(__name__)

_RETRY_STATUSES = frozenset({502, 503, 504})


class OrthancError(RuntimeError):
    """Orthanc answered, but with an error (the message carries its explanation)."""


class OrthancUnavailable(OrthancError):
    """Orthanc could not be reached for ``retry_seconds``."""


class OrthancClient:
    """Orthanc's REST API over HTTP with the stdlib; basic auth from the configuration."""

    def __init__(self, url: str, username: str = "", password: str = "", *,
                 timeout: float = 60.0, retry_seconds: float = 120.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retry_seconds = retry_seconds
        self._sleep = sleep
        self._headers: dict[str, str] = {}
        if username:
            token = base64.b64encode(f"{username}:{password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"

    def get(self, path: str) -> bytes:
        return self._request("GET", path)

    def post(self, path: str, body: bytes, content_type: str = "text/plain") -> bytes:
        return self._request("POST", path, body, content_type)

    def _request(self, method: str, path: str, body: bytes | None = None,
                 content_type: str = "application/octet-stream") -> bytes:
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.25
        while True:
            try:
                return self._once(method, path, body, content_type)
            except OrthancUnavailable as exc:
                if time.monotonic() + delay > deadline:
                    raise OrthancUnavailable(f"{exc} (gave up after {self.retry_seconds:.0f} s)"
                                             ) from exc
                log.warning("%s; retrying in %.1f s", exc, delay)
                self._sleep(delay)
                delay = min(delay * 2, 5.0)

    def _once(self, method: str, path: str, body: bytes | None, content_type: str) -> bytes:
        headers = dict(self._headers)
        if body is not None:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(self.url + path, body, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                data: bytes = response.read()
                return data
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500].decode("utf-8", "replace")
            if exc.code == 404:
                raise LookupError(f"{method} {path}: Orthanc has no such resource") from exc
            if exc.code in _RETRY_STATUSES:
                raise OrthancUnavailable(f"{method} {path}: HTTP {exc.code}") from exc
            hint = " (check [orthanc] username/password)" if exc.code in (401, 403) else ""
            raise OrthancError(f"{method} {path}: HTTP {exc.code}{hint}: {detail}") from exc
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError,
                TimeoutError) as exc:
            raise OrthancUnavailable(f"{method} {self.url}{path}: {exc}") from exc

    @classmethod
    def from_config(cls, config: HepaticaConfig) -> OrthancClient:
        o = config.orthanc
        return cls(o.url, o.username, o.password, timeout=o.timeout_seconds,
                   retry_seconds=o.retry_seconds)


@dataclass
class OrthancInbox:
    """A claimed study's source series (never Hepatica's earlier results), downloaded into a
    work folder that is removed after the run."""

    client: OrthancClient
    rules: TriggerRules
    work_root: Path
    timing_key: str | None = "download"

    def tick(self, queue: JobQueue) -> None:
        """Nothing: the plugin inside Orthanc queues jobs when Orthanc says a study is stable."""

    @contextmanager
    def study(self, job: Job) -> Iterator[Path]:
        work = path_under(self.work_root, job.study_uid)  # checked before it names anything
        try:
            count = self.download(job.study_uid, work)
            log.info("job %d: %d instances downloaded", job.id, count)
            yield work
        finally:
            shutil.rmtree(path_under(self.work_root, job.study_uid), ignore_errors=True)

    def download(self, study_uid: str, folder: Path, *, durable: bool = False) -> int:
        """The study's source instances into ``folder`` (emptied first), one file each,
        named by Orthanc's instance ID; ``durable`` syncs them (the prior cache keeps them)."""
        study_id = lookup_study(self.client, study_uid)
        if study_id is None:
            raise LookupError(f"Orthanc no longer has study {study_uid}")
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        count = 0
        for entry in get_json(self.client, f"/studies/{study_id}/series"):
            series = series_facts(entry)
            if is_own_series(series, self.rules):
                continue
            for instance in series.instance_ids:
                if not is_orthanc_id(instance):
                    raise OrthancError("Orthanc answered an instance ID that is not one")
                data = self.client.get(f"/instances/{instance}/file")
                target = folder / f"{instance}.dcm"
                if durable:
                    write_durably(target, data)
                else:
                    target.write_bytes(data)
                count += 1
        return count


class OrthancOutbox:
    """``POST /instances`` each result; Orthanc files them under the source study."""

    timing_key = "upload"

    def __init__(self, client: OrthancClient) -> None:
        self.client = client
        self.name = f"Orthanc {client.url}"

    def deliver(self, files: Sequence[Path], acknowledged: Acknowledge) -> None:
        for path in files:
            answer = json.loads(self.client.post("/instances", path.read_bytes(),
                                                 "application/dicom"))
            if answer.get("Status") not in ("Success", "AlreadyStored"):
                raise OrthancError(f"Orthanc did not store {path.name}: {answer}")
            acknowledged([path])


class OrthancWorker:
    """start(), then stop() (or run_forever()); ``workers`` threads share one queue."""

    def __init__(self, config: HepaticaConfig, client: OrthancClient | None = None) -> None:
        self.config = config
        self.client = client or OrthancClient.from_config(config)
        rules = TriggerRules.from_config(config.orthanc, config.pipeline.series_number_base)
        self.inbox = OrthancInbox(self.client, rules, config.data_dir / "orthanc-work")
        self.outbox = OrthancOutbox(self.client)
        self.version = installed_version(config.pipeline.bundle_dirs)
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.queue = MeteredQueue(config.database, self.version)  # counts for /metrics
        # priors come from Orthanc itself, downloaded like the study (source series only)
        download = partial(self.inbox.download, durable=True)
        settings = pipeline_settings(config, orthanc_priors(config, self.client, download))
        self.worker = Worker(config, self.queue, self.inbox, self.outbox, settings,
                             heartbeat=heartbeat_path(config),
                             heartbeat_info={"orthanc": self.client.url})

    @property
    def work_root(self) -> Path:
        return self.inbox.work_root

    def start(self) -> None:
        self.worker.start("hepatica-orthanc")

    def stop(self, timeout: float = 30.0) -> None:
        """Let running jobs finish (up to ``timeout``); unfinished ones recover at restart."""
        self.worker.stop(timeout)

    def run_forever(self) -> None:
        self.worker.run_forever()

    def run_job(self, job: Job) -> Job | None:
        return self.worker.run_job(job)
