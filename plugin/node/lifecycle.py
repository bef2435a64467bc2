"""The life cycle every long-running part of a node shares: take the data folder, run
named threads, stop them, block until a signal. Written once for the worker and the Celery
dispatcher, so both start, stop and recover alike."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO

from dicom_io.privacy import use_installation_key
from plugin.node.config import HepaticaConfig
from plugin.node.jobs import JobQueue

__all__ = ["NodeThreads"]


@dataclass
class NodeThreads:
    """Threads over one job queue; the subclass says which loops run (``start``)."""

    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _threads: list[threading.Thread] = field(default_factory=list, init=False)
    _lock_file: IO[str] | None = field(default=None, init=False)

    config: HepaticaConfig = field(init=False)
    queue: JobQueue = field(init=False)

    def _take_data_dir(self) -> None:
        """One process per data folder (a lock file), and its keyed-hash secret in use."""
        from plugin.node.worker import exclusive_lock

        self._lock_file = exclusive_lock(self.config.data_dir / "worker.lock")
        use_installation_key(self.config.data_dir)

    def _run_threads(self, loops: Sequence[Callable[[], None]], name: str) -> None:
        for i, target in enumerate(loops):
            thread = threading.Thread(target=target, name=f"{name}-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Let running work finish (up to ``timeout``); unfinished jobs recover at restart."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self.queue.close()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def run_forever(self) -> None:
        """Block until SIGINT/SIGTERM (raised as KeyboardInterrupt/SystemExit), then stop."""
        try:
            while not self._stop.is_set():
                time.sleep(0.5)
        finally:
            self.stop()

    @property
    def alive(self) -> list[str]:
        """Names of the threads still running (all of them, unless stopped)."""
        return [thread.name for thread in self._threads if thread.is_alive()]
