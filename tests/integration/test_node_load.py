"""Issue 15 part 3: eight concurrent associations of 400-image studies (DCMTK storescu, one
process each) → `hepatica serve` → DCMTK storescp. Every instance is stored, every study is
processed once, and the node's memory stays bounded. Bounded in count and time; loopback only.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pydicom
import pytest

from dicom_io.synthetic import PhantomSpec, make_phantom, write_phantom_study
from plugin.node.jobs import JobState
from tests.integration.nodes import (
    NODELAY,
    STORESCU,
    free_port,
    start_archive,
    start_node,
    stop,
    wait_for_job,
    write_config,
)

pytestmark = [pytest.mark.network, pytest.mark.dcmtk, pytest.mark.slow]

STUDIES = 8
SPEC = PhantomSpec(rows=64, columns=64, slices=100, pixel_spacing_mm=6.0, slice_spacing_mm=3.0,
                   lesion_plan=(40.0,))  # four MR phases x 100 slices = 400 images
MEMORY_BOUND_MIB = 3072  # peak resident set of the node process


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_eight_concurrent_studies_all_stored_each_processed_once(tmp_path: Path) -> None:
    studies = []
    for k in range(STUDIES):
        folder = tmp_path / f"study{k}"
        write_phantom_study(make_phantom(424_300 + k, SPEC), folder)
        first = next((folder / "dicom").rglob("*.dcm"))
        studies.append((folder / "dicom", str(pydicom.dcmread(first).StudyInstanceUID)))
    archive_port, port = free_port(), free_port()
    archive = start_archive(tmp_path / "archive", archive_port)
    data_dir = tmp_path / "data"
    config = write_config(tmp_path / "hepatica.toml", port=port, archive_port=archive_port,
                          data_dir=data_dir, stable_seconds=2.0)
    node = start_node(config, tmp_path / "serve.log", port)
    try:
        senders = [subprocess.Popen([STORESCU, "-aet", "PACS", "-aec", "HEPATICA", "+sd", "+r",
                                     "127.0.0.1", str(port), str(folder)], env=NODELAY,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                   for folder, _ in studies]
        deadline = time.monotonic() + 600
        for sender in senders:
            _, err = sender.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert sender.returncode == 0, err.decode(errors="replace")[-2000:]
        for folder, uid in studies:
            job = wait_for_job(data_dir / "jobs.sqlite3", uid, {JobState.DONE, JobState.FAILED,
                                                               JobState.DEAD}, timeout=900)
            assert job.state == JobState.DONE, job.error
            assert job.attempts == 1
            sent = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
                    for p in folder.rglob("*.dcm")}
            stored = {p.stem for p in (data_dir / "spool" / uid).rglob("*.dcm")}
            assert stored == sent and len(sent) == 400
        peak = _peak_rss_mib(node.pid)
        assert 0 < peak < MEMORY_BOUND_MIB, f"node peak memory {peak:.0f} MiB"
    finally:
        stop(node)
        stop(archive)
    log = (tmp_path / "serve.log").read_text()
    assert "Traceback" not in log
