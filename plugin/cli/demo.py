"""`hepatica demo`: one synthetic MR study through the whole DICOM path, on loopback.

phantom → (C-STORE) → hepatica node → SEG + SR + heatmaps → (C-STORE) → an archive played
by DCMTK's storescp. Everything lands under one folder that the command lists at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from dicom_io.sender import Peer, send_files
from dicom_io.synthetic import LesionTruth, make_phantom, write_phantom_study
from plugin.node.config import DestinationConfig, HepaticaConfig, ListenerConfig, PipelineConfig
from plugin.node.jobs import Job, JobState
from plugin.node.service import HepaticaService

STORESCP = "/usr/bin/storescp"
TERMINAL = {JobState.DONE, JobState.FAILED, JobState.DEAD}


def free_port() -> int:
    """A TCP port on loopback that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_archive(folder: Path, port: int, ae_title: str = "ARCHIVE") -> subprocess.Popen[bytes]:
    """DCMTK storescp on loopback, writing what it receives into ``folder``."""
    if not Path(STORESCP).exists():
        raise FileNotFoundError(f"{STORESCP} not found: install DCMTK (apt-get install dcmtk); "
                                "the demo's archive is DCMTK's storescp")
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TCP_NODELAY": "1"}
    proc = subprocess.Popen([STORESCP, "--aetitle", ae_title, "--output-directory", str(folder),
                             "--sort-on-study-uid", "st", "--unique-filenames", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_for_port(port, proc)
    return proc


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"storescp exited with status {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"storescp did not listen on port {port} within {timeout} s")


def run_demo(out: Path, seed: int, console: Console, timeout_s: float = 900.0) -> int:
    """Run the demo; returns 0 when results reached the archive."""
    if out.exists():
        shutil.rmtree(out)
    with console.status("drawing a synthetic 4-phase liver MR study…"):
        phantom = make_phantom(seed)
        files = write_phantom_study(phantom, out / "phantom")
    archive_port, node_port = free_port(), free_port()
    archive = start_archive(out / "archive", archive_port)
    config = HepaticaConfig(
        listener=ListenerConfig(ae_title="HEPATICA", host="127.0.0.1", port=node_port),
        destination=DestinationConfig(ae_title="ARCHIVE", host="127.0.0.1", port=archive_port),
        pipeline=PipelineConfig(stable_seconds=2.0), data_dir=out / "node")
    service = HepaticaService(config)
    service.start()
    try:
        _send(files, node_port, console)
        job = _wait(service, phantom_study_uid(files[0]), console, timeout_s)
    finally:
        service.stop()
        archive.terminate()
        archive.wait(10)
    if job.state != JobState.DONE:
        console.print(f"[red]the study was not processed: {job.error}")
        return 1
    _report(out, job.result_dir, phantom.lesions, console)
    return 0


def phantom_study_uid(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)


def _send(files: list[Path], port: int, console: Console) -> None:
    with Progress(console=console) as bar:
        task = bar.add_task("C-STORE to hepatica", total=len(files))
        report = send_files(files, Peer("HEPATICA", "127.0.0.1", port, calling_ae="DEMO_PACS"),
                            progress=lambda done, total: bar.update(task, completed=done))
    if report.failed:
        raise RuntimeError(f"hepatica refused {len(report.failed)} instance(s): "
                           f"{report.failed[0][1]}")


def _wait(service: HepaticaService, study_uid: str, console: Console,
          timeout_s: float) -> Job:
    deadline = time.monotonic() + timeout_s
    with console.status("waiting for the study to settle…") as status:
        while time.monotonic() < deadline:
            job = service.queue.by_study(study_uid)
            if job is not None:
                status.update(f"job {job.id}: {job.state} (attempt {job.attempts})")
                if job.state in TERMINAL:
                    return job
            time.sleep(0.5)
    raise TimeoutError(f"the study was not processed within {timeout_s:.0f} s")


def _report(out: Path, result_dir: str | None, truths: tuple[LesionTruth, ...],
            console: Console) -> None:
    from plugin.cli.main import print_result

    if result_dir is None:
        raise RuntimeError("the job finished without a result folder")
    summary = json.loads((Path(result_dir) / "summary.json").read_text())
    print_result(summary, Path(result_dir))
    table = Table(title="Phantom ground truth (largest first)")
    for column in ("lesion", "volume (ml)", "longest diameter (mm)", "viable diameter (mm)"):
        table.add_column(column, justify="right")
    for t in sorted(truths, key=lambda lesion: -lesion.volume_ml):  # as Hepatica numbers them
        table.add_row(str(t.index), f"{t.volume_ml:.2f}", f"{t.longest_diameter_mm:.1f}",
                      f"{t.viable_diameter_mm:.1f}")
    console.print(table)
    archived = sorted(p for p in (out / "archive").rglob("*") if p.is_file())
    console.print(f"the archive (DCMTK storescp) received {len(archived)} result object(s):")
    for path in archived:
        console.print(f"  {path}", soft_wrap=True, highlight=False)
