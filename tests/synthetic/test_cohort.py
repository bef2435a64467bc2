"""The cohort's planted effects are found, with their sign, and an unrelated one is not."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from scipy import stats

from dicom_io.synthetic.cohort import COLUMNS, simulate, write_cohort, write_patient
from plugin.cli.phantom import add_cohort_parser, rewrite_phantom_cohort

_REQUIRED_TEXT = (
    "patient_id scenario age sex hbv child_pugh bclc cnlc ecog afp afp_1m afp_response "
    "platelets bilirubin albumin albi ast alt pvtt extrahepatic_mets tumour_number "
    "largest_tumour_mm dilated_vasculature regular_margin peritumoral_enhancement necrosis "
    "best_response_recist best_response_mrecist orr dcb pd dcr risk_class os_months os_event "
    "pfs_months pfs_event pivka_ii prothrombin_time_s neutrophils lymphocytes monocytes nlr "
    "plr alp ggt crp prior_treatment haic_cycles haic_regimen")
REQUIRED = _REQUIRED_TEXT.split()  # the issue's columns + seed 004's factors


@pytest.fixture(scope="module")
def rows() -> list[dict[str, object]]:
    return simulate(400, 7, "conversion")


def _logit_wald(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64],
                ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Unpenalised logistic regression by Newton steps; coefficients and Wald p-values."""
    design = np.column_stack([np.ones(len(y)), x])
    beta = np.zeros(design.shape[1])
    for _ in range(30):
        p = 1 / (1 + np.exp(-design @ beta))
        hessian = design.T @ (design * (p * (1 - p))[:, None])
        beta += np.linalg.solve(hessian, design.T @ (y - p))
    se = np.sqrt(np.diag(np.linalg.inv(hessian)))
    return beta[1:], 2 * stats.norm.sf(np.abs(beta[1:] / se[1:]))


def test_columns_and_determinism(rows: list[dict[str, object]]) -> None:
    assert set(REQUIRED) <= set(COLUMNS)
    assert simulate(5, 7, "conversion") == rows[:5]
    assert simulate(5, 8, "conversion") != rows[:5]


def _dcb_model(rows: list[dict[str, object]]) -> dict[str, tuple[float, float]]:
    names = ("afp_response", "platelets", "dilated_vasculature", "height_cm")
    x = np.array([[float(r["afp_response"] == "response"), float(r["platelets"]) / 100,  # type: ignore[arg-type]
                   float(r["dilated_vasculature"]), float(r["height_cm"])]  # type: ignore[arg-type]
                  for r in rows])
    y = np.array([float(r["dcb"]) for r in rows])  # type: ignore[arg-type]
    beta, p = _logit_wald(x, y)
    return {n: (float(b), float(q)) for n, b, q in zip(names, beta, p, strict=True)}


def test_planted_dcb_effects_are_found(rows: list[dict[str, object]]) -> None:
    found = _dcb_model(rows)
    assert found["afp_response"][0] > 0 and found["afp_response"][1] < 0.05
    assert found["platelets"][0] < 0 and found["platelets"][1] < 0.05
    assert found["dilated_vasculature"][0] > 0 and found["dilated_vasculature"][1] < 0.05


def test_unrelated_variable_is_rarely_significant() -> None:
    """Under the null p < 0.05 happens 1 time in 20; 3+ hits in 10 cohorts has P ≈ 1 %."""
    hits = sum(_dcb_model(simulate(400, seed, "conversion"))["height_cm"][1] < 0.05
               for seed in range(20, 30))
    assert hits <= 2


def test_albi_and_pvtt_shorten_survival(rows: list[dict[str, object]]) -> None:
    lifelines = pytest.importorskip("lifelines")
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame(rows)[["os_months", "os_event", "albi", "pvtt", "monocytes"]]
    cox = lifelines.CoxPHFitter().fit(frame.astype(float), "os_months", "os_event")
    assert cox.params_["albi"] > 0 and cox.summary.loc["albi", "p"] < 0.05
    assert cox.params_["pvtt"] > 0 and cox.summary.loc["pvtt", "p"] < 0.05
    assert cox.summary.loc["monocytes", "p"] > 0.05


def test_outcome_definitions_hold(rows: list[dict[str, object]]) -> None:
    for r in rows:
        assert r["orr"] == int(r["best_response_recist"] in ("CR", "PR"))
        assert r["dcr"] == 1 - int(r["pd"])  # type: ignore[arg-type]
        assert r["dcb"] <= int(r["best_response_mrecist"] in ("CR", "PR"))
        assert float(r["pfs_months"]) <= float(r["os_months"])  # type: ignore[arg-type]
        assert r["albi"] == pytest.approx(0.66 * np.log10(float(r["bilirubin"]))  # type: ignore[arg-type]
                                          - 0.085 * float(r["albumin"]), abs=2e-2)  # type: ignore[arg-type]


def test_cli_writes_the_csv_without_images(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_cohort_parser(parser.add_subparsers())
    argv = rewrite_phantom_cohort(["phantom", "cohort", str(tmp_path), "--patients", "30",
                                   "--seed", "3", "--scenario", "haic", "--no-images"])
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    with (tmp_path / "cohort.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 30 and table[0]["scenario"] == "haic"
    assert rewrite_phantom_cohort(["phantom", "out"]) == ["phantom", "out"]
    assert write_cohort(tmp_path / "again", 30, 3, "haic", images=False).read_text() == (
        tmp_path / "cohort.csv").read_text()


def test_one_patients_images_show_its_row(tmp_path: Path) -> None:
    row = next(r for r in simulate(40, 1, "tki-pd1") if r["pvtt"] and r["tumour_number"] == 2)
    write_patient(tmp_path, row, 1, "ct", 1)
    truth = json.loads((tmp_path / "tp0" / "ground_truth" / "truth.json").read_text())
    assert len(truth["lesions"]) == 2 + (0 if row["regular_margin"] else 2)
    assert max(les["longest_diameter_mm"] for les in truth["lesions"]) == pytest.approx(
        row["largest_tumour_mm"], rel=0.2)
    assert truth["findings"]["pvtt_ml"] > 0
