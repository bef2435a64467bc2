"""Issue 15 part 0, critical: a StudyInstanceUID like ``../../canary`` (or an absolute path)
stored in a real Orthanc must never make the worker touch a folder outside its work root; a
prior's hostile SOP Instance UID must never name a file outside the prior cache.

Before the fix the worker joined its work root with the UID and removed that path after the
job: two canary folders were deleted and the jobs reported "done".
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pydicom
import pytest

from dicom_io.priors import PacsPeer, PriorCache, PriorsError, get_study
from plugin.node.jobs import JobQueue, JobState
from tests.orthanc.conftest import Node
from tests.orthanc.orthanc_server import OrthancServer, missing_packages
from tests.plugin.node_helpers import tiny_ct, wait_until

pytestmark = [pytest.mark.orthanc, pytest.mark.network, pytest.mark.slow]

GOOD_STUDY = "1.2.826.0.1.3680043.8.498.515151"


def upload(server: OrthancServer, path: Path) -> str:
    """POST one file to Orthanc's REST API; its Orthanc study ID."""
    status, body = server.request("POST", "/instances", path.read_bytes(), "application/dicom")
    assert status == 200, body
    return str(json.loads(body)["ParentStudy"])


def hostile_instance(folder: Path, study_uid: str, name: str, **tags: str) -> Path:
    """A tiny CT whose UIDs Orthanc stores as given (pydicom only warns about them)."""
    path = tiny_ct(folder / name, study_uid, **tags)
    ds = pydicom.dcmread(path)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def canary(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "keep.txt").write_text("must survive")
    return folder


def test_study_uids_that_are_paths_never_leave_the_work_root(node: Node, tmp_path: Path) -> None:
    relative = canary(node.root / "canary")  # data/orthanc-work/../../canary
    absolute = canary(tmp_path / "absolute-canary")
    studies = {"../../canary": relative, str(absolute): absolute}
    ids = {uid: upload(node.orthanc, hostile_instance(tmp_path / "in", uid, f"{n}.dcm"))
           for n, uid in enumerate(studies)}
    # 1. the plugin refuses to queue them, and the re-run route answers 400
    for study_id in ids.values():
        status, body = node.orthanc.request("POST", f"/hepatica/studies/{study_id}/rerun", b"")
        assert status == 400 and b"not a valid DICOM UID" in body, body
    wait_until(lambda: "its StudyInstanceUID is not a valid DICOM UID"
               in node.orthanc.log_path.read_text(errors="replace"), 60)
    # 2. a job row that names one anyway (a database from before the check) fails, harmlessly
    beat = node.data_dir / "orthanc-worker.json"
    wait_until(beat.exists, 60)
    version = json.loads(beat.read_text())["pipeline_version"]
    database = node.data_dir / "jobs.sqlite3"
    with sqlite3.connect(database) as raw:
        for uid in studies:
            now = time.time()
            raw.execute("INSERT INTO jobs (study_uid, pipeline_version, state, created_at,"
                        " updated_at, last_instance_at, queued_at) VALUES (?, ?, 'queued',"
                        " ?, ?, ?, ?)", (uid, version, now, now, now, now))
    raw.close()

    def finished() -> bool:
        queue = JobQueue(database, "")
        try:
            return all(j.state is JobState.FAILED for j in queue.list() if j.study_uid in studies)
        finally:
            queue.close()

    wait_until(finished, 120)
    queue = JobQueue(database, "")
    errors = [j.error or "" for j in queue.list() if j.study_uid in studies]
    queue.close()
    assert len(errors) == 2 and all("not a valid DICOM UID" in e for e in errors), errors
    for folder in studies.values():
        assert (folder / "keep.txt").read_text() == "must survive"
    assert not (node.data_dir / "results").exists() or not any(
        p.name == "canary" for p in (node.data_dir / "results").rglob("*"))


class GetPacs(OrthancServer):
    """Orthanc answering C-GET from the AE ``HEPATICA`` (no Hepatica plugin needed)."""

    def write_config(self) -> Path:
        path = super().write_config()
        config = json.loads(path.read_text())
        config["DicomModalities"] = {"hepatica": ["HEPATICA", "127.0.0.1", 104]}
        for key in ("PythonScript", "PythonVerbose", "Hepatica"):
            config.pop(key, None)
        config["Plugins"] = []
        path.write_text(json.dumps(config, indent=1))
        return path

    def start(self, timeout: float = 60.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.write_config()
        import subprocess

        from tests.orthanc.orthanc_server import ORTHANC, hepatica_env
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([str(ORTHANC), str(config)], stdout=log,
                                     stderr=subprocess.STDOUT, env=hepatica_env())
        wait_until(lambda: self._answers(), timeout)

    def _answers(self) -> bool:
        try:
            return self.request("GET", "/system")[0] == 200
        except OSError:
            return False


def test_a_prior_is_cached_only_when_complete_and_never_outside_the_cache(tmp_path: Path
                                                                         ) -> None:
    if missing_packages():
        pytest.skip("Orthanc not installed: run docker/setup.sh")
    pacs = GetPacs(tmp_path / "pacs", tmp_path / "unused.toml")
    pacs.start()
    try:
        peer = PacsPeer("ORTHANC", "127.0.0.1", pacs.dicom_port, "HEPATICA", 30.0)
        cache = PriorCache(tmp_path / "priors")
        for n in range(3):
            upload(pacs, tiny_ct(tmp_path / "good" / f"{n}.dcm", GOOD_STUDY))
        count = get_study(peer, GOOD_STUDY, cache.folder(GOOD_STUDY))
        assert count == 3
        cache.mark_complete(GOOD_STUDY, cache.folder(GOOD_STUDY), count)
        assert cache.lookup(GOOD_STUDY) == cache.folder(GOOD_STUDY)
        assert len(list(cache.folder(GOOD_STUDY).glob("*.dcm"))) == 3

        hostile = GOOD_STUDY + ".9"
        upload(pacs, tiny_ct(tmp_path / "bad" / "ok.dcm", hostile))
        upload(pacs, hostile_instance(tmp_path / "bad", hostile, "escape.dcm",
                                      SOPInstanceUID="../../escape"))
        with pytest.raises(PriorsError):  # Orthanc ends it 0xC000, others 0xB000: incomplete
            get_study(peer, hostile, cache.folder(hostile))
        assert cache.lookup(hostile) is None  # never marked: tried again next time
        assert not any(p.name.startswith("escape") for p in tmp_path.rglob("*")
                       if "pacs" not in p.parts and "bad" not in p.parts)

        empty = GOOD_STUDY + ".8"  # the PACS has nothing: no marker for an empty retrieve
        with pytest.raises(PriorsError):  # Orthanc fails it; a PACS answering success with
            count = get_study(peer, empty, cache.folder(empty))  # 0 is caught by the marker
            cache.mark_complete(empty, cache.folder(empty), count)
        with pytest.raises(PriorsError, match="no instances"):
            cache.mark_complete(empty, cache.folder(empty), 0)
        assert cache.lookup(empty) is None
    finally:
        pacs.stop()

