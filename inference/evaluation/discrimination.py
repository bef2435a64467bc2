"""Discrimination: ROC, AUC with DeLong and bootstrap CIs, DeLong test, threshold metrics.

Every study in SEEDS.md reports AUC with a 95 % CI and compares models with the DeLong test;
002 reports one-vs-rest AUCs; 001 and 004 report sensitivity, specificity, PPV and NPV at a
threshold, 004 with Clopper–Pearson CIs. DeLong is implemented from Sun & Xu (2014), the
midrank formulation of DeLong, DeLong & Clarke-Pearson (1988).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import stats

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]

__all__ = [
    "AucEstimate",
    "ConfusionCounts",
    "DelongComparison",
    "MulticlassMetrics",
    "Proportion",
    "RocCurve",
    "ThresholdMetrics",
    "bootstrap_auc_ci",
    "clopper_pearson",
    "delong_auc",
    "delong_covariance",
    "delong_test",
    "midranks",
    "multiclass_metrics",
    "roc_curve",
    "threshold_metrics",
    "youden_threshold",
]


@dataclass(frozen=True)
class Proportion:
    """k of n with its exact (Clopper–Pearson) CI; estimate is NaN when n is 0."""

    k: int
    n: int
    estimate: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class AucEstimate:
    """AUC with DeLong standard error and CI (Wald on the AUC scale, clipped to [0, 1])."""

    auc: float
    se: float
    ci_low: float
    ci_high: float
    n_positive: int
    n_negative: int


@dataclass(frozen=True)
class DelongComparison:
    """DeLong test of two correlated AUCs measured on the same patients."""

    model_a: str
    model_b: str
    auc_a: float
    auc_b: float
    difference: float
    se: float
    z: float
    p_value: float
    n: int


@dataclass(frozen=True)
class RocCurve:
    """ROC points at each distinct score; the first point (0, 0) has threshold +inf."""

    fpr: tuple[float, ...]
    tpr: tuple[float, ...]
    thresholds: tuple[float, ...]


@dataclass(frozen=True)
class ConfusionCounts:
    """2×2 table; a patient is called positive when score ≥ threshold."""

    tp: int
    fp: int
    tn: int
    fn: int


@dataclass(frozen=True)
class ThresholdMetrics:
    """Everything a clinician asks about one operating point."""

    threshold: float
    confusion: ConfusionCounts
    sensitivity: Proportion
    specificity: Proportion
    ppv: Proportion
    npv: Proportion
    accuracy: Proportion
    f1: float


@dataclass(frozen=True)
class MulticlassMetrics:
    """One-vs-rest AUCs (seed 002), arg-max accuracy and macro F1, k×k confusion matrix."""

    classes: tuple[str, ...]
    one_vs_rest: tuple[AucEstimate, ...]
    macro_auc: float
    accuracy: Proportion
    macro_f1: float
    confusion: tuple[tuple[int, ...], ...]  # rows: true class, columns: predicted class


def clopper_pearson(k: int, n: int, level: float = 0.95) -> Proportion:
    """Exact binomial CI from beta quantiles: conservative, right for small cells."""
    if n == 0:
        return Proportion(k, n, float("nan"), float("nan"), float("nan"))
    alpha = 1.0 - level
    low = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return Proportion(k, n, k / n, low, high)


def midranks(x: FloatArray) -> FloatArray:
    """Ranks 1..n where tied values share the mean of the ranks they span (Sun & Xu's T)."""
    values, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    del values
    ends = np.cumsum(counts)
    mid = ends - (counts - 1) / 2.0
    return np.asarray(mid[inverse], dtype=np.float64)


def _check_labels(labels: BoolArray) -> tuple[int, int]:
    """AUC needs both classes; DeLong's variance needs at least two of each."""
    m = int(labels.sum())
    n = int(labels.size - m)
    if m < 2 or n < 2:
        raise ValueError(f"AUC needs at least 2 positives and 2 negatives (got {m} and {n})")
    return m, n


def delong_covariance(scores: FloatArray, labels: BoolArray) -> tuple[FloatArray, FloatArray]:
    """AUCs of k score rows and their k×k DeLong covariance, in O(k·N log N).

    ``scores`` is (k, N); structural components V10 (per positive) and V01 (per negative)
    come from three midrankings per row instead of the O(m·n) pairwise kernel.
    """
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    m, n = _check_labels(labels)
    pos, neg = scores[:, labels], scores[:, ~labels]
    v10 = np.empty((scores.shape[0], m))
    v01 = np.empty((scores.shape[0], n))
    aucs = np.empty(scores.shape[0])
    for r in range(scores.shape[0]):
        tz = midranks(np.concatenate([pos[r], neg[r]]))
        tx, ty = midranks(pos[r]), midranks(neg[r])
        aucs[r] = (tz[:m].sum() - m * (m + 1) / 2.0) / (m * n)
        v10[r] = (tz[:m] - tx) / n
        v01[r] = 1.0 - (tz[m:] - ty) / m
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, cov


def delong_auc(scores: FloatArray, labels: BoolArray, level: float = 0.95) -> AucEstimate:
    """AUC with its DeLong CI for one score vector."""
    aucs, cov = delong_covariance(scores, labels)
    auc, se = float(aucs[0]), float(np.sqrt(max(cov[0, 0], 0.0)))
    z = float(stats.norm.ppf(0.5 + level / 2))
    m = int(labels.sum())
    return AucEstimate(
        auc, se, max(0.0, auc - z * se), min(1.0, auc + z * se), m, int(labels.size - m)
    )


def delong_test(
    scores_a: FloatArray, scores_b: FloatArray, labels: BoolArray, names: tuple[str, str]
) -> DelongComparison:
    """Two-sided test of AUC_a = AUC_b using the covariance of the paired estimates."""
    aucs, cov = delong_covariance(np.vstack([scores_a, scores_b]), labels)
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    diff = float(aucs[0] - aucs[1])
    se = float(np.sqrt(max(var, 0.0)))
    if se > 0:
        z = diff / se
        p = float(2 * stats.norm.sf(abs(z)))
    else:
        z, p = (0.0, 1.0) if diff == 0 else (float("inf"), 0.0)
    return DelongComparison(
        names[0], names[1], float(aucs[0]), float(aucs[1]), diff, se, z, p, int(labels.size)
    )


def _rank_auc(scores: FloatArray, labels: BoolArray) -> float:
    """Mann–Whitney AUC from midranks (ties count one half)."""
    m = int(labels.sum())
    n = labels.size - m
    ranks = midranks(scores)
    return float((ranks[labels].sum() - m * (m + 1) / 2.0) / (m * n))


def bootstrap_auc_ci(
    scores: FloatArray,
    labels: BoolArray,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 20240601,
) -> tuple[float, float]:
    """Percentile CI from a stratified bootstrap (as pROC), so each resample keeps prevalence.

    Seeded so that metrics.json is reproducible run to run.
    """
    _check_labels(labels)
    rng = np.random.default_rng(seed)
    pos, neg = scores[labels], scores[~labels]
    resample_labels = np.concatenate([np.ones(pos.size, bool), np.zeros(neg.size, bool)])
    aucs = np.empty(n_boot)
    for b in range(n_boot):
        sample = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
        aucs[b] = _rank_auc(sample, resample_labels)
    alpha = 1.0 - level
    low, high = np.quantile(aucs, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def roc_curve(scores: FloatArray, labels: BoolArray) -> RocCurve:
    """Empirical ROC: one point per distinct score, calling positive when score ≥ it."""
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    tp, fp = np.cumsum(y), np.cumsum(~y)
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    m, n = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    fpr = np.r_[0.0, fp[last] / n]
    tpr = np.r_[0.0, tp[last] / m]
    thresholds = np.r_[np.inf, s[last]]
    return RocCurve(tuple(fpr.tolist()), tuple(tpr.tolist()), tuple(thresholds.tolist()))


def youden_threshold(curve: RocCurve) -> float:
    """Threshold maximising sensitivity + specificity − 1 (the highest one on ties)."""
    j = np.asarray(curve.tpr[1:]) - np.asarray(curve.fpr[1:])
    return float(curve.thresholds[1 + int(np.argmax(j))])


def _f1(tp: int, fp: int, fn: int) -> float:
    """Harmonic mean of precision and recall; 0 when nothing is called positive and none is."""
    denominator = 2 * tp + fp + fn
    return 0.0 if denominator == 0 else 2 * tp / denominator


def threshold_metrics(
    scores: FloatArray, labels: BoolArray, threshold: float, level: float = 0.95
) -> ThresholdMetrics:
    """Confusion counts and the four clinical proportions at ``threshold``."""
    called = scores >= threshold
    tp = int((called & labels).sum())
    fp = int((called & ~labels).sum())
    tn = int((~called & ~labels).sum())
    fn = int((~called & labels).sum())
    return ThresholdMetrics(
        threshold=float(threshold),
        confusion=ConfusionCounts(tp, fp, tn, fn),
        sensitivity=clopper_pearson(tp, tp + fn, level),
        specificity=clopper_pearson(tn, tn + fp, level),
        ppv=clopper_pearson(tp, tp + fp, level),
        npv=clopper_pearson(tn, tn + fn, level),
        accuracy=clopper_pearson(tp + tn, labels.size, level),
        f1=_f1(tp, fp, fn),
    )


def multiclass_metrics(
    probabilities: FloatArray, truth: IntArray, classes: tuple[str, ...], level: float = 0.95
) -> MulticlassMetrics:
    """One-vs-rest DeLong AUC per class plus arg-max accuracy, macro F1 and confusion."""
    k = len(classes)
    ovr = tuple(delong_auc(probabilities[:, c], truth == c, level) for c in range(k))
    predicted = np.argmax(probabilities, axis=1)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    f1s = [
        _f1(
            int(confusion[c, c]),
            int(confusion[:, c].sum() - confusion[c, c]),
            int(confusion[c, :].sum() - confusion[c, c]),
        )
        for c in range(k)
    ]
    return MulticlassMetrics(
        classes=classes,
        one_vs_rest=ovr,
        macro_auc=float(np.mean([a.auc for a in ovr])),
        accuracy=clopper_pearson(int(np.trace(confusion)), int(truth.size), level),
        macro_f1=float(np.mean(f1s)),
        confusion=tuple(tuple(int(v) for v in row) for row in confusion),
    )
