"""`hepatica bench --end-to-end`: the path as users feel it, on loopback with real peers.

DCMTK ``storescu`` sends a phantom study to a ``hepatica serve`` process, which stores the
results in a DCMTK ``storescp`` archive. Reported, per run and as medians: ingest rate
against ``storescp`` itself (the same study, the same link, measured in the same run; it
does not fsync), the time from the last acknowledged image to the last result in the
archive, and the job's per-step times; every figure also as a ratio to the reference
workload of :func:`plugin.cli.bench.reference_seconds`. Processes are ended by PID.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom

from dicom_io.synthetic import make_phantom, write_phantom_study
from plugin.cli.bench import reference_seconds
from plugin.cli.demo import free_port, start_archive

STORESCU = "/usr/bin/storescu"
ECHOSCU = "/usr/bin/echoscu"
Progress = Callable[[str], None]


def _storescu(folder: Path, port: int, called: str) -> float:
    """Seconds to send every file under ``folder`` on one association (DCMTK storescu)."""
    env = {**os.environ, "TCP_NODELAY": "1"}
    started = time.perf_counter()
    subprocess.run([STORESCU, "-aet", "PACS", "-aec", called, "--no-halt", "+sd", "+r",
                    "127.0.0.1", str(port), str(folder)], env=env, check=True,
                   capture_output=True, timeout=600)
    return time.perf_counter() - started


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _start_node(folder: Path, port: int, archive_port: int,
                stable_seconds: float | None) -> subprocess.Popen[bytes]:
    stable = "" if stable_seconds is None else f"stable_seconds = {stable_seconds}\n"
    config = folder / "hepatica.toml"
    config.write_text(f'data_dir = "{folder / "data"}"\n[listener]\nae_title = "HEPATICA"\n'
                      f'host = "127.0.0.1"\nport = {port}\n[destination]\n'
                      f'ae_title = "ARCHIVE"\nhost = "127.0.0.1"\nport = {archive_port}\n'
                      f"[pipeline]\n{stable}")
    log = (folder / "node.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "plugin.cli", "serve", "--config",
                             str(config)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"hepatica serve exited; see {folder / 'node.log'}")
        echo = subprocess.run([ECHOSCU, "-aec", "HEPATICA", "127.0.0.1", str(port)],
                              capture_output=True, timeout=10, check=False)
        if echo.returncode == 0:
            return proc
        time.sleep(0.2)
    _end(proc)
    raise TimeoutError("hepatica serve did not listen within 60 s")


def _results_in(archive: Path) -> dict[str, float]:
    """Result objects in the archive (Manufacturer Hepatica) and when each arrived."""
    found = {}
    for path in archive.rglob("*"):
        if path.is_file():
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True,
                                     specific_tags=["Manufacturer", "SOPInstanceUID"])
            except Exception:  # a file still being written: read it at the next poll
                continue
            if str(ds.get("Manufacturer", "")) == "Hepatica":
                found[str(ds.SOPInstanceUID)] = path.stat().st_mtime
    return found


def _job_timings(data_dir: Path) -> dict[str, float]:
    from plugin.node.jobs import JobQueue

    queue = JobQueue(data_dir / "jobs.sqlite3", "bench")
    try:
        jobs = queue.list()
        return dict(jobs[0].timings) if jobs else {}
    finally:
        queue.close()


def _one_run(study: Path, work: Path, expected: int, stable_seconds: float | None,
             timeout_s: float) -> dict[str, Any]:
    baseline_dir = work / "storescp"
    port = free_port()
    baseline = start_archive(baseline_dir, port, "BASELINE")
    try:
        storescp_s = _storescu(study, port, "BASELINE")
    finally:
        _end(baseline)
    archive_port, node_port = free_port(), free_port()
    archive = start_archive(work / "archive", archive_port)
    node = _start_node(work, node_port, archive_port, stable_seconds)
    try:
        node_s = _storescu(study, node_port, "HEPATICA")
        last_ack = time.time()
        deadline = time.monotonic() + timeout_s
        results: dict[str, float] = {}
        while time.monotonic() < deadline:
            results = _results_in(work / "archive")
            if len(results) >= expected:
                break
            time.sleep(0.2)
        else:
            raise TimeoutError(f"{len(results)} of {expected} results after {timeout_s} s")
        to_archive = max(results.values()) - last_ack
    finally:
        _end(node)
        _end(archive)
    images = sum(1 for p in study.rglob("*.dcm"))
    return {"images": images, "storescp_images_per_s": images / storescp_s,
            "node_images_per_s": images / node_s, "ingest_ratio": storescp_s / node_s,
            "last_ack_to_results_s": to_archive,
            "steps_s": _job_timings(work / "data")}


def _expected_results(study: Path, work: Path) -> int:
    """How many objects the pipeline writes for this study (run offline once)."""
    from plugin.pipeline.run import process_study

    return len(process_study(study, work / "offline").files)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("model name")), "")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory_gib": round(memory, 1),
            "python": platform.python_version(), "platform": platform.platform(),
            # a shared machine's figures move with what else runs: keep how busy it was
            "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()]}


def bench_end_to_end(runs: int = 3, seed: int = 7, stable_seconds: float | None = None,
                     progress: Progress | None = None, timeout_s: float = 600.0
                     ) -> dict[str, Any]:
    """Medians over ``runs`` of the loopback path; ``stable_seconds`` None: the default."""
    reference = reference_seconds()
    per_run = []
    with tempfile.TemporaryDirectory(prefix="hepatica-bench-e2e-") as tmp:
        root = Path(tmp)
        write_phantom_study(make_phantom(seed), root / "phantom")
        study = root / "phantom" / "dicom"
        expected = _expected_results(study, root)
        for run in range(runs):
            if progress:
                progress(f"end-to-end run {run + 1}/{runs}")
            work = root / f"run{run}"
            work.mkdir()
            per_run.append(_one_run(study, work, expected, stable_seconds, timeout_s))
    keys = ("storescp_images_per_s", "node_images_per_s", "ingest_ratio",
            "last_ack_to_results_s")
    medians: dict[str, float] = {k: statistics.median(r[k] for r in per_run) for k in keys}
    steps = sorted({s for r in per_run for s in r["steps_s"]})
    step_medians = {s: statistics.median(r["steps_s"].get(s, 0.0) for r in per_run)
                    for s in steps}
    return {"mode": "end-to-end", "reference_seconds": reference, "runs": runs, "seed": seed,
            "stable_seconds": stable_seconds if stable_seconds is not None else "default",
            "images": per_run[0]["images"], "results_per_study": expected,
            "median": medians,
            "last_ack_to_results_x_reference": medians["last_ack_to_results_s"] / reference,
            "step_median_seconds": step_medians,
            "step_x_reference": {k: v / reference for k, v in step_medians.items()},
            "per_run": per_run, "machine": machine(),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def write_result(report: dict[str, Any], folder: Path) -> Path:
    """Keep the figures with the machine description (``tests/benchmarks/results/``)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"e2e-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    return path
