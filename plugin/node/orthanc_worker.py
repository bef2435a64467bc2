"""`hepatica serve --orthanc URL`: the worker beside Orthanc.

Claims the jobs that the Orthanc plugin (``plugin/orthanc``) queued in the shared SQLite
database, downloads each study's source instances over Orthanc's REST API, runs the
pipeline and stores SEG, SR and heatmaps back with ``POST /instances``, where they join the
same study. It runs in its own process because every Orthanc Python callback shares one
interpreter lock.

Nothing is lost or duplicated across restarts: jobs live in SQLite (a job left running by a
killed worker is queued again at start-up), result UIDs derive from the study and the
pipeline version (a re-upload replaces or is reported ``AlreadyStored``, never a second
copy), and every request to Orthanc is retried while Orthanc is unreachable, up to
``[orthanc] retry_seconds``. One worker process per job database: a lock file enforces it,
because recovery at start-up cannot tell a live worker's job from a dead one's.
"""

from __future__ import annotations

import base64
import fcntl
import http.client
import json
import logging
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

from plugin.node.config import HepaticaConfig
from plugin.node.jobs import Job, JobQueue, JobState, JobStateError
from plugin.node.orthanc.app import heartbeat_path
from plugin.node.orthanc.filters import TriggerRules, is_own_series
from plugin.node.orthanc.study import get_json, lookup_study, series_facts
from plugin.node.orthanc_priors import orthanc_priors
from plugin.pipeline.models import NoModelError, installed_version
from plugin.pipeline.prediction import ResponseSettings
from plugin.pipeline.run import PipelineError, PipelineSettings, process_study

__all__ = ["OrthancClient", "OrthancError", "OrthancUnavailable", "OrthancWorker"]

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 5.0
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


class OrthancWorker:
    """start(), then stop() (or run_forever()); ``workers`` threads share one queue."""

    def __init__(self, config: HepaticaConfig, client: OrthancClient | None = None) -> None:
        self.config = config
        self.client = client or OrthancClient.from_config(config)
        self.rules = TriggerRules.from_config(config.orthanc, config.pipeline.series_number_base)
        self.settings = PipelineSettings(config.pipeline.bundle_dirs,
                                         config.pipeline.series_number_base,
                                         config.pipeline.providers,
                                         ResponseSettings(config.data_dir),
                                         phase_rules=config.pipeline.phase_rules)
        # priors come from Orthanc itself, downloaded like the study (source series only)
        self.settings = replace(self.settings,
                                priors=orthanc_priors(config, self.client, self.download))
        self.version = installed_version(config.pipeline.bundle_dirs)
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = _exclusive_lock(config.data_dir / "orthanc-worker.lock")
        self.queue = JobQueue(config.database, self.version)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def work_root(self) -> Path:
        return self.config.data_dir / "orthanc-work"

    def start(self) -> None:
        for job in self.queue.recover(self.config.pipeline.max_attempts):
            log.info("recovered job %d (study …%s) as %s", job.id, job.study_uid[-12:], job.state)
        self._beat("starting")
        targets = [self._heartbeat] + [self._work] * self.config.pipeline.workers
        for i, target in enumerate(targets):
            thread = threading.Thread(target=target, name=f"hepatica-orthanc-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Let running jobs finish (up to ``timeout``); unfinished ones recover at restart."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self.queue.close()
        self._lock_file.close()

    def run_forever(self) -> None:
        try:
            while not self._stop.is_set():
                time.sleep(0.5)
        finally:
            self.stop()

    def _work(self) -> None:
        while not self._stop.is_set():
            job = self.queue.claim()
            if job is None:
                self._stop.wait(POLL_SECONDS)
                continue
            try:
                self.run_job(job)
            except JobStateError as exc:  # another process re-queued it: its report wins
                log.warning("job %d: %s", job.id, exc)

    def run_job(self, job: Job) -> Job:
        """Download, process, upload and record one claimed job; errors become states."""
        started = time.perf_counter()
        work = self.work_root / job.study_uid
        out_dir = self.config.results_dir / job.study_uid
        try:
            fetched = time.perf_counter()
            count = self.download(job.study_uid, work)
            log.info("job %d: %d instances downloaded", job.id, count)
            fetched = time.perf_counter() - fetched
            result = process_study(work, out_dir, self.settings)
            timings = {**result.summary["timings_s"], "download": round(fetched, 3)}
            self.queue.mark(job.id, JobState.SENDING, timings=timings, result_dir=str(out_dir))
            sent = time.perf_counter()
            self.upload(result.files)
            timings["upload"] = round(time.perf_counter() - sent, 3)
        except (PipelineError, NoModelError, LookupError) as exc:  # retrying cannot help
            log.error("job %d failed: %s", job.id, exc)
            return self.queue.mark(job.id, JobState.FAILED, error=str(exc))
        except Exception as exc:  # Orthanc down too long, disk full…: retried
            log.exception("job %d attempt %d failed", job.id, job.attempts)
            return self.queue.fail(job.id, f"{type(exc).__name__}: {exc}",
                                   self.config.pipeline.max_attempts)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        timings["total"] = round(time.perf_counter() - started, 3)
        log.info("job %d done in %.1f s", job.id, timings["total"])
        return self.queue.mark(job.id, JobState.DONE, timings=timings)

    def download(self, study_uid: str, folder: Path) -> int:
        """The study's source instances (not Hepatica's earlier results) into ``folder``."""
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
                data = self.client.get(f"/instances/{instance}/file")
                (folder / f"{instance}.dcm").write_bytes(data)
                count += 1
        return count

    def upload(self, files: list[Path]) -> list[dict[str, Any]]:
        """``POST /instances`` each result; Orthanc files them under the source study."""
        answers = []
        for path in files:
            answer = json.loads(self.client.post("/instances", path.read_bytes(),
                                                 "application/dicom"))
            if answer.get("Status") not in ("Success", "AlreadyStored"):
                raise OrthancError(f"Orthanc did not store {path.name}: {answer}")
            answers.append(answer)
        return answers

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            self._beat("running")

    def _beat(self, state: str) -> None:
        path = heartbeat_path(self.config)
        beat = {"pid": os.getpid(), "time": time.time(), "state": state,
                "pipeline_version": self.version, "orthanc": self.client.url}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(beat))
        tmp.replace(path)


def _exclusive_lock(path: Path) -> IO[str]:
    handle = path.open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RuntimeError(f"another Hepatica Orthanc worker holds {path}; run one worker "
                           "process per data_dir (raise [pipeline] workers for more threads)"
                           ) from None
    return handle
