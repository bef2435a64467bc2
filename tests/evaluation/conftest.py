"""Fixtures for the evaluation tests: a small synthetic cohort written as the CLI's CSVs.

The cohort is generated here from a fixed seed (no data files): a latent response drives the
label, two model scores of different quality, overall survival and a 4-class risk group.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

CLASSES = ("high", "medium_high", "low_medium", "low")


def make_cohort(n: int = 120, seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(cohort, binary predictions for two models, multi-class predictions)."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=n)
    dcb = (latent + rng.normal(scale=0.8, size=n) > 0.3).astype(int)
    ids = [f"P{i:04d}" for i in range(n)]
    hazard = np.exp(-0.8 * latent)
    os_months = np.minimum(rng.exponential(20.0 / hazard), 36.0)
    cohort = pd.DataFrame({
        "patient_id": ids, "dcb": dcb, "os_months": os_months.round(2),
        "os_event": (os_months < 36.0).astype(int), "age": rng.normal(62, 9, n).round(),
        "afp_response": rng.choice(["decline", "no_decline", "low_baseline"], n),
        "risk_class": [CLASSES[3 - int(q)] for q in np.digitize(-latent, [-0.7, 0.0, 0.7])],
    })
    good = 1 / (1 + np.exp(-(1.8 * latent + rng.normal(scale=0.7, size=n) - 0.5)))
    weak = 1 / (1 + np.exp(-(0.8 * latent + rng.normal(scale=1.2, size=n) - 0.3)))
    binary = pd.concat([
        pd.DataFrame({"patient_id": ids, "model": "integrated", "score": good.round(4)}),
        pd.DataFrame({"patient_id": ids, "model": "clinical", "score": weak.round(4)}),
    ])
    logits = np.stack([-latent * s for s in (1.5, 0.5, -0.5, -1.5)], axis=1)
    logits += rng.normal(scale=0.8, size=logits.shape)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    multi = pd.DataFrame({"patient_id": ids, "model": "progswin"})
    for k, c in enumerate(CLASSES):
        multi[f"p_{c}"] = probs[:, k].round(5)
    return cohort, binary, multi


@pytest.fixture(scope="session")
def cohort_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The synthetic cohort and predictions as CSV files."""
    root = tmp_path_factory.mktemp("cohort")
    cohort, binary, multi = make_cohort()
    paths = {"cohort": root / "cohort.csv", "binary": root / "pred.csv",
             "multi": root / "pred_multi.csv"}
    cohort.to_csv(paths["cohort"], index=False)
    binary.to_csv(paths["binary"], index=False)
    multi.to_csv(paths["multi"], index=False)
    return paths


@pytest.fixture(scope="session")
def binary_report(
    cohort_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, object]]:
    """One end-to-end run on the binary predictions, shared by the CLI and browser tests."""
    from inference.evaluation import evaluate

    out = tmp_path_factory.mktemp("report")
    metrics = evaluate(cohort_files["binary"], cohort_files["cohort"], out, "dcb",
                       ("integrated", "clinical"), threshold=0.5,
                       covariates=("age", "afp_response"))
    return out, metrics


RADIOMICS_DATA = Path(__file__).resolve().parents[1] / "data" / "radiomics"
RUN_BUNDLES = ("hepatica-radiomics-pd-ct", "hepatica-nomogram-pd", "hepatica-nomogram-pd-no-afp")


@pytest.fixture(scope="session")
def phantom_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 160-patient cohort the shipped response bundles were trained on (rows only, ~1 s);
    its last 60 patients are the held-out rows of tests/data/radiomics/heldout_features.csv."""
    from dicom_io.synthetic.cohort import write_cohort

    folder = tmp_path_factory.mktemp("phantom_cohort")
    write_cohort(folder, 160, 0, "tki-pd1", "ct", images=False,
                 effects=RADIOMICS_DATA / "strong_image_effects.toml")
    return folder


@pytest.fixture(scope="session")
def run_report(phantom_cohort: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> tuple[Path, dict[str, object], str]:
    """``hepatica evaluate --run`` with the three shipped response bundles on the held-out
    features: (output folder, metrics.json, terminal output)."""
    import argparse
    import contextlib
    import io
    import json

    from plugin.cli import evaluate as evaluate_cli

    out = tmp_path_factory.mktemp("run_report")
    parser = argparse.ArgumentParser(prog="hepatica")
    evaluate_cli.add_parser(parser.add_subparsers(dest="command"))
    argv = ["evaluate", *(a for b in RUN_BUNDLES for a in ("--run", b)), "--cohort",
            str(phantom_cohort), "--features", str(RADIOMICS_DATA / "heldout_features.csv"),
            "--out", str(out), "--compare", "hepatica-nomogram-pd", "hepatica-radiomics-pd-ct"]
    args = parser.parse_args(argv)
    terminal = io.StringIO()
    with contextlib.redirect_stdout(terminal):
        assert args.func(args) == evaluate_cli.EXIT_OK
    return out, json.loads((out / "metrics.json").read_text()), terminal.getvalue()
