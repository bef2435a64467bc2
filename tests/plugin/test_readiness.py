"""plugin.node.readiness (issue 13 part 2): a study holding every series the installed
segmentation bundle needs starts after the short ``ready_seconds``; any other study waits the
full quiet period; a late instance re-opens the study and it is judged again."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from dicom_io.roi import image_series
from dicom_io.selection import label_all
from dicom_io.series import load_study
from dicom_io.spool import Spool
from dicom_io.synthetic import make_phantom, write_phantom_study
from inference.bundle import Bundle
from plugin.node.jobs import Job, JobQueue, JobState
from plugin.node.readiness import ReadyInbox, needs_met
from plugin.pipeline.models import segmentation_bundles

VERSION = "hepatica-test+readiness"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("phantom")
    write_phantom_study(make_phantom(3), out)
    return out / "dicom"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def queue(tmp_path: Path, clock: Clock) -> Iterator[JobQueue]:
    jobs = JobQueue(tmp_path / "jobs.sqlite3", VERSION, clock=clock)
    yield jobs
    jobs.close()


def _study_uid(folder: Path) -> str:
    first = next(folder.rglob("*.dcm"))
    return str(pydicom.dcmread(first, stop_before_pixels=True).StudyInstanceUID)


def _arrive(spool: Spool, queue: JobQueue, phantom: Path, *series: str) -> str:
    """The named series land in the spool, each instance recorded as new."""
    uid = _study_uid(phantom)
    target = spool.study_dir(uid)
    for name in series:
        shutil.copytree(phantom / name, target / name)
        for _ in (target / name).glob("*.dcm"):
            queue.record_instance(uid, new=True)
    return uid


def test_needs_met_by_phases(phantom: Path) -> None:
    everything = segmentation_bundles()
    bundles = [b for b in everything if set(b.inputs.phases) == {"AP", "PVP"}]
    labelled = label_all(image_series(load_study(phantom)))
    chosen = needs_met(labelled, bundles)
    assert chosen is not None and set(chosen.inputs.phases) == {"AP", "PVP"}
    without_pvp = [item for item in labelled if item.label.label != "PVP"]
    assert needs_met(without_pvp, bundles) is None
    # the shipped single-series bundle is content with what is left
    single = needs_met(without_pvp, everything)
    assert single is not None and len(single.inputs.phases) == 1


def test_study_with_its_series_starts_after_ready_seconds(
        tmp_path: Path, queue: JobQueue, clock: Clock, phantom: Path) -> None:
    spool = Spool(tmp_path / "spool")
    inbox = ReadyInbox(spool, stable_seconds=30.0, ready_seconds=3.0)
    uid = _arrive(spool, queue, phantom, "AP", "PVP")
    clock.now += 2.0
    inbox.tick(queue)
    assert queue.by_study(uid).state is JobState.RECEIVED  # type: ignore[union-attr]
    clock.now += 1.5
    inbox.tick(queue)
    assert queue.by_study(uid).state is JobState.QUEUED  # type: ignore[union-attr]


def test_study_missing_a_phase_waits_the_quiet_period(
        tmp_path: Path, queue: JobQueue, clock: Clock, phantom: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import plugin.node.readiness as readiness

    two_phase = [b for b in segmentation_bundles() if set(b.inputs.phases) == {"AP", "PVP"}]
    monkeypatch.setattr(readiness, "segmentation_bundles", lambda dirs=(): two_phase)
    spool = Spool(tmp_path / "spool")
    inbox = ReadyInbox(spool, stable_seconds=30.0, ready_seconds=3.0)
    uid = _arrive(spool, queue, phantom, "PRE", "AP")
    judged: list[str] = []
    ready = inbox._ready

    def counted(job: Job) -> Bundle | None:
        judged.append(job.study_uid)
        return ready(job)

    monkeypatch.setattr(inbox, "_ready", counted)
    for _ in range(5):  # judged once as it is, not on every turn of the loop
        clock.now += 4.0
        inbox.tick(queue)
    assert judged == [uid]
    assert queue.by_study(uid).state is JobState.RECEIVED  # type: ignore[union-attr]
    clock.now += 11.0  # 31 s quiet: the fallback applies
    inbox.tick(queue)
    assert queue.by_study(uid).state is JobState.QUEUED  # type: ignore[union-attr]


def test_late_series_reopens_and_is_judged_again(
        tmp_path: Path, queue: JobQueue, clock: Clock, phantom: Path) -> None:
    spool = Spool(tmp_path / "spool")
    inbox = ReadyInbox(spool, stable_seconds=30.0, ready_seconds=3.0)
    uid = _arrive(spool, queue, phantom, "AP", "PVP")
    clock.now += 3.5
    inbox.tick(queue)
    job = queue.claim()
    assert job is not None and job.study_uid == uid
    queue.mark(job.id, JobState.DONE)
    _arrive(spool, queue, phantom, "DP")  # the delayed phase arrives after the results
    assert queue.by_study(uid).state is JobState.RECEIVED  # type: ignore[union-attr]
    clock.now += 3.5
    inbox.tick(queue)
    again = queue.by_study(uid)
    assert again is not None and again.state is JobState.QUEUED
    assert again.instances == len(list(phantom.glob("[AD]P/*.dcm"))) + len(
        list(phantom.glob("PVP/*.dcm")))


def test_no_early_start_when_ready_is_not_shorter(tmp_path: Path, queue: JobQueue,
                                                  clock: Clock, phantom: Path) -> None:
    spool = Spool(tmp_path / "spool")
    inbox = ReadyInbox(spool, stable_seconds=2.0, ready_seconds=3.0)
    uid = _arrive(spool, queue, phantom, "AP", "PVP")
    clock.now += 1.0
    inbox.tick(queue)
    assert queue.by_study(uid).state is JobState.RECEIVED  # type: ignore[union-attr]
    clock.now += 1.5
    inbox.tick(queue)
    assert queue.by_study(uid).state is JobState.QUEUED  # type: ignore[union-attr]
