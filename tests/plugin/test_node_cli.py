"""`hepatica rerun STUDY_UID` and `hepatica resend [JOB_ID|--all]` on a node's job database."""

from __future__ import annotations

from pathlib import Path

import pytest

from plugin.cli.main import main
from plugin.node.jobs import JobQueue, JobState
from plugin.pipeline.models import installed_version
from tests.plugin.node_helpers import STUDY, tiny_ct


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "hepatica.toml"
    path.write_text(f'data_dir = "{tmp_path / "node"}"\n')
    return path


def queue_of(tmp_path: Path) -> JobQueue:
    return JobQueue(tmp_path / "node" / "jobs.sqlite3", installed_version())


def test_rerun_queues_a_processed_study_of_the_spool(config: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    tiny_ct(tmp_path / "node" / "spool" / STUDY / "1.2.3" / "1.2.3.4.dcm")
    queue = queue_of(tmp_path)
    queue.enqueue(STUDY)
    job = queue.claim()
    assert job is not None
    queue.mark(job.id, JobState.DONE)
    assert main(["rerun", STUDY, "--config", str(config)]) == 0
    again = queue.get(job.id)
    assert again is not None and (again.state, again.attempts) == (JobState.QUEUED, 0)
    assert "queued" in capsys.readouterr().out
    queue.close()


@pytest.mark.parametrize("uid", ["../../etc", STUDY + ".77"])
def test_rerun_refuses_what_is_not_a_study_of_the_spool(config: Path, uid: str) -> None:
    assert main(["rerun", uid, "--config", str(config)]) == 1


def test_resend_one_job_or_all_waiting(config: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    queue = queue_of(tmp_path)
    for uid in (STUDY, STUDY + ".1"):
        queue.enqueue(uid)
        job = queue.claim()
        assert job is not None
        queue.results_ready(job.id, str(tmp_path), ["a.dcm"])
    first, second = queue.list()[1], queue.list()[0]
    queue.send_failed(first.id, "archive down", retry_in=None)
    queue.record_sent(second.id, ["a.dcm"])
    queue.mark(second.id, JobState.DONE)
    assert main(["resend", "--all", "--config", str(config)]) == 0
    assert "1 job(s) queued for delivery" in capsys.readouterr().out
    assert queue.get(first.id).state is JobState.SEND_QUEUED  # type: ignore[union-attr]
    assert queue.get(second.id).state is JobState.DONE  # type: ignore[union-attr]
    assert main(["resend", str(second.id), "--config", str(config)]) == 0
    resent = queue.get(second.id)
    assert resent is not None and resent.state is JobState.SEND_QUEUED and resent.sent == ()
    assert "no node is running" in capsys.readouterr().out
    queue.close()
