"""``hepatica evaluate --run BUNDLE``: served predictions, and seed 000's drop-a-phase table.

Known answers: the radiomics AUC equals the one ``tests/plugin/test_response_models.py``
measures on the same held-out rows (and the bundles' recorded ``holdout_auc_served_onnx``); a
logistic bundle's log-odds split exactly into a per-phase sum, so mean-imputing AP and PVP
separately must add up to mean-imputing both; the nomogram without image inputs ranks
patients exactly as its clinical terms (coefficients in bundle.toml) do.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from inference.bundle import load_bundle
from plugin.cli import evaluate as evaluate_cli
from plugin.pipeline.models import SHIPPED_BUNDLES
from plugin.research.evaluate_run import ALL_IMAGES
from plugin.research.scoring import score_rows

Run = tuple[Path, dict[str, Any], str]
RADIOMICS_DATA = Path(__file__).resolve().parents[1] / "data" / "radiomics"
HELDOUT = RADIOMICS_DATA / "heldout_features.csv"
RUN_BUNDLES = ("hepatica-radiomics-pd-ct", "hepatica-nomogram-pd", "hepatica-nomogram-pd-no-afp")
RADIOMICS = "hepatica-radiomics-pd-ct"


def _models(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["model"]: m for m in metrics["models"]}


def _heldout_rows() -> list[dict[str, str]]:
    with HELDOUT.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_cohort_fixture_is_the_heldout_data(phantom_cohort: Path) -> None:
    """The generated cohort carries the same outcomes as the committed features CSV."""
    cohort = pd.read_csv(phantom_cohort / "cohort.csv", dtype={"patient_id": str})
    heldout = pd.read_csv(HELDOUT, dtype={"patient_id": str})
    merged = heldout[["patient_id", "pd"]].merge(cohort[["patient_id", "pd"]], on="patient_id")
    assert len(merged) == 60 and (merged["pd_x"] == merged["pd_y"]).all()


def test_run_auc_equals_the_radiomics_test(run_report: Run) -> None:
    out, metrics, _ = run_report
    bundle = load_bundle(SHIPPED_BUNDLES / RADIOMICS)
    rows = _heldout_rows()
    features = {r["patient_id"]: {k: float(v) for k, v in r.items()
                                  if k in bundle.inputs.features} for r in rows}
    expected = roc_auc_score([int(r["pd"]) for r in rows], score_rows(bundle, rows, features))
    models = _models(metrics)
    assert models[RADIOMICS]["auc"]["auc"] == pytest.approx(expected, abs=1e-12)
    predictions = pd.read_csv(out / "predictions.csv")
    assert predictions.groupby("model").size().to_dict() == dict.fromkeys(RUN_BUNDLES, 60)
    for name in RUN_BUNDLES:  # what `hepatica train` recorded for the same 60 patients
        recorded = load_bundle(SHIPPED_BUNDLES / name).training["holdout_auc_served_onnx"]
        assert models[name]["auc"]["auc"] == pytest.approx(recorded, abs=5e-5)
        assert models[name]["n"] == 60
    assert metrics["label"] == "pd"  # the bundles' training label, not asked for
    at = models[RADIOMICS]["at_threshold"]["threshold"]
    assert at == bundle.threshold("probability", 0.5)
    assert any("100 of 160 cohort patients not scored" in n for n in metrics["notes"])


def test_dropping_a_phase_never_beats_the_full_model(run_report: Run) -> None:
    _, metrics, _ = run_report
    for model in metrics["models"]:
        table = {r["dropped"]: r for r in model["robustness"]}
        assert list(table) == ["AP", "PVP", ALL_IMAGES], model["model"]
        for row in table.values():
            assert row["auc_full"] == pytest.approx(model["auc"]["auc"])
            # higher only by noise: not above the full model by 1.96 paired DeLong SEs
            assert row["change"] <= 1.96 * row["comparison"]["se"] + 1e-12
        assert len(table["AP"]["inputs_removed"]) == len(table["PVP"]["inputs_removed"]) == 5
    radiomics = {r["dropped"]: r for r in _models(metrics)[RADIOMICS]["robustness"]}
    blind = radiomics[ALL_IMAGES]["auc"]
    assert blind["ci_low"] - 1e-12 <= 0.5 <= blind["ci_high"] + 1e-12
    assert blind["auc"] == pytest.approx(0.5)  # one score for everyone


def test_phase_ablations_add_up_for_a_linear_bundle(run_report: Run) -> None:
    """log-odds(full) − log-odds(no AP) − log-odds(no PVP) + log-odds(neither) = 0 when each
    phase's features are replaced by their training means in a logistic model."""
    out, _, _ = run_report
    full = pd.read_csv(out / "predictions.csv").query("model == @RADIOMICS")
    dropped = pd.read_csv(out / "predictions_dropped.csv").query("model == @RADIOMICS")
    logit = {k: g.set_index("patient_id")["score"].map(lambda p: math.log(p / (1 - p)))
             for k, g in dropped.groupby("dropped")}
    base = full.set_index("patient_id")["log_odds"]
    residual = base - logit["AP"] - logit["PVP"] + logit[ALL_IMAGES]
    assert np.abs(residual.to_numpy()).max() < 1e-3  # float32 ONNX arithmetic


def test_nomogram_without_images_is_its_clinical_part(run_report: Run,
                                                      phantom_cohort: Path) -> None:
    """With every radiomics feature at its mean the nomogram's score is a constant plus its
    clinical terms, so its AUC equals the AUC of Σ coefficient × clinical value."""
    _, metrics, _ = run_report
    bundle = load_bundle(SHIPPED_BUNDLES / "hepatica-nomogram-pd")
    coefficients = bundle.training["coefficients"]
    cohort = pd.read_csv(phantom_cohort / "cohort.csv", dtype={"patient_id": str})
    held = cohort.set_index("patient_id").loc[[r["patient_id"] for r in _heldout_rows()]]
    linear = np.zeros(len(held))
    for name, beta in coefficients.items():
        if not name.startswith("clinical:"):
            continue
        variable, _, level = name[len("clinical:"):].partition("=")
        values = (held[variable] == level).astype(float) if level else held[variable]
        linear += beta * values.to_numpy(dtype=float)
    expected = roc_auc_score(held["pd"], linear)
    row = {r["dropped"]: r for r in _models(metrics)["hepatica-nomogram-pd"]["robustness"]}
    assert row[ALL_IMAGES]["auc"]["auc"] == pytest.approx(expected, abs=1e-12)


def test_report_and_terminal_show_the_robustness_table(run_report: Run) -> None:
    out, metrics, terminal = run_report
    html = (out / "report.html").read_text()
    assert "Robustness: AUC when a phase is dropped" in html
    assert html.count("<details><summary>") == 9 and "explain.baseline" in html
    assert "Note: hepatica-radiomics-pd-ct: 100 of 160" in html
    assert "Robustness — AUC when a phase is dropped" in terminal
    assert "all image inputs" in terminal and "training mean" in terminal
    assert "explain.baseline" in metrics["robustness_method"]
    (comparison,) = metrics["comparisons"]
    assert comparison["n"] == 60


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hepatica")
    evaluate_cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["evaluate", *argv])


def _site_cohort(tmp_path: Path) -> Path:
    """A cohort that is not a phantom cohort: the held-out CSV's ids and outcomes only."""
    path = tmp_path / "site.csv"
    pd.read_csv(HELDOUT)[["patient_id", "pd"]].to_csv(path, index=False)
    return path


def _without_column(tmp_path: Path) -> Path:
    path = tmp_path / "features.csv"
    pd.read_csv(HELDOUT).drop(columns=["AP_tumour_original_glcm_Contrast"]).to_csv(path,
                                                                                   index=False)
    return path


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (lambda t: ["--run", "no-such-bundle", "--cohort", str(_site_cohort(t))],
         "neither a bundle folder nor an installed bundle"),
        (lambda t: ["--run", "liver-tumour-seg", "--cohort", str(_site_cohort(t))],
         "scores response bundles"),
        (lambda t: ["--run", "hepatica-nomogram-pd", "--cohort", str(_site_cohort(t)),
                    "--features", str(HELDOUT)],
         "needs clinical column(s) ['afp_response', 'platelets', 'dilated_vasculature']"),
        (lambda t: ["--run", RADIOMICS, "--cohort", str(_site_cohort(t)), "--features",
                    str(_without_column(t))],
         "lacks 1 input(s) the bundles need: AP_tumour_original_glcm_Contrast"),
        (lambda t: ["--run", RADIOMICS, "--cohort", str(_site_cohort(t))],
         "not implemented yet, so extract the features and pass them with --features"),
        (lambda t: ["--run", RADIOMICS, "--cohort", str(t / "nowhere")], "no such CSV"),
    ],
    ids=["unknown", "not-response", "no-clinical", "feature-column", "site-images", "no-cohort"],
)
def test_run_errors_say_what_to_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    argv: Any, message: str) -> None:
    args = _parse([*argv(tmp_path), "--out", str(tmp_path / "out")])
    assert args.func(args) == evaluate_cli.EXIT_BAD_INPUT
    err = " ".join(capsys.readouterr().err.split())
    assert message in err


def test_run_with_a_features_csv_as_cohort(tmp_path: Path) -> None:
    """The held-out CSV alone is a cohort too (ids, outcome, features); no robustness rows
    are lost and patients without a feature row are named."""
    features = pd.read_csv(HELDOUT)
    features.loc[0, "AP_tumour_original_glcm_Contrast"] = np.nan
    path = tmp_path / "f.csv"
    features.to_csv(path, index=False)
    args = _parse(["--run", RADIOMICS, "--cohort", str(path), "--features", str(path),
                   "--out", str(tmp_path / "out")])
    assert args.func(args) == evaluate_cli.EXIT_OK
    metrics = pd.read_json(tmp_path / "out" / "metrics.json", typ="series")
    (model,) = metrics["models"]
    assert model["n"] == 59 and len(model["robustness"]) == 3
    assert any("HCC00100" in n and "AP_tumour_original_glcm_Contrast" in n
               for n in metrics["notes"])


def test_without_features_the_phantom_images_are_rendered(
    phantom_cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No --features: radiomics come from plugin.research.radiomics_cohort with the bundle's own
    extraction settings (stubbed here with the held-out values; the real extraction takes
    ~7 s per patient and is what `hepatica train` uses)."""
    import plugin.research.scoring as run_module

    seen = []
    rows = {r["patient_id"]: {k: float(v) for k, v in r.items() if k not in ("patient_id", "pd")}
            for r in _heldout_rows()}

    def fake(cohort_dir: Path, spec: Any, rated: int, workers: int, progress: Any
             ) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
        seen.append((cohort_dir, spec, rated))
        return rows, {}

    monkeypatch.setattr(run_module, "cohort_features", fake)
    args = _parse(["--run", RADIOMICS, "--cohort", str(phantom_cohort), "--out",
                   str(tmp_path / "out"), "--phantom-seed", "0"])
    assert args.func(args) == evaluate_cli.EXIT_OK
    ((folder, spec, rated),) = seen
    assert folder == phantom_cohort and rated == 0
    assert (spec.phases, spec.regions, spec.settings) == (("AP", "PVP"), ("tumour", "ring"),
                                                          "ct_original")
