"""Real peers for integration tests: DCMTK tools and `hepatica serve` as subprocesses.

Every process is started here, on loopback, and ended by PID in the fixture's finaliser.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from plugin.cli.demo import free_port, start_archive
from plugin.node.jobs import Job, JobQueue, JobState

STORESCU = "/usr/bin/storescu"
DCIODVFY = "/usr/bin/dciodvfy"
NODELAY = {**os.environ, "TCP_NODELAY": "1"}

__all__ = ["free_port", "start_archive"]


def write_config(path: Path, *, port: int, archive_port: int, data_dir: Path,
                 stable_seconds: float = 2.0) -> Path:
    path.write_text(f"""data_dir = "{data_dir}"
[listener]
ae_title = "HEPATICA"
host = "127.0.0.1"
port = {port}
[destination]
ae_title = "ARCHIVE"
host = "127.0.0.1"
port = {archive_port}
retries = 5
backoff_seconds = 0.5
[pipeline]
stable_seconds = {stable_seconds}
""")
    return path


def start_node(config: Path, log: Path, port: int) -> subprocess.Popen[bytes]:
    """`hepatica serve` in its own process; returns once it accepts associations."""
    handle = log.open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "plugin.cli", "serve", "--config",
                             str(config)], stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"hepatica serve exited: {log.read_text()[-2000:]}")
        if _echo(port):
            return proc
        time.sleep(0.2)
    stop(proc)
    raise TimeoutError("hepatica serve did not start listening within 60 s")


def _echo(port: int) -> bool:
    run = subprocess.run(["/usr/bin/echoscu", "-aec", "HEPATICA", "127.0.0.1", str(port)],
                         capture_output=True, timeout=10, check=False)
    return run.returncode == 0


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """End a process we started, by PID."""
    if proc.poll() is None:
        os.kill(proc.pid, sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)


def storescu(files_or_dir: list[Path], port: int, calling: str = "PACS",
             verbose: bool = False) -> subprocess.CompletedProcess[str]:
    """DCMTK storescu of files (or a folder, recursively) to the node."""
    args = [STORESCU, "-aet", calling, "-aec", "HEPATICA", "--no-halt", *(["-v"] if verbose
                                                                            else [])]
    if any(p.is_dir() for p in files_or_dir):
        args += ["+sd", "+r"]
    args += ["127.0.0.1", str(port), *map(str, files_or_dir)]
    return subprocess.run(args, capture_output=True, text=True, timeout=300, env=NODELAY,
                          check=False)


def wait_for_job(database: Path, study_uid: str, states: set[JobState],
                 timeout: float = 600.0) -> Job:
    """Poll the node's job database (read-only use) until the study's job is in ``states``."""
    deadline = time.monotonic() + timeout
    last: Job | None = None
    while time.monotonic() < deadline:
        if database.exists():
            queue = JobQueue(database, pipeline_version="")
            try:
                found = [j for j in queue.list() if j.study_uid == study_uid]
            finally:
                queue.close()
            if found:
                last = found[0]
                if last.state in states:
                    return last
        time.sleep(0.2)
    raise TimeoutError(f"job for the study not in {states} after {timeout} s; last: {last}")


def dciodvfy_errors(path: Path) -> list[str]:
    run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60,
                         check=False)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]
