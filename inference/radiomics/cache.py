"""A per-study cache of extracted features, so that a second model does not extract again.

Keys join study, phase, region hash and settings hash (see ``extract.make_tasks``): a changed
segmentation or settings file misses, the same study served to another bundle hits. One JSON
file per key under ``root/<study>/``: written atomically, readable by a person, and removed
with the study folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

__all__ = ["FeatureCache"]


class FeatureCache:
    """In-memory map backed, when ``root`` is given, by JSON files that survive restarts."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root
        self.hits = 0
        self.misses = 0
        self._memory: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()

    def _file(self, key: str) -> Path | None:
        if self.root is None:
            return None
        study = hashlib.sha256(key.split("|", 1)[0].encode()).hexdigest()[:16]
        return self.root / study / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")

    def get(self, key: str) -> dict[str, float] | None:
        """The features stored under ``key``, or None (counted as a miss)."""
        with self._lock:
            found = self._memory.get(key)
            if found is None:
                found = self._load(key)
            if found is None:
                self.misses += 1
                return None
            self._memory[key] = found
            self.hits += 1
            return dict(found)

    def _load(self, key: str) -> dict[str, float] | None:
        file = self._file(key)
        if file is None or not file.is_file():
            return None
        try:
            data = json.loads(file.read_text())
        except (OSError, ValueError):
            return None
        if data.get("key") != key:
            return None
        return {str(k): float(v) for k, v in data["features"].items()}

    def put(self, key: str, features: dict[str, float]) -> None:
        """Store ``features``; the file is replaced atomically (temporary file + rename)."""
        with self._lock:
            self._memory[key] = dict(features)
            file = self._file(key)
            if file is None:
                return
            file.parent.mkdir(parents=True, exist_ok=True)
            temp = file.with_suffix(f".{os.getpid()}.tmp")
            temp.write_text(json.dumps({"key": key, "features": features}))
            temp.replace(file)
