"""Issue 15 part 3 faults with real peers on loopback: DCMTK storescu → `hepatica serve` →
DCMTK storescp.

- the archive down for longer than every retry: results stay queued durably (visible in
  `hepatica jobs`), delivered exactly once when it returns, by the background retry and by
  `hepatica resend`; inference runs once;
- SIGKILL while a study is being received: every acknowledged instance is on disk after the
  restart, and the study is processed once, after the sender has resent the rest (the
  downtime does not count as quiet time);
- the disk full while receiving: C-STORE answers Out of Resources, the worker survives the
  job database's "database or disk is full" and carries on once space is freed.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

from plugin.node.jobs import Job, JobState
from tests.integration.nodes import (
    NODELAY,
    STORESCU,
    free_port,
    start_archive,
    start_node,
    stop,
    storescu,
    wait_for_job,
)
from tests.plugin.node_helpers import fill, small_filesystem, wait_until

pytestmark = [pytest.mark.network, pytest.mark.dcmtk, pytest.mark.slow]

RESULT_OBJECTS = 6  # SEG, SR, one heatmap for each of PRE, AP, PVP, DP
FINISHED = {JobState.DONE, JobState.FAILED, JobState.DEAD}


@dataclass
class Node:
    root: Path
    port: int
    archive_port: int
    data_dir: Path
    config: Path
    proc: subprocess.Popen[bytes] | None = None
    archive: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.root / "serve.log"

    @property
    def database(self) -> Path:
        return self.data_dir / "jobs.sqlite3"

    @property
    def archive_dir(self) -> Path:
        return self.root / "archive"

    def start(self) -> None:
        self.proc = start_node(self.config, self.log, self.port)

    def kill(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            stop(self.proc, sig)

    def start_archive(self) -> None:
        self.archive = start_archive(self.archive_dir, self.archive_port)

    def archived_sop_uids(self) -> list[str]:
        return [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
                for p in sorted(self.archive_dir.rglob("*")) if p.is_file()]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "plugin.cli", *args, "--config",
                               str(self.config)], capture_output=True, text=True, timeout=120,
                              check=False)

    def jobs_json(self) -> list[dict[str, object]]:
        shown = self.cli("jobs", "--json")
        assert shown.returncode == 0, shown.stderr
        jobs: list[dict[str, object]] = json.loads(shown.stdout)
        return jobs


def make_node(root: Path, data_dir: Path | None = None, *, stable_seconds: float = 2.0,
              delivery_attempts: int = 0) -> Node:
    port, archive_port = free_port(), free_port()
    data = data_dir or root / "node"
    config = root / "hepatica.toml"
    config.write_text(f"""data_dir = "{data}"
[listener]
ae_title = "HEPATICA"
port = {port}
[destination]
ae_title = "ARCHIVE"
port = {archive_port}
retries = 1
backoff_seconds = 0.2
redeliver_seconds = 0.5
redeliver_max_seconds = 1.0
delivery_attempts = {delivery_attempts}
[pipeline]
stable_seconds = {stable_seconds}
""")
    return Node(root, port, archive_port, data, config)


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    started: list[Node] = []
    yield started
    for node in started:
        node.kill()
        if node.archive is not None:
            stop(node.archive)


def study_uid(study: Path) -> str:
    first = next((study / "dicom").rglob("*.dcm"))
    return str(pydicom.dcmread(first, stop_before_pixels=True).StudyInstanceUID)


def delivered_lines(node: Node) -> int:
    return len(re.findall(r"job \d+ delivered", node.log.read_text(errors="replace")))


def assert_processed_once(node: Node, job: Job) -> None:
    assert job.state is JobState.DONE, job.error
    uids = node.archived_sop_uids()
    assert len(uids) == len(set(uids)) == RESULT_OBJECTS, uids
    assert delivered_lines(node) == 1


def test_results_wait_for_the_archive_and_arrive_once(nodes: list[Node], tmp_path: Path,
                                                      phantom_study: Path) -> None:
    node = make_node(tmp_path)
    nodes.append(node)
    node.start()  # the archive is not running
    uid = study_uid(phantom_study)
    assert storescu([phantom_study / "dicom"], node.port).returncode == 0
    waiting = wait_for_job(node.database, uid, {JobState.SEND_QUEUED, *FINISHED}, 300)
    assert waiting.state is JobState.SEND_QUEUED, waiting.error
    wait_until(lambda: wait_for_job(node.database, uid, set(JobState), 5).send_attempts >= 4,
               60)  # well past every retry of one delivery
    [shown] = [j for j in node.jobs_json() if j["study_uid"] == uid]
    assert shown["state"] in ("send_queued", "sending") and shown["attempts"] == 1
    assert len(shown["results"]) == RESULT_OBJECTS  # type: ignore[arg-type]
    node.start_archive()
    done = wait_for_job(node.database, uid, FINISHED, 120)
    assert done.attempts == 1  # inference ran once
    assert_processed_once(node, done)


def test_unsent_results_are_delivered_once_by_hepatica_resend(nodes: list[Node],
                                                              tmp_path: Path,
                                                              phantom_study: Path) -> None:
    node = make_node(tmp_path, delivery_attempts=1)
    nodes.append(node)
    node.start()
    uid = study_uid(phantom_study)
    assert storescu([phantom_study / "dicom"], node.port).returncode == 0
    unsent = wait_for_job(node.database, uid, {JobState.UNSENT, *FINISHED}, 300)
    assert unsent.state is JobState.UNSENT, unsent.error
    listed = node.cli("jobs")
    assert "unsent" in listed.stdout
    time.sleep(2)  # no background retry after the cap
    assert wait_for_job(node.database, uid, set(JobState), 5).state is JobState.UNSENT
    node.start_archive()
    resent = node.cli("resend", "--all")
    assert resent.returncode == 0 and "1 job(s) queued for delivery" in resent.stdout, resent
    done = wait_for_job(node.database, uid, FINISHED, 120)
    assert done.attempts == 1
    assert_processed_once(node, done)


def acknowledged_files(storescu_output: str) -> list[Path]:
    """Files storescu -v reports as stored with success, in order."""
    acknowledged: list[Path] = []
    current: Path | None = None
    for line in storescu_output.splitlines():
        if "Sending file:" in line:
            current = Path(line.split("Sending file:", 1)[1].strip())
        elif "Received Store Response (Success" in line and current is not None:
            acknowledged.append(current)
            current = None
    return acknowledged


def spooled_sop_uids(node: Node) -> set[str]:
    return {p.stem for p in (node.data_dir / "spool").rglob("*.dcm")
            if "_quarantine" not in p.parts}


def sop_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_sigkill_during_receive_loses_nothing_and_processes_once(
        nodes: list[Node], tmp_path: Path, phantom_study: Path) -> None:
    stable = 4.0
    node = make_node(tmp_path, stable_seconds=stable)
    nodes.append(node)
    node.start_archive()
    node.start()
    uid = study_uid(phantom_study)
    sender = subprocess.Popen([STORESCU, "-v", "-aet", "PACS", "-aec", "HEPATICA", "+sd", "+r",
                               "127.0.0.1", str(node.port), str(phantom_study / "dicom")],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=NODELAY)
    wait_until(lambda: len(spooled_sop_uids(node)) >= 40, 60)
    node.kill(signal.SIGKILL)
    output, _ = sender.communicate(timeout=60)
    acknowledged = acknowledged_files(output)
    total = len(list((phantom_study / "dicom").rglob("*.dcm")))
    assert 0 < len(acknowledged) < total, "the study was not cut off mid-receive"
    assert {sop_uid(p) for p in acknowledged} <= spooled_sop_uids(node)  # nothing acked lost
    time.sleep(stable + 1)  # longer down than the quiet period: it must not count
    node.start()
    assert storescu([phantom_study / "dicom"], node.port).returncode == 0  # the sender resends
    done = wait_for_job(node.database, uid, FINISHED, 300)
    # every instance is in the spool the job read; the job's arrival counter may miss the one
    # instance whose record the SIGKILL cut between its durable rename and the shared commit
    sent = {sop_uid(p) for p in (phantom_study / "dicom").rglob("*.dcm")}
    assert spooled_sop_uids(node) >= sent and done.attempts == 1
    assert total - 1 <= done.instances <= total
    assert_processed_once(node, done)


def test_disk_full_while_receiving_is_survived(nodes: list[Node], tmp_path: Path,
                                               phantom_study: Path) -> None:
    try:
        mount = small_filesystem(tmp_path / "fs", "64m")
        fs = mount.__enter__()
    except PermissionError as exc:
        pytest.skip(f"needs a tmpfs mount (root with CAP_SYS_ADMIN): {exc}")
    try:
        node = make_node(tmp_path, fs / "node", stable_seconds=3.0)
        nodes.append(node)
        node.start_archive()
        node.start()
        uid = study_uid(phantom_study)
        dicom = phantom_study / "dicom"
        assert storescu([dicom / "AP", dicom / "PVP"], node.port).returncode == 0
        import sqlite3
        with sqlite3.connect(node.database) as raw:  # empty the WAL: the next write grows it
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        raw.close()
        filler = fill(fs)
        refused = storescu([dicom / "PRE", dicom / "DP"], node.port, verbose=True)
        report = refused.stdout + refused.stderr
        assert "Refused: OutOfResources" in report and "(Success)" not in report, report[-2000:]
        wait_until(lambda: "database or disk is full" in node.log.read_text(errors="replace"),
                   30)  # the worker could not promote the half study…
        assert node.proc is not None and node.proc.poll() is None  # …and the node is up
        filler.unlink()
        assert storescu([dicom / "PRE", dicom / "DP"], node.port).returncode == 0
        done = wait_for_job(node.database, uid, FINISHED, 300)
        assert done.instances == len(list(dicom.rglob("*.dcm")))
        assert_processed_once(node, done)
        assert "job queue works again" in node.log.read_text(errors="replace")
    finally:
        for node in nodes:
            node.kill()
        mount.__exit__(None, None, None)
