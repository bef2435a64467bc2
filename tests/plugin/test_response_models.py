"""Response bundles served: held-out AUC through ONNX, clinical variants, reasons, the cache.

``tests/data/radiomics/heldout_features.csv`` holds the shipped radiomics bundle's input
features and the outcome of the 60 patients its training held out (see the README there).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from dicom_io.selection import choose, label_all
from dicom_io.series import load_study, series_to_volume
from dicom_io.synthetic import PhantomSpec, make_phantom, write_phantom_study
from inference.bundle import load_bundle
from plugin.pipeline.models import SHIPPED_BUNDLES
from plugin.pipeline.prediction import (
    PredictionInputs,
    ResponseSettings,
    response_sr_parts,
    run_response_models,
)
from plugin.pipeline.run import PipelineSettings
from plugin.research.radiomics_cohort import largest_lesion
from plugin.research.scoring import score_rows

DATA = Path(__file__).resolve().parents[1] / "data" / "radiomics"
RADIOMICS = SHIPPED_BUNDLES / "hepatica-radiomics-pd-ct"
IMAGE_BOUND = 0.86  # AUC of the planted image-borne log-odds (strong_image_effects.toml)


def test_heldout_auc_through_the_served_onnx_path() -> None:
    bundle = load_bundle(RADIOMICS)
    with (DATA / "heldout_features.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    features = {r["patient_id"]: {k: float(v) for k, v in r.items() if k in
                                  bundle.inputs.features} for r in rows}
    probability = score_rows(bundle, rows, features)
    auc = roc_auc_score([int(r["pd"]) for r in rows], probability)
    assert 0.80 <= auc <= IMAGE_BOUND + 0.08, auc


@pytest.fixture(scope="module")
def ct_study(tmp_path_factory: pytest.TempPathFactory) -> PredictionInputs:
    """A CT phantom as DICOM; its true lesions stand in for the segmentation (not tested here)."""
    folder = tmp_path_factory.mktemp("ct")
    phantom = make_phantom(5, PhantomSpec(modality="CT"))
    write_phantom_study(phantom, folder)
    labelled = label_all(load_study(folder / "dicom"))
    arterial = choose(labelled, "AP").chosen
    assert arterial is not None
    reference = series_to_volume(arterial.series)
    assert reference.array.shape == phantom.lesion_labels.shape
    first = arterial.series.datasets[0]
    return PredictionInputs(str(first.StudyInstanceUID), str(first.PatientID), labelled, reference,
                        phantom.labels > 0, largest_lesion(phantom.lesion_labels).astype(np.uint16),
                        "CT")


def _run(context: PredictionInputs, data_dir: Path) -> dict[str, object]:
    outcomes = run_response_models(context, [], PipelineSettings(), ResponseSettings(data_dir))
    groups, notes = response_sr_parts(outcomes, context.study_uid)
    assert len(groups) == sum(o.prediction is not None for o in outcomes)
    assert len(notes) >= len(outcomes)
    return {o.name: o for o in outcomes}


def test_without_clinical_inputs_radiomics_alone_with_reasons(ct_study: PredictionInputs,
                                                             tmp_path: Path) -> None:
    outcomes = _run(ct_study, tmp_path)
    radiomics = outcomes["hepatica-radiomics-pd-ct"]
    assert radiomics.prediction is not None and 0 <= radiomics.probability <= 1
    assert len(radiomics.contributions) > 0 and "phase AP" in radiomics.inputs_used
    for name in ("hepatica-nomogram-pd", "hepatica-nomogram-pd-no-afp"):
        assert outcomes[name].prediction is None
        assert "missing inputs" in outcomes[name].reason and "clinical:" in outcomes[name].reason
    cached = sorted((tmp_path / "radiomics-cache").rglob("*.json"))
    assert len(cached) == 4  # 2 phases x (tumour, ring)


def test_clinical_folder_picks_the_variant_with_most_inputs(ct_study: PredictionInputs,
                                                            tmp_path: Path) -> None:
    clinical = tmp_path / "clinical"
    clinical.mkdir()
    (clinical / f"{ct_study.study_uid}.json").write_text(json.dumps(
        {"platelets": 120, "dilated_vasculature": 1}))
    outcomes = _run(ct_study, tmp_path)
    assert outcomes["hepatica-nomogram-pd-no-afp"].prediction is not None
    assert "afp_response" in outcomes["hepatica-nomogram-pd"].reason
    used = outcomes["hepatica-nomogram-pd-no-afp"].inputs_used
    assert used["platelets"].startswith("120 (folder clinical)")
    (clinical / "site.csv").write_text(f"study_instance_uid,afp_response\n{ct_study.study_uid},"
                                       "response\n")
    outcomes = _run(ct_study, tmp_path)
    assert outcomes["hepatica-nomogram-pd"].prediction is not None
    assert "had all its inputs" in outcomes["hepatica-nomogram-pd-no-afp"].reason
