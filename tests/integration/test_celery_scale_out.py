"""Issue 14 part 1: two Celery workers on a Redis broker, a batch of studies, one SIGKILL.

Everything is real and on loopback: Debian's ``redis-server`` started here on a free port (no
system service), `hepatica serve --queue celery://…` receiving from DCMTK storescu, two
`hepatica worker --celery …` processes sharing the node's data_dir (shared storage), DCMTK
storescp as the archive. One worker is SIGKILLed while it runs a job; its task goes to the
other worker, and every study is processed and delivered exactly once. Every process started
here is ended by its PID.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from plugin.node.jobs import Job, JobQueue, JobState
from tests.integration.nodes import start_archive, stop, storescu
from tests.integration.scale_helpers import SMALL_RESULTS, http_get, node_config, small_study
from tests.orthanc.orthanc_server import free_port

redis = pytest.importorskip("redis", reason="needs the 'scale' extra (celery, redis)")
pytest.importorskip("celery", reason="needs the 'scale' extra (celery, redis)")

REDIS_SERVER = Path("/usr/bin/redis-server")
SEEDS = (424_330, 424_331, 424_332, 424_333)
VISIBILITY_S, LOCK_S = 15.0, 4.0

pytestmark = [pytest.mark.network, pytest.mark.skipif(
    not REDIS_SERVER.exists(), reason="needs Debian's redis-server")]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[str]:
    """A private redis-server on a free loopback port, without persistence."""
    port = free_port()
    folder = tmp_path / "redis"
    folder.mkdir()
    proc = subprocess.Popen([str(REDIS_SERVER), "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(folder)],
                            stdout=(folder / "redis.log").open("wb"), stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        client.close()
        stop(proc)


def test_study_lock_excludes_renews_and_lapses_with_its_holder(broker: str,
                                                               tmp_path: Path) -> None:
    from plugin.node.celery_app import WorkerRuntime
    from plugin.node.config import load_config

    config = load_config(environ={"HEPATICA_DATA_DIR": str(tmp_path / "d"),
                                  "HEPATICA_CELERY__LOCK_SECONDS": "1.0"})
    client = redis.Redis.from_url(broker)

    def runtime(name: str) -> WorkerRuntime:
        return WorkerRuntime(config, "v", None, None, None, None, client, name)  # type: ignore[arg-type]

    first, second = runtime("a"), runtime("b")
    uid = "1.2.826.0.1.3680043.8.498.1"
    with first._study_lock(uid) as held:
        assert held
        time.sleep(2.5)  # over twice the expiry: only renewal keeps it
        with second._study_lock(uid) as other:
            assert not other
    with second._study_lock(uid) as again:
        assert again  # released at the end of the run
    key = f"hepatica:lock:study:{uid}"
    client.set(key, "a dead worker's token", px=800)  # held by nobody alive, expiring
    with second._study_lock(uid) as busy:
        assert not busy
    time.sleep(1.0)
    with second._study_lock(uid) as lapsed:
        assert lapsed


def _worker(name: str, broker: str, config: Path, log: Path,
            status_port: int) -> subprocess.Popen[bytes]:
    """`hepatica worker` in its own session, returned once Celery says it is ready."""
    proc = subprocess.Popen([sys.executable, "-m", "plugin.cli", "worker", "--celery", broker,
                             "--config", str(config), "--name", name, "--status-port",
                             str(status_port)], stdout=log.open("ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker {name} exited: {log.read_text()[-2000:]}")
        if "ready." in log.read_text(errors="replace"):
            return proc
        time.sleep(0.2)
    stop(proc)
    raise TimeoutError(f"worker {name} not ready: {log.read_text()[-2000:]}")


def _jobs(database: Path) -> list[Job]:
    queue = JobQueue(database, pipeline_version="")
    try:
        return queue.list()
    finally:
        queue.close()


def _ledger(client: Any) -> list[dict[str, Any]]:
    return [json.loads(item) for item in client.lrange("hepatica:runs", 0, -1)]


@pytest.mark.dcmtk
@pytest.mark.slow
def test_two_workers_process_a_batch_exactly_once_through_a_sigkill(
        broker: str, tmp_path: Path) -> None:
    studies = [small_study(tmp_path / f"study{i}", seed) for i, seed in enumerate(SEEDS)]
    data_dir = tmp_path / "shared"  # node and workers: the same folder (shared storage)
    archive_port, port = free_port(), free_port()
    celery = f"[celery]\nvisibility_timeout_seconds = {VISIBILITY_S}\nlock_seconds = {LOCK_S}\n"
    destination = f'[destination]\nae_title = "ARCHIVE"\nport = {archive_port}\nretries = 3\n'
    node_toml = node_config(tmp_path / "node.toml", data_dir=data_dir, port=port,
                            extra=destination + celery)
    worker_toml = node_config(tmp_path / "worker.toml", data_dir=data_dir, port=port,
                              status_port=0, extra=destination + celery)
    client = redis.Redis.from_url(broker)
    procs: list[subprocess.Popen[bytes]] = []
    archive = start_archive(tmp_path / "archive", archive_port)
    try:
        ports = {"w1": free_port(), "w2": free_port()}
        workers = {name: _worker(name, broker, worker_toml, tmp_path / f"{name}.log", p)
                   for name, p in ports.items()}
        procs += workers.values()
        procs.append(subprocess.Popen(  # the node, enqueueing on Celery
            [sys.executable, "-m", "plugin.cli", "serve", "--config", str(node_toml),
             "--queue", broker.replace("redis://", "celery://")],
            stdout=(tmp_path / "serve.log").open("ab"), stderr=subprocess.STDOUT))
        _wait_listening(port, procs[-1], tmp_path / "serve.log")
        for folder, _ in studies:
            assert storescu([folder], port).returncode == 0
        victim, victim_study, killed_at = _kill_one_mid_job(client, workers)
        database = data_dir / "jobs.sqlite3"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            jobs = _jobs(database)
            if len(jobs) == len(studies) and all(j.state in (JobState.DONE, JobState.FAILED,
                                                            JobState.DEAD) for j in jobs):
                break
            time.sleep(0.5)
        jobs = {j.study_uid: j for j in _jobs(database)}
        assert set(jobs) == {uid for _, uid in studies}
        for uid, job in jobs.items():
            assert job.state == JobState.DONE, (uid, job.error)
            assert job.attempts == 1, job  # the redelivery was Celery's, not a new attempt
        runs = _ledger(client)
        done_per_study = {uid: [r for r in runs if r["study"] == uid and r["outcome"] == "done"]
                          for uid in jobs}
        assert all(len(r) == 1 for r in done_per_study.values()), done_per_study
        survivor = next(name for name in workers if name != victim)
        rescued = done_per_study[victim_study][0]
        assert rescued["worker"] == survivor and rescued["started"] > killed_at
        assert client.keys("hepatica:active:*") == [] or all(
            victim in json.loads(client.get(k) or b"{}").get("worker", "")
            for k in client.keys("hepatica:active:*"))  # only the dead worker's marker stays
        archived = sorted(p for p in (tmp_path / "archive").rglob("*") if p.is_file())
        uids = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
                for p in archived]
        assert len(uids) == len(set(uids)) == SMALL_RESULTS * len(studies)  # each once
        survivor_runs = sum(1 for r in runs if r["worker"] == survivor)
        status, text, _ = http_get(f"http://127.0.0.1:{ports[survivor]}/metrics")
        assert status == 200
        assert f'hepatica_jobs_finished_total{{state="done"}} {float(survivor_runs)}' in text
        assert "hepatica_step_duration_seconds_count" in text
    finally:
        for proc in reversed(procs):
            stop(proc)
        stop(archive)


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"hepatica serve exited: {log.read_text()[-2000:]}")
        echo = subprocess.run(["/usr/bin/echoscu", "-aec", "HEPATICA", "127.0.0.1", str(port)],
                              capture_output=True, timeout=10, check=False)
        if echo.returncode == 0:
            return
        time.sleep(0.2)
    raise TimeoutError("hepatica serve did not listen")


def _kill_one_mid_job(client: Any, workers: dict[str, subprocess.Popen[bytes]]
                      ) -> tuple[str, str, float]:
    """SIGKILL the worker of the first job seen running; its name, study and the time."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for key in client.keys("hepatica:active:*"):
            entry = json.loads(client.get(key) or b"{}")
            name = str(entry.get("worker", ""))
            if name in workers:
                os.killpg(workers[name].pid, signal.SIGKILL)  # its whole session, no goodbye
                workers[name].wait(10)
                return name, str(entry["study"]), time.time()
        time.sleep(0.05)
    raise AssertionError("no job was seen running on a worker")
