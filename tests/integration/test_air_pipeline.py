"""Issue 14 part 4 at the pipeline level: every object `hepatica run` writes carries IHE AIR.

tests/export/test_air_conformance.py checks the builders with objects it makes itself; this
checks what the pipeline actually writes for small MR and CT phantoms (SEG, SR, heatmaps, and
the CT's response model in the SR): one Contributing Equipment item per algorithm with the
AIR purpose code, the model's name and version, a Device UID derived from the installed
weights' SHA-256; the 99IHE scheme declared; tracked, attributed SR groups; the research-use
statement; no dciodvfy error.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from dicom_io.synthetic import make_phantom, write_phantom_study
from dicom_io.synthetic.anatomy import PhantomSpec
from export.common import AIR_PROCESSING_ALGORITHM, MANUFACTURER, AlgorithmInfo, device_uid
from plugin.cli.main import main
from plugin.pipeline.models import installed_bundles, model_sha256
from tests.integration.nodes import DCIODVFY, dciodvfy_errors
from tests.integration.scale_helpers import SMALL

pytestmark = [pytest.mark.slow]

MR = SMALL
CT = PhantomSpec(modality="CT", rows=96, columns=96, slices=24, lesion_count=(1, 1),
                 lesion_diameter_mm=(20.0, 24.0))


@pytest.fixture(scope="module", params=[("mr", MR, 424_340), ("ct", CT, 424_341)],
                ids=["mr", "ct"])
def run(request: pytest.FixtureRequest,
        tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, object], list[Path]]:
    name, spec, seed = request.param
    folder = tmp_path_factory.mktemp(f"air-{name}")
    write_phantom_study(make_phantom(seed, spec), folder / "study")
    out = folder / "out"
    assert main(["run", str(folder / "study" / "dicom"), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    files = [out / f for f in summary["files"]]
    assert files and all(p.is_file() for p in files)
    return name, summary, files


def _expected(name: str, version: str) -> str:
    (bundle,) = [b for b in installed_bundles() if (b.name, b.version) == (name, version)]
    return device_uid(AlgorithmInfo(bundle.name, bundle.version, bundle.family,
                                    model_digest=model_sha256(bundle)))


def _ours(ds: Dataset) -> dict[tuple[str, str], Dataset]:
    return {(str(e.ManufacturerModelName), str(e.SoftwareVersions[0])): e
            for e in ds.ContributingEquipmentSequence if e.Manufacturer == MANUFACTURER}


def test_every_result_object_names_its_algorithm_for_air(
        run: tuple[str, dict[str, object], list[Path]]) -> None:
    kind, summary, files = run
    model = summary["model"]
    assert isinstance(model, dict)
    segmentation = (str(model["name"]), str(model["version"]))
    predicted = {(str(r["name"]), str(r["version"])) for r in summary["response_models"]
                 if isinstance(r, dict) and "probability" in r}
    kinds = set()
    for path in files:
        ds = pydicom.dcmread(path)
        kinds.add(str(ds.Modality))
        items = _ours(ds)
        expected = {segmentation} | (predicted if ds.Modality == "SR" else set())
        assert set(items) == expected, (path.name, set(items))
        for (name, version), item in items.items():
            (purpose,) = item.PurposeOfReferenceCodeSequence
            assert (purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning) == (
                AIR_PROCESSING_ALGORITHM.value, "99IHE", "Processing Algorithm"), path.name
            assert item.DeviceUID == _expected(name, version), (path.name, name)
            assert pydicom.uid.UID(item.DeviceUID).is_valid
        schemes = {s.CodingSchemeDesignator for s in ds.CodingSchemeIdentificationSequence}
        assert "99IHE" in schemes, path.name
        assert b"RESEARCH USE ONLY" in path.read_bytes(), path.name
        if ds.Modality == "SR":
            _groups_are_tracked(ds)
        if ds.Modality == "SEG":
            for segment in ds.SegmentSequence:
                assert segment.SegmentAlgorithmType == "AUTOMATIC"
                (algorithm,) = segment.SegmentationAlgorithmIdentificationSequence
                assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == segmentation
    assert kinds == {"SEG", "SR", "OT"}
    if kind == "ct":  # the shipped CT radiomics model predicts: it is in the SR's items too
        assert predicted, summary["response_models"]


def _groups_are_tracked(ds: Dataset) -> None:
    (measurements,) = [c for c in ds.ContentSequence
                       if c.ConceptNameCodeSequence[0].CodeValue == "126010"]
    groups = list(measurements.ContentSequence)
    assert groups
    for group in groups:
        codes = [i.ConceptNameCodeSequence[0].CodeValue for i in group.ContentSequence]
        assert codes.count("112039") == 1 and codes.count("112040") == 1  # tracking id, UID
        assert codes.count("111001") == 1  # Algorithm Name


@pytest.mark.skipif(shutil.which(DCIODVFY) is None and not Path(DCIODVFY).exists(),
                    reason="needs dicom3tools (dciodvfy)")
def test_dciodvfy_finds_no_error_in_what_the_pipeline_wrote(
        run: tuple[str, dict[str, object], list[Path]]) -> None:
    _, _, files = run
    for path in files:
        assert dciodvfy_errors(path) == [], path.name
