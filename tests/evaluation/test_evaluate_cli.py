"""End to end: CSVs in, report.html and metrics.json out, through ``hepatica evaluate``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from inference.evaluation import EvaluationError, evaluate
from plugin.cli import evaluate as evaluate_cli

Edit = Callable[[pd.DataFrame, pd.DataFrame], tuple[pd.DataFrame, pd.DataFrame]]


def _parse(argv: list[str]) -> argparse.Namespace:
    """The sub-command as plugin/cli/main.py will mount it."""
    parser = argparse.ArgumentParser(prog="hepatica")
    evaluate_cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_evaluate_writes_report_and_metrics(binary_report: tuple[Path, dict[str, object]]) -> None:
    out, metrics = binary_report
    assert (out / "report.html").stat().st_size > 10_000
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == metrics
    models = {m["model"]: m for m in on_disk["models"]}
    good = models["integrated"]
    assert good["n"] == 120 and good["auc"]["auc"] > 0.7
    assert good["auc_bootstrap_ci"][0] < good["auc"]["auc"] < good["auc_bootstrap_ci"][1]
    assert good["at_threshold"]["threshold"] == 0.5
    assert good["hosmer_lemeshow"]["df"] == 8
    assert len(good["decision_curve"]["thresholds"]) == 99
    os_ = good["survival"][0]
    assert os_["endpoint"] == "OS" and os_["logrank"]["p_value"] < 0.05
    terms = [t["name"] for t in os_["multivariable"]["terms"]]
    assert "age" in terms and any(t.startswith("afp_response_") for t in terms)
    (comparison,) = on_disk["comparisons"]
    assert comparison["model_a"] == "integrated" and comparison["p_value"] < 0.05
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 8 and "<script" not in html


def test_cli_multiclass(cohort_files: dict[str, Path], tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    args = _parse(["evaluate", "--predictions", str(cohort_files["multi"]), "--cohort",
                   str(cohort_files["cohort"]), "--out", str(tmp_path), "--label", "risk_class",
                   "--time-column", "os_months", "--event-column", "os_event"])
    assert args.func(args) == 0
    assert "macro OvR" in capsys.readouterr().out
    (model,) = json.loads((tmp_path / "metrics.json").read_text())["models"]
    assert model["kind"] == "multiclass" and len(model["multiclass"]["one_vs_rest"]) == 4
    assert model["multiclass"]["macro_auc"] > 0.7


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c, p: (c.drop(columns=["dcb"]), p), "label column 'dcb' is not in the cohort"),
        (lambda c, p: (c.iloc[5:], p), "5 of 120 predicted patients are not in the cohort"),
        (lambda c, p: (c.assign(dcb=1), p), "single class"),
        (lambda c, p: (c, p.drop(columns=["score"])), "needs a 'score' column"),
        (lambda c, p: (c.assign(dcb="maybe"), p), "must be 0/1"),
    ],
    ids=["missing-label", "unmatched", "single-class", "no-score", "bad-label"],
)
def test_clear_errors(cohort_files: dict[str, Path], tmp_path: Path, edit: Edit,
                      message: str) -> None:
    cohort = pd.read_csv(cohort_files["cohort"], dtype={"patient_id": str})
    pred = pd.read_csv(cohort_files["binary"], dtype={"patient_id": str})
    cohort, pred = edit(cohort, pred)
    cohort.to_csv(tmp_path / "c.csv", index=False)
    pred.to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(EvaluationError, match=message):
        evaluate(tmp_path / "p.csv", tmp_path / "c.csv", tmp_path / "out", "dcb")


def test_cli_reports_errors_with_exit_status(cohort_files: dict[str, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    args = _parse(["evaluate", "--predictions", str(cohort_files["binary"]), "--cohort",
                   str(cohort_files["cohort"]), "--out", str(tmp_path), "--compare",
                   "integrated", "nope", "--label", "dcb"])
    assert args.func(args) == evaluate_cli.EXIT_BAD_INPUT
    assert "no model 'nope'" in capsys.readouterr().err


def test_package_boundaries() -> None:
    """inference.evaluation stays out of the DICOM, export and plugin rooms."""
    import subprocess
    import sys

    code = ("import sys, inference.evaluation; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'dicom_io', 'export', 'plugin'}))")
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=root, check=True)
    assert done.stdout.strip() == "[]"
