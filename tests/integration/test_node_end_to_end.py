"""The spine with real peers: DCMTK storescu → `hepatica serve` → DCMTK storescp.

One phantom study goes in; SEG, SR and heatmaps come out at the archive, each valid for
dciodvfy and readable by highdicom. Then the hard cases: a resend, malformed instances,
and a SIGKILL in the middle of a job.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from plugin.node.jobs import JobState
from tests.integration.nodes import (
    dciodvfy_errors,
    free_port,
    start_archive,
    start_node,
    stop,
    storescu,
    wait_for_job,
    write_config,
)

pytestmark = [pytest.mark.network, pytest.mark.dcmtk, pytest.mark.slow]

RESULT_OBJECTS = 6  # SEG, SR, one heatmap for each of PRE, AP, PVP, DP
DONE = {JobState.DONE, JobState.FAILED, JobState.DEAD}


@dataclass
class Node:
    port: int
    config: Path
    data_dir: Path
    archive_dir: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = start_node(self.config, self.log, self.port)

    def kill(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            stop(self.proc, sig)

    @property
    def database(self) -> Path:
        return self.data_dir / "jobs.sqlite3"

    def archived(self) -> list[Path]:
        return sorted(p for p in self.archive_dir.rglob("*") if p.is_file())


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    archive_port, port = free_port(), free_port()
    archive = start_archive(tmp_path / "archive", archive_port)
    config = write_config(tmp_path / "hepatica.toml", port=port, archive_port=archive_port,
                          data_dir=tmp_path / "node")
    n = Node(port, config, tmp_path / "node", tmp_path / "archive", tmp_path / "serve.log")
    n.start()
    yield n
    n.kill()
    stop(archive)


def _study_uid(study: Path) -> str:
    first = next((study / "dicom").rglob("*.dcm"))
    return str(pydicom.dcmread(first, stop_before_pixels=True).StudyInstanceUID)


def _sop_uids(paths: list[Path]) -> list[str]:
    return [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths]


def test_study_in_results_out_valid_and_readable(node: Node, phantom_study: Path) -> None:
    sent = storescu([phantom_study / "dicom"], node.port)
    assert sent.returncode == 0, sent.stderr
    job = wait_for_job(node.database, _study_uid(phantom_study), DONE)
    assert job.state == JobState.DONE, job.error
    archived = node.archived()
    assert len(archived) == RESULT_OBJECTS
    for path in archived:
        assert dciodvfy_errors(path) == [], path.name
    kinds = {str(pydicom.dcmread(p, stop_before_pixels=True).Modality) for p in archived}
    assert kinds == {"SEG", "SR", "OT"}
    study_uid = _study_uid(phantom_study)
    for path in archived:
        ds = pydicom.dcmread(path)
        assert ds.StudyInstanceUID == study_uid and ds.Manufacturer == "Hepatica"
        if ds.Modality == "SEG":
            seg = hd.seg.segread(path)
            assert seg.number_of_segments >= 2  # liver + at least one lesion
        elif ds.Modality == "SR":
            sr = hd.sr.srread(path)
            groups = sr.content.get_volumetric_roi_measurement_groups()
            assert len(groups) >= 2
        else:
            assert ds.BurnedInAnnotation == "YES"
    assert "Doe" not in node.log.read_text()


def test_same_study_twice_gives_one_job_and_one_result_set(node: Node,
                                                           phantom_study: Path) -> None:
    study_uid = _study_uid(phantom_study)
    storescu([phantom_study / "dicom"], node.port)
    first = wait_for_job(node.database, study_uid, DONE)
    assert first.state == JobState.DONE
    storescu([phantom_study / "dicom"], node.port)
    again = wait_for_job(node.database, study_uid, DONE, timeout=30)
    assert again.id == first.id and again.attempts == first.attempts
    assert again.updated_at == first.updated_at  # nothing was re-run
    uids = _sop_uids(node.archived())
    assert len(set(uids)) == RESULT_OBJECTS


def test_malformed_instances_refused_the_rest_processed(node: Node, phantom_study: Path,
                                                        tmp_path: Path) -> None:
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    files = sorted((phantom_study / "dicom" / "AP").glob("*.dcm"))
    no_study = pydicom.dcmread(files[0])
    no_study.SOPInstanceUID = pydicom.uid.generate_uid()
    del no_study.StudyInstanceUID
    no_study.save_as(bad_dir / "no_study.dcm")
    truncated = pydicom.dcmread(files[1])
    truncated.SOPInstanceUID = pydicom.uid.generate_uid()
    truncated.PixelData = truncated.PixelData[:1000]
    truncated.save_as(bad_dir / "truncated.dcm")
    us = pydicom.dcmread(files[2])  # ultrasound: not a class a liver CT/MR study holds
    us.SOPClassUID = us.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    us.SOPInstanceUID = us.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    us.save_as(bad_dir / "unsupported_class.dcm")
    bad = storescu(sorted(bad_dir.glob("*.dcm")), node.port, verbose=True)
    report = bad.stdout + bad.stderr
    assert "No presentation context" in report  # the unsupported class: refused at association
    assert report.count("Received Store Response (Error") == 2, report
    assert storescu([phantom_study / "dicom"], node.port).returncode == 0
    job = wait_for_job(node.database, _study_uid(phantom_study), DONE)
    assert job.state == JobState.DONE, job.error
    assert len(node.archived()) == RESULT_OBJECTS
    reasons = sorted(p.read_text() for p in (node.data_dir / "spool" / "_quarantine")
                     .glob("*.reason.txt"))
    assert len(reasons) == 2
    assert any("truncated" in r for r in reasons)
    assert any("StudyInstanceUID" in r for r in reasons)
    log = node.log.read_text()
    assert "refused C-STORE" in log


def test_sigkill_mid_job_finishes_exactly_once_after_restart(node: Node,
                                                              phantom_study: Path) -> None:
    study_uid = _study_uid(phantom_study)
    storescu([phantom_study / "dicom"], node.port)
    running = wait_for_job(node.database, study_uid, {JobState.RUNNING, *DONE}, timeout=120)
    assert running.state == JobState.RUNNING, "the job finished before it could be killed"
    node.kill(signal.SIGKILL)
    assert node.archived() == []
    node.start()
    done = wait_for_job(node.database, study_uid, DONE)
    assert done.state == JobState.DONE, done.error
    assert done.id == running.id and done.attempts == 2
    uids = _sop_uids(node.archived())
    assert len(uids) == len(set(uids)) == RESULT_OBJECTS


def test_late_instances_reopen_the_study_and_replace_its_results(node: Node,
                                                                 phantom_study: Path) -> None:
    study_uid = _study_uid(phantom_study)
    dicom = phantom_study / "dicom"
    storescu([dicom / "AP", dicom / "PVP"], node.port)
    first = wait_for_job(node.database, study_uid, DONE)
    assert first.state == JobState.DONE, first.error
    first_uids = set(_sop_uids(node.archived()))
    assert len(first_uids) == 4  # SEG, SR, heatmaps of AP and PVP
    storescu([dicom / "PRE", dicom / "DP"], node.port)
    second = wait_for_job(node.database, study_uid, DONE)
    assert second.id == first.id and second.updated_at > first.updated_at
    assert second.state == JobState.DONE, second.error
    current = set(_sop_uids(node.archived()))
    assert first_uids <= current and len(current) == RESULT_OBJECTS  # replaced, not doubled
