"""What the Orthanc side keeps beside the job queue: trigger fingerprints, clinical variables.

A separate SQLite file (``data_dir/orthanc.sqlite3``) so that the job queue's schema stays
``plugin.node.jobs``'s own. ``triggers`` remembers, per study and pipeline version, the source
instances a job was queued for: Orthanc fires its stable-study event again after Hepatica's
results arrive (and sometimes twice for a study sent in pieces), and only a change of the
source instances may queue the study again. ``clinical`` holds variables posted for a study,
for models that take them.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["ClinicalValue", "OrthancStore", "validate_clinical"]

ClinicalValue = str | int | float | bool | None
_MAX_VARIABLES = 200
_MAX_NAME = 64
_MAX_TEXT = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS triggers (
    study_uid        TEXT NOT NULL,
    pipeline_version TEXT NOT NULL,
    fingerprint      TEXT NOT NULL,
    orthanc_id       TEXT NOT NULL,
    updated_at       REAL NOT NULL,
    PRIMARY KEY (study_uid, pipeline_version)
);
CREATE TABLE IF NOT EXISTS cursor (
    name TEXT PRIMARY KEY,
    seq  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS clinical (
    study_uid  TEXT PRIMARY KEY,
    variables  TEXT NOT NULL,
    updated_at REAL NOT NULL
);
"""


class OrthancStore:
    """Thread-safe; one connection per process, like :class:`plugin.node.jobs.JobQueue`."""

    def __init__(self, database: Path, clock: Callable[[], float] = time.time) -> None:
        self.database = Path(database)
        self.database.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.database, timeout=10.0, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def fingerprint(self, study_uid: str, pipeline_version: str) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT fingerprint FROM triggers WHERE study_uid = ? AND pipeline_version = ?",
                (study_uid, pipeline_version)).fetchone()
        return None if row is None else str(row[0])

    def remember(self, study_uid: str, pipeline_version: str, fingerprint: str,
                 orthanc_id: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO triggers VALUES (?, ?, ?, ?, ?) ON CONFLICT"
                " (study_uid, pipeline_version) DO UPDATE SET fingerprint = excluded.fingerprint,"
                " orthanc_id = excluded.orthanc_id, updated_at = excluded.updated_at",
                (study_uid, pipeline_version, fingerprint, orthanc_id, self._clock()))

    def cursor(self) -> int | None:
        """The last Orthanc change sequence number the start-up catch-up has looked at."""
        with self._lock:
            row = self._db.execute("SELECT seq FROM cursor WHERE name = 'changes'").fetchone()
        return None if row is None else int(row[0])

    def set_cursor(self, seq: int) -> None:
        with self._lock:
            self._db.execute("INSERT INTO cursor VALUES ('changes', ?) ON CONFLICT (name)"
                             " DO UPDATE SET seq = excluded.seq", (seq,))

    def set_clinical(self, study_uid: str, variables: Mapping[str, ClinicalValue]) -> None:
        """Merge ``variables`` into those stored for the study (a later value wins)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT variables FROM clinical WHERE study_uid = ?",
                                       (study_uid,)).fetchone()
                merged = (json.loads(row[0]) if row else {}) | dict(variables)
                self._db.execute(
                    "INSERT INTO clinical VALUES (?, ?, ?) ON CONFLICT (study_uid) DO UPDATE"
                    " SET variables = excluded.variables, updated_at = excluded.updated_at",
                    (study_uid, json.dumps(merged, sort_keys=True), self._clock()))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def clinical(self, study_uid: str) -> dict[str, ClinicalValue]:
        with self._lock:
            row = self._db.execute("SELECT variables FROM clinical WHERE study_uid = ?",
                                   (study_uid,)).fetchone()
        loaded: dict[str, ClinicalValue] = json.loads(row[0]) if row else {}
        return loaded


def validate_clinical(document: Any) -> dict[str, ClinicalValue]:
    """A JSON object of named scalars, or ValueError saying what is wrong with it."""
    if not isinstance(document, dict):
        raise ValueError("clinical variables must be a JSON object of name: value")
    if not 0 < len(document) <= _MAX_VARIABLES:
        raise ValueError(f"send between 1 and {_MAX_VARIABLES} variables")
    for name, value in document.items():
        if not name.strip() or len(name) > _MAX_NAME:
            raise ValueError(f"variable name {name!r} must be 1-{_MAX_NAME} characters")
        if not _scalar(value):
            raise ValueError(f"variable {name!r}: value must be a finite number, a string of at"
                             f" most {_MAX_TEXT} characters, true/false or null")
    return dict(document)


def _scalar(value: object) -> bool:
    if value is None or isinstance(value, bool | int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str) and len(value) <= _MAX_TEXT
