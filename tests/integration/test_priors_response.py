"""Issue 4 done-when: Orthanc plays the PACS holding a phantom patient's baseline; the node
receives the follow-up, finds the baseline by C-FIND, retrieves it by C-MOVE to its own
SCP, and its SR states the RECIST 1.1 and mRECIST categories of the phantom's truth.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from dicom_io.synthetic import PhantomSpec
from dicom_io.synthetic.timepoints import plan_courses, write_timepoints
from export.sr import codes
from plugin.node.jobs import JobState
from tests.integration.nodes import (
    free_port,
    start_archive,
    start_node,
    stop,
    storescu,
    wait_for_job,
    write_config,
)
from tests.orthanc.conftest import Node
from tests.orthanc.orthanc_server import OrthancServer, missing_packages
from tests.orthanc.orthanc_server import storescu as storescu_orthanc
from tests.orthanc.test_orthanc_integration import study_uid_of, wait_for

pytestmark = [pytest.mark.network, pytest.mark.dcmtk, pytest.mark.orthanc, pytest.mark.slow]

SEED = 424_250  # not a training/validation seed
SPEC = PhantomSpec(sequences=("AP", "PVP"), lesion_plan=(44.0, 28.0), necrotic_fraction=0.0)


class PacsOrthanc(OrthancServer):
    """Orthanc that knows Hepatica's AE (C-MOVE destination) and answers C-FIND/C-MOVE."""

    node_port: int = 0

    def write_config(self) -> Path:
        path = super().write_config()
        config = json.loads(path.read_text())
        config["DicomModalities"] = {"hepatica": ["HEPATICA", "127.0.0.1", self.node_port]}
        path.write_text(json.dumps(config, indent=1))
        return path


@dataclass
class Setup:
    followup: Path
    truth: dict[str, str]
    archive: Path
    database: Path


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    if missing_packages():
        pytest.skip("Orthanc not installed: run docker/setup.sh")
    courses = plan_courses("PR", "PR", 2, 1)
    records = write_timepoints(tmp_path / "patient", SEED, SPEC, courses, [0.0, 3.0],
                               baseline_date=dt.date(2025, 3, 1), patient_id="HEP-RESP-1")
    (tmp_path / "orthanc-hepatica.toml").write_text(f'data_dir = "{tmp_path / "o"}"\n')
    port, archive_port = free_port(), free_port()
    pacs = PacsOrthanc(tmp_path / "orthanc", tmp_path / "orthanc-hepatica.toml")
    pacs.node_port = port
    pacs.start()
    archive = start_archive(tmp_path / "archive", archive_port)
    config = write_config(tmp_path / "hepatica.toml", port=port, archive_port=archive_port,
                          data_dir=tmp_path / "node")
    with config.open("a") as handle:
        handle.write(f'[priors]\nenabled = true\nae_title = "ORTHANC"\nport = '
                     f"{pacs.dicom_port}\nlookback_days = 3650\n")
    node = None
    try:
        storescu_orthanc(tmp_path / "patient" / "tp0" / "dicom", pacs.dicom_port)
        node = start_node(config, tmp_path / "serve.log", port)
        yield Setup(tmp_path / "patient" / "tp1" / "dicom", records[1]["response"],
                    tmp_path / "archive", tmp_path / "node" / "jobs.sqlite3")
    finally:
        if node is not None:
            stop(node)
        stop(archive)
        pacs.stop()


def _codes_in(sr: pydicom.Dataset) -> list[tuple[str, str]]:
    """(concept name, value meaning) of every CODE item, depth first."""
    found: list[tuple[str, str]] = []

    def walk(items: pydicom.Sequence) -> None:
        for item in items:
            if item.ValueType == "CODE":
                found.append((item.ConceptNameCodeSequence[0].CodeMeaning,
                              item.ConceptCodeSequence[0].CodeValue))
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    return found


def test_followup_gets_recist_and_mrecist_from_the_pacs_baseline(setup: Setup) -> None:
    study_uid = str(pydicom.dcmread(next(setup.followup.rglob("*.dcm")),
                                    stop_before_pixels=True).StudyInstanceUID)
    sent = storescu([setup.followup], _node_port(setup))
    assert sent.returncode == 0, sent.stderr
    job = wait_for_job(setup.database, study_uid, {JobState.DONE, JobState.FAILED,
                                                   JobState.DEAD}, timeout=600)
    assert job.state == JobState.DONE, job.error
    srs = [p for p in setup.archive.rglob("*") if p.is_file()
           and pydicom.dcmread(p, stop_before_pixels=True).Modality == "SR"]
    sr = pydicom.dcmread(srs[0])
    hd.sr.srread(srs[0])  # highdicom reads it back
    evaluations = [value for name, value in _codes_in(sr) if name == "Response Evaluation"]
    want = [codes.RESPONSE_CATEGORY[setup.truth[k]].value for k in ("recist", "mrecist")]
    assert evaluations == want, (evaluations, setup.truth)
    text = " ".join(str(getattr(i, "TextValue", "")) for i in _all_items(sr))
    assert f"Response RECIST 1.1: {setup.truth['recist']}" in text
    assert f"Response mRECIST: {setup.truth['mrecist']}" in text


def _all_items(sr: pydicom.Dataset) -> Iterator[pydicom.Dataset]:
    stack = list(sr.ContentSequence)
    while stack:
        item = stack.pop()
        yield item
        stack += list(item.get("ContentSequence", []))



def _node_port(setup: Setup) -> int:
    text = (setup.database.parent.parent / "hepatica.toml").read_text()
    return int(text.split("[listener]")[1].split("port = ")[1].split("\n")[0])


# --- plugin mode: Orthanc is the archive, the worker finds the baseline over REST ----------

SMALL = PhantomSpec(sequences=("AP", "PVP"), rows=128, columns=128, slices=32,
                    pixel_spacing_mm=3.0, slice_spacing_mm=6.0, lesion_plan=(44.0, 28.0),
                    necrotic_fraction=0.0)
"""A quarter of SPEC's voxels: three segmentations (baseline job, follow-up, prior) stay
short on CI's two cores."""


def _orthanc_sr(node: Node, study_uid: str) -> pydicom.Dataset:
    found = json.loads(node.orthanc.request("POST", "/tools/lookup", study_uid.encode(),
                                            "text/plain")[1])
    study_id = next(f["ID"] for f in found if f["Type"] == "Study")
    for series in node.orthanc.get(f"/studies/{study_id}/series"):
        tags = series["MainDicomTags"]
        if tags.get("Manufacturer") == "Hepatica" and tags.get("Modality") == "SR":
            status, body = node.orthanc.request("GET",
                                                f"/instances/{series['Instances'][0]}/file")
            assert status == 200
            return pydicom.dcmread(io.BytesIO(body))
    raise AssertionError(f"no Hepatica SR in study {study_uid}\n{node.logs()}")


def test_plugin_mode_finds_the_baseline_over_rest(tmp_path: Path) -> None:
    if missing_packages():
        pytest.skip("Orthanc not installed: run docker/setup.sh")
    courses = plan_courses("PR", "PR", 2, 1)
    records = write_timepoints(tmp_path / "patient", SEED + 1, SMALL, courses, [0.0, 3.0],
                               baseline_date=dt.date(2025, 3, 1), patient_id="HEP-RESP-2")
    truth = records[1]["response"]
    (tmp_path / "node").mkdir()
    node = Node(tmp_path / "node")
    with (tmp_path / "node" / "hepatica.toml").open("a") as handle:
        # the archive's baseline (sent by "PACS") triggers nothing; the follow-up does
        handle.write('allowed_callers = ["MODALITY"]\n'
                     "[priors]\nenabled = true\nlookback_days = 3650\n")
    node.start()
    try:
        storescu_orthanc(tmp_path / "patient" / "tp0" / "dicom", node.orthanc.dicom_port,
                         calling="PACS")
        storescu_orthanc(tmp_path / "patient" / "tp1" / "dicom", node.orthanc.dicom_port,
                         calling="MODALITY")
        uid = study_uid_of(tmp_path / "patient" / "tp1")
        job = wait_for(node, uid, {"done", "failed", "dead"}, timeout=600)
        assert job["state"] == "done", (job, node.logs())
        sr = _orthanc_sr(node, uid)
    finally:
        node.stop()
    evaluations = [value for name, value in _codes_in(sr) if name == "Response Evaluation"]
    assert evaluations == [codes.RESPONSE_CATEGORY[truth[k]].value
                           for k in ("recist", "mrecist")], (evaluations, truth)
    text = " ".join(str(getattr(i, "TextValue", "")) for i in _all_items(sr))
    assert f"Response RECIST 1.1: {truth['recist']}" in text
    assert f"Response mRECIST: {truth['mrecist']}" in text
