"""Survival by predicted group: Kaplan–Meier, log-rank, hazard ratios, multivariable Cox.

Seeds 000–003 all split patients by the model's prediction and show that the split separates
overall or progression-free survival. lifelines does the fitting (Efron ties, as R's coxph);
this module turns its objects into plain frozen results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.exceptions import ConvergenceError
from lifelines.statistics import multivariate_logrank_test

from inference.evaluation.discrimination import FloatArray

__all__ = [
    "CoxResult",
    "CoxTerm",
    "KaplanMeierCurve",
    "LogRank",
    "SurvivalFitError",
    "fit_cox",
    "group_hazard_ratios",
    "kaplan_meier",
    "logrank",
]


class SurvivalFitError(ValueError):
    """A survival model could not be fitted (too few events, separation, no variation)."""


@dataclass(frozen=True)
class KaplanMeierCurve:
    """Product-limit survival of one group with its 95 % (exponential Greenwood) band."""

    group: str
    n: int
    events: int
    timeline: tuple[float, ...]
    survival: tuple[float, ...]
    ci_low: tuple[float, ...]
    ci_high: tuple[float, ...]
    median: float | None  # None when survival never falls to 0.5


@dataclass(frozen=True)
class LogRank:
    """Log-rank test across all groups (chi-square on groups − 1 df)."""

    statistic: float
    df: int
    p_value: float


@dataclass(frozen=True)
class CoxTerm:
    """One covariate of a Cox model: log-hazard coefficient and hazard ratio with 95 % CI."""

    name: str
    coef: float
    se: float
    hazard_ratio: float
    hr_ci_low: float
    hr_ci_high: float
    p_value: float


@dataclass(frozen=True)
class CoxResult:
    """A fitted Cox model: its terms and Harrell's C-index on the fitting data."""

    terms: tuple[CoxTerm, ...]
    concordance: float
    n: int
    events: int
    log_likelihood: float

    def term(self, name: str) -> CoxTerm:
        """The term called ``name``; KeyError names the available ones."""
        for t in self.terms:
            if t.name == name:
                return t
        raise KeyError(f"no term {name!r}; terms are {[t.name for t in self.terms]}")


def _finite_median(value: float) -> float | None:
    """lifelines reports an unreached median as inf; JSON wants None."""
    return float(value) if np.isfinite(value) else None


def _km_one(time: FloatArray, event: FloatArray, group: str) -> KaplanMeierCurve:
    """Fit one group's curve."""
    kmf = KaplanMeierFitter().fit(time, event_observed=event, label=group)
    sf = kmf.survival_function_[group]
    ci = kmf.confidence_interval_
    return KaplanMeierCurve(
        group=group,
        n=int(time.size),
        events=int(event.sum()),
        timeline=tuple(float(t) for t in sf.index),
        survival=tuple(float(s) for s in sf.to_numpy()),
        ci_low=tuple(float(v) for v in ci.iloc[:, 0].to_numpy()),
        ci_high=tuple(float(v) for v in ci.iloc[:, 1].to_numpy()),
        median=_finite_median(float(kmf.median_survival_time_)),
    )


def kaplan_meier(
    time: FloatArray, event: FloatArray, groups: Sequence[str]
) -> tuple[KaplanMeierCurve, ...]:
    """One curve per group, in first-seen order of ``groups`` sorted by name."""
    labels = np.asarray(groups, dtype=object)
    return tuple(
        _km_one(time[labels == g], event[labels == g], str(g)) for g in sorted(set(groups))
    )


def logrank(time: FloatArray, event: FloatArray, groups: Sequence[str]) -> LogRank:
    """Mantel–Cox log-rank test; the two-group case equals the classic test."""
    if len(set(groups)) < 2:
        raise SurvivalFitError("the log-rank test needs at least two predicted groups")
    result = multivariate_logrank_test(time, np.asarray(groups, dtype=object), event)
    return LogRank(
        float(result.test_statistic), int(result.degrees_of_freedom), float(result.p_value)
    )


def _terms(cph: CoxPHFitter) -> tuple[CoxTerm, ...]:
    """Read lifelines' summary table into CoxTerms."""
    s = cph.summary
    return tuple(
        CoxTerm(
            name=str(name),
            coef=float(row["coef"]),
            se=float(row["se(coef)"]),
            hazard_ratio=float(row["exp(coef)"]),
            hr_ci_low=float(row["exp(coef) lower 95%"]),
            hr_ci_high=float(row["exp(coef) upper 95%"]),
            p_value=float(row["p"]),
        )
        for name, row in s.iterrows()
    )


def fit_cox(
    frame: pd.DataFrame, duration_col: str, event_col: str, covariates: Sequence[str]
) -> CoxResult:
    """Cox proportional hazards on the numeric ``covariates`` of ``frame`` (no penalty)."""
    data = frame[[duration_col, event_col, *covariates]].astype(float)
    if int(data[event_col].sum()) == 0:
        raise SurvivalFitError(f"no events in {event_col!r}: a Cox model cannot be fitted")
    try:
        cph = CoxPHFitter().fit(data, duration_col=duration_col, event_col=event_col)
    except (ConvergenceError, np.linalg.LinAlgError) as exc:
        raise SurvivalFitError(f"Cox model did not converge: {exc}") from exc
    return CoxResult(
        terms=_terms(cph),
        concordance=float(cph.concordance_index_),
        n=int(data.shape[0]),
        events=int(data[event_col].sum()),
        log_likelihood=float(cph.log_likelihood_),
    )


def group_hazard_ratios(
    time: FloatArray, event: FloatArray, groups: Sequence[str], reference: str
) -> CoxResult:
    """Univariable Cox of group indicators against ``reference``: the HR quoted beside a KM plot."""
    frame = _group_dummies(groups, reference)
    names = list(frame.columns)
    frame["_time"], frame["_event"] = time, event
    return fit_cox(frame, "_time", "_event", names)


def _group_dummies(groups: Sequence[str], reference: str) -> pd.DataFrame:
    """One 0/1 column per non-reference group, named after the group."""
    labels = pd.Series(list(groups), dtype=object)
    others = [g for g in sorted(set(groups)) if g != reference]
    if not others:
        raise SurvivalFitError("all patients are in one predicted group: no hazard ratio")
    return pd.DataFrame({g: (labels == g).astype(float).to_numpy() for g in others})
