"""Survival statistics on the Rossi recidivism data (lifelines.datasets.load_rossi).

Published values: Fox & Weisberg, "Cox Proportional-Hazards Regression for Survival Data in R",
appendix to An R Companion to Applied Regression (2011), Rossi et al. (1980) data, 432
prisoners followed for 52 weeks, 114 re-arrested (66 without and 48 with financial aid).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines.datasets import load_rossi

from inference.evaluation import survival as surv

COVARIATES = ["fin", "age", "race", "wexp", "mar", "paro", "prio"]
# Fox's appendix, coxph(Surv(week, arrest) ~ fin + age + race + wexp + mar + paro + prio)
PUBLISHED_COEF = {"fin": -0.379, "age": -0.0574, "race": 0.314, "wexp": -0.150,
                  "mar": -0.434, "paro": -0.0849, "prio": 0.0915}
PUBLISHED_SE = {"fin": 0.1914, "age": 0.0220, "race": 0.3080, "wexp": 0.2121,
                "mar": 0.3819, "paro": 0.1958, "prio": 0.0286}


@pytest.fixture(scope="module")
def rossi() -> pd.DataFrame:
    return load_rossi()


def test_cox_matches_published_coefficients(rossi: pd.DataFrame) -> None:
    result = surv.fit_cox(rossi, "week", "arrest", COVARIATES)
    for name in COVARIATES:
        term = result.term(name)
        assert term.coef == pytest.approx(PUBLISHED_COEF[name], abs=1e-3), name
        assert term.se == pytest.approx(PUBLISHED_SE[name], abs=1e-3), name
        assert term.hazard_ratio == pytest.approx(np.exp(term.coef))
    assert result.term("fin").hazard_ratio == pytest.approx(0.684, abs=1e-3)  # Fox: 0.684
    assert (result.n, result.events) == (432, 114)
    assert result.concordance == pytest.approx(0.640, abs=1e-3)  # lifelines docs: 0.64


def test_kaplan_meier_by_financial_aid(rossi: pd.DataFrame) -> None:
    groups = [f"fin={v}" for v in rossi["fin"]]
    curves = surv.kaplan_meier(rossi["week"].to_numpy(float), rossi["arrest"].to_numpy(float),
                               groups)
    # nobody is censored before week 52, so S(52) = 1 − arrested / 216 in each arm
    by_name = {c.group: c for c in curves}
    assert by_name["fin=0"].survival[-1] == pytest.approx(1 - 66 / 216, abs=1e-12)
    assert by_name["fin=1"].survival[-1] == pytest.approx(1 - 48 / 216, abs=1e-12)
    assert by_name["fin=0"].events == 66 and by_name["fin=1"].n == 216
    assert by_name["fin=0"].median is None  # survival never reaches 0.5
    s26 = by_name["fin=0"].survival[by_name["fin=0"].timeline.index(26.0)]
    arrested_by_26 = int(((rossi.fin == 0) & (rossi.arrest == 1) & (rossi.week <= 26)).sum())
    assert s26 == pytest.approx(1 - arrested_by_26 / 216, abs=1e-12)


def _logrank_by_hand(time: np.ndarray, event: np.ndarray, group: np.ndarray) -> float:
    """Mantel–Haenszel log-rank χ² for two groups: Σ(O−E)² / ΣV over event times."""
    o_minus_e = var = 0.0
    for t in np.unique(time[event == 1]):
        at_risk = time >= t
        n, n1 = at_risk.sum(), (at_risk & group).sum()
        d = ((time == t) & (event == 1)).sum()
        d1 = ((time == t) & (event == 1) & group).sum()
        o_minus_e += d1 - d * n1 / n
        if n > 1:
            var += d * (n1 / n) * (1 - n1 / n) * (n - d) / (n - 1)
    return o_minus_e**2 / var


def test_logrank_and_hazard_ratio(rossi: pd.DataFrame) -> None:
    t, e = rossi["week"].to_numpy(float), rossi["arrest"].to_numpy(float)
    groups = [f"fin={v}" for v in rossi["fin"]]
    result = surv.logrank(t, e, groups)
    assert result.statistic == pytest.approx(
        _logrank_by_hand(t, e, rossi["fin"].to_numpy() == 1), rel=1e-9)
    assert result.statistic == pytest.approx(3.84, abs=0.01)  # R survdiff: Chisq = 3.8, p 0.05
    assert result.df == 1 and result.p_value == pytest.approx(0.050, abs=1e-3)
    hr = surv.group_hazard_ratios(t, e, groups, "fin=0").term("fin=1")
    assert hr.hazard_ratio < 1 < hr.hr_ci_high and hr.hr_ci_low < hr.hazard_ratio


def test_cox_without_events_is_a_clear_error(rossi: pd.DataFrame) -> None:
    with pytest.raises(surv.SurvivalFitError, match="no events"):
        surv.fit_cox(rossi.assign(arrest=0), "week", "arrest", ["fin"])
