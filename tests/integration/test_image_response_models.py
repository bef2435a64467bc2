"""Issue 12: image response bundles on an MR phantom through `hepatica run` and the node.

A HAIC-scenario MR phantom (T2, DWI b800 and the dynamic phases) goes through the pipeline
with two tiny image bundles installed (seed 004's CNN + SVM with CAM, seed 000's 2.5-D ResNet +
Transformer MIL with Grad-CAM; trained for seconds on random tensors): each prediction lands
in the TID 1500 SR (its own group, model named) and each model gets one explanation
secondary-capture series; every object passes dciodvfy without an Error line. Through the
node the same objects reach the archive.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pydicom
import pytest

from dicom_io.synthetic.cohort import COLUMNS, simulate, write_patient
from plugin.cli.main import main
from plugin.node.jobs import JobState
from tests.integration.nodes import (
    DCIODVFY,
    dciodvfy_errors,
    free_port,
    start_archive,
    start_node,
    stop,
    storescu,
    wait_for_job,
    write_config,
)
from tests.plugin.image_bundle_helpers import tiny_dcr_bundle, tiny_orr_bundle

pytestmark = [pytest.mark.slow]

MODELS = ("test-dcr-image", "test-orr-image")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("image-models")
    tiny_dcr_bundle(root / "bundles" / "dcr")
    tiny_orr_bundle(root / "bundles" / "orr")
    row = simulate(2, 0, "haic")[1]
    write_patient(root / "patient", row, 1, "mr", 1)
    data = root / "data"
    (data / "clinical").mkdir(parents=True)
    with (data / "clinical" / "rows.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerow(row)
    return {"root": root, "bundles": root / "bundles", "study": root / "patient" / "tp0",
            "data": data}


def _config_lines(setup: dict[str, Path]) -> str:
    return f'[pipeline]\nbundle_dirs = ["{setup["bundles"]}"]\n'


def _check_outputs(files: list[Path]) -> None:
    explanations: dict[str, set[str]] = {}
    sr = None
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if ds.Modality == "SR":
            sr = path
        description = str(ds.get("SeriesDescription", ""))
        if description.startswith("Hepatica explanation"):
            explanations.setdefault(description, set()).add(str(ds.SeriesInstanceUID))
            assert ds.BurnedInAnnotation == "YES"
            assert "RESEARCH USE ONLY" in str(ds.ImageComments)
    assert sorted(explanations) == [f"Hepatica explanation {m}" for m in MODELS]
    assert all(len(uids) == 1 for uids in explanations.values())  # one series per model
    assert sr is not None
    names = {text for code, text in _text_items(pydicom.dcmread(sr)) if code == "111001"}
    assert set(MODELS) <= names  # each model's TID 1501 group names its algorithm
    assert "RESEARCH USE ONLY" in str(pydicom.dcmread(sr))


def _text_items(ds: pydicom.Dataset) -> list[tuple[str, str]]:
    """(concept code, text) of every TEXT content item, recursively."""
    found = []
    for item in ds.get("ContentSequence", []):
        if item.get("ValueType") == "TEXT":
            found.append((str(item.ConceptNameCodeSequence[0].CodeValue), str(item.TextValue)))
        found += _text_items(item)
    return found


@pytest.mark.skipif(not Path(DCIODVFY).exists(), reason="needs dicom3tools (dciodvfy)")
def test_hepatica_run_puts_predictions_in_the_sr_and_one_explanation_series_per_model(
        setup: dict[str, Path]) -> None:
    config = setup["root"] / "run.toml"
    config.write_text(f'data_dir = "{setup["data"]}"\n' + _config_lines(setup))
    out = setup["root"] / "out"
    assert main(["run", str(setup["study"] / "dicom"), "--out", str(out),
                 "--config", str(config)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    by_name = {m["name"]: m for m in summary["response_models"]}
    for model in MODELS:
        assert by_name[model]["reason"] == "predicted", by_name[model]
        assert 0.0 <= by_name[model]["probability"] <= 1.0
        assert by_name[model]["explanation"]["images"]
    files = [out / f for f in summary["files"]]
    _check_outputs(files)
    for path in files:
        assert dciodvfy_errors(path) == [], path.name


@pytest.mark.network
@pytest.mark.dcmtk
def test_the_node_archives_the_explanations(setup: dict[str, Path], tmp_path: Path) -> None:
    archive_port, port = free_port(), free_port()
    archive = start_archive(tmp_path / "archive", archive_port)
    config = write_config(tmp_path / "hepatica.toml", port=port, archive_port=archive_port,
                          data_dir=setup["data"])
    config.write_text(config.read_text().replace("[pipeline]\n", _config_lines(setup)))
    node = start_node(config, tmp_path / "serve.log", port)
    try:
        sent = storescu([setup["study"] / "dicom"], port)
        assert sent.returncode == 0, sent.stderr
        first = next((setup["study"] / "dicom").rglob("*.dcm"))
        study_uid = str(pydicom.dcmread(first, stop_before_pixels=True).StudyInstanceUID)
        job = wait_for_job(setup["data"] / "jobs.sqlite3", study_uid,
                           {JobState.DONE, JobState.FAILED, JobState.DEAD}, timeout=900)
        assert job.state == JobState.DONE, job.error
        archived = sorted(p for p in (tmp_path / "archive").rglob("*") if p.is_file())
        _check_outputs(archived)
        for path in archived:
            assert dciodvfy_errors(path) == [], path.name
    finally:
        stop(node)
        stop(archive)
