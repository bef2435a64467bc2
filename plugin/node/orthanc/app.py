"""The plugin's behaviour, without Orthanc: the stable-study trigger and the REST routes.

``hepatica_orthanc.py`` builds one :class:`HepaticaOrthanc` with an adapter over
``orthanc.RestApiGet``/``RestApiPost`` and forwards Orthanc's callbacks to it. Nothing here
runs inference: the trigger records a job in the SQLite queue that the worker process
(``hepatica serve --orthanc URL``) claims, because all of Orthanc's Python callbacks share
one interpreter lock and a segmentation would stall every other callback for its duration.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plugin import __version__
from plugin.node.config import HepaticaConfig
from plugin.node.jobs import Job, JobQueue
from plugin.node.orthanc.filters import Decision, TriggerRules, decide, source_fingerprint
from plugin.node.orthanc.store import OrthancStore
from plugin.node.orthanc.study import (
    OrthancPost,
    gather_facts,
    get_json,
    is_orthanc_id,
    lookup_study,
)
from plugin.pipeline.models import installed_version

__all__ = ["HEARTBEAT_STALE_SECONDS", "HepaticaOrthanc", "Trigger", "heartbeat_path"]

log = logging.getLogger(__name__)

HEARTBEAT_STALE_SECONDS = 60.0
"""A worker that has not written its heartbeat for this long is reported as not running."""


def heartbeat_path(config: HepaticaConfig) -> Path:
    """The file the Orthanc worker rewrites while it runs (see plugin.node.orthanc_worker)."""
    return config.data_dir / "orthanc-worker.json"


def store_path(config: HepaticaConfig) -> Path:
    return config.data_dir / "orthanc.sqlite3"


@dataclass(frozen=True)
class Trigger:
    """What a stable-study event (or a re-run request) did."""

    study_uid: str
    decision: Decision
    job: Job | None = None


class HepaticaOrthanc:
    """One per Orthanc process; every method is safe to call from Orthanc's threads."""

    def __init__(self, config: HepaticaConfig, api: OrthancPost,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.api = api
        self.rules = TriggerRules.from_config(config.orthanc, config.pipeline.series_number_base)
        self.store = OrthancStore(store_path(config), clock)
        self._clock = clock
        self._queues: dict[str, JobQueue] = {}
        self._queues_lock = threading.Lock()

    def close(self) -> None:
        for queue in self._queues.values():
            queue.close()
        self.store.close()

    # ----------------------------------------------------------------- queue
    def pipeline_version(self) -> str:
        """Read from the installed bundle each time: a new bundle takes effect without restart."""
        return installed_version(self.config.pipeline.bundle_dirs)

    def queue(self, version: str | None = None) -> JobQueue:
        version = self.pipeline_version() if version is None else version
        with self._queues_lock:
            if version not in self._queues:
                self._queues[version] = JobQueue(self.config.database, version, self._clock)
            return self._queues[version]

    def history(self) -> JobQueue:
        """A queue handle for reading every version's jobs (``list``/``get`` ignore versions)."""
        return self.queue("")

    # ----------------------------------------------------------------- trigger
    def on_stable_study(self, study_id: str) -> Trigger:
        """Orthanc says the study is stable: queue it if the rules and its history want it."""
        facts = gather_facts(self.api, study_id, self.rules)
        decision = decide(facts, self.rules)
        if not decision.run:
            return Trigger(facts.study_uid, decision)
        version = self.pipeline_version()
        fingerprint = source_fingerprint(facts, self.rules)
        queue = self.queue(version)
        known = queue.by_study(facts.study_uid)
        if known is not None and self.store.fingerprint(facts.study_uid, version) == fingerprint:
            reason = f"source instances unchanged since job {known.id} was queued ({known.state})"
            return Trigger(facts.study_uid, Decision(False, reason), known)
        job = queue.enqueue(facts.study_uid)
        self.store.remember(facts.study_uid, version, fingerprint, study_id)
        return Trigger(facts.study_uid, decision, job)

    def catch_up(self, page_size: int = 1000) -> list[Trigger]:
        """At Orthanc's start: decide on studies that changed but never became stable.

        Orthanc keeps its stability timers in memory, so a study still arriving when Orthanc
        stopped never gets a stable event after the restart (measured with 1.10.1). Its
        change log survives, though: every study with a NewStudy/NewSeries change newer than
        its last StableStudy change, since the previous start-up, is decided on now. The
        first start only records where the log stands (old studies are not processed).
        """
        since = self.store.cursor()
        if since is None:
            self.store.set_cursor(int(get_json(self.api, "/changes?last")["Last"]))
            return []
        changed, stable = self._changes_since(since, page_size)
        pending = [study for study, seq in changed.items() if stable.get(study, -1) < seq]
        triggers = []
        for study in pending:
            try:
                triggers.append(self.on_stable_study(study))
            except LookupError:  # deleted since
                continue
        return triggers

    def _changes_since(self, since: int, page_size: int) -> tuple[dict[str, int], dict[str, int]]:
        changed: dict[str, int] = {}
        stable: dict[str, int] = {}
        while True:
            page = get_json(self.api, f"/changes?since={since}&limit={page_size}")
            for change in page.get("Changes", ()):
                kind, seq, rid = change["ChangeType"], int(change["Seq"]), str(change["ID"])
                if kind == "StableStudy":
                    stable[rid] = seq
                elif kind == "NewStudy":
                    changed[rid] = seq
                elif kind == "NewSeries":
                    parent = self._parent_study(rid)
                    if parent is not None:
                        changed[parent] = seq
            since = max(since, int(page.get("Last", since)))
            self.store.set_cursor(since)
            if page.get("Done", True) or not page.get("Changes"):
                return changed, stable

    def _parent_study(self, series_id: str) -> str | None:
        try:
            return str(get_json(self.api, f"/series/{series_id}")["ParentStudy"])
        except LookupError:
            return None

    def rerun(self, study: str) -> Trigger:
        """Queue a study on request, whatever the filters say (an Orthanc ID or a UID)."""
        study_id = study if is_orthanc_id(study) else lookup_study(self.api, study)
        if study_id is None:
            raise LookupError(f"Orthanc has no study with StudyInstanceUID {study}")
        facts = gather_facts(self.api, study_id, self.rules)
        if not facts.study_uid:
            raise LookupError(f"Orthanc study {study_id} has no StudyInstanceUID")
        version = self.pipeline_version()
        job = self.queue(version).enqueue(facts.study_uid)
        self.store.remember(facts.study_uid, version, source_fingerprint(facts, self.rules),
                            study_id)
        return Trigger(facts.study_uid, Decision(True, "re-run requested"), job)

    def study_uid(self, study: str) -> str:
        """A StudyInstanceUID from either form; Orthanc IDs are looked up."""
        if not is_orthanc_id(study):
            return study
        tags = json.loads(self.api.get(f"/studies/{study}")).get("MainDicomTags", {})
        return str(tags.get("StudyInstanceUID", ""))

    # ----------------------------------------------------------------- health
    def health(self) -> dict[str, Any]:
        problems: list[str] = []
        version: str | None = None
        try:
            version = self.pipeline_version()
        except LookupError as exc:
            problems.append(str(exc))
        worker = self._worker_heartbeat()
        if worker is None:
            problems.append("no Hepatica worker has reported (start `hepatica serve --orthanc`)")
        elif worker["age_seconds"] > HEARTBEAT_STALE_SECONDS:
            problems.append(f"the worker's last heartbeat is {worker['age_seconds']:.0f} s old")
        return {"status": "degraded" if problems else "ok", "problems": problems,
                "hepatica": __version__, "pipeline_version": version,
                "database": str(self.config.database), "worker": worker}

    def _worker_heartbeat(self) -> dict[str, Any] | None:
        try:
            beat: dict[str, Any] = json.loads(heartbeat_path(self.config).read_text())
        except (OSError, ValueError):
            return None
        beat["age_seconds"] = round(self._clock() - float(beat.get("time", 0.0)), 1)
        return beat
