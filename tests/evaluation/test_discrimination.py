"""Discrimination statistics against independent computations (scikit-learn, scipy, by hand)."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import stats
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve
from sklearn.model_selection import train_test_split

from inference.evaluation import discrimination as disc

Array = NDArray[np.float64]


def _psi(x: Array, y: Array) -> Array:
    """Mann–Whitney kernel for every (positive, negative) pair: 1, ½ on ties, 0."""
    d = x[:, None] - y[None, :]
    kernel: Array = (d > 0).astype(float) + 0.5 * (d == 0)
    return kernel


def slow_delong(scores: Array, labels: NDArray[np.bool_]) -> tuple[Array, Array]:
    """DeLong (1988) as published: O(m·n) structural components, written independently."""
    v10, v01, aucs = [], [], []
    for s in np.atleast_2d(scores):
        k = _psi(s[labels], s[~labels])
        aucs.append(k.mean())
        v10.append(k.mean(axis=1))
        v01.append(k.mean(axis=0))
    m, n = labels.sum(), (~labels).sum()
    s10 = np.atleast_2d(np.cov(np.array(v10), ddof=1))
    s01 = np.atleast_2d(np.cov(np.array(v01), ddof=1))
    return np.array(aucs), s10 / m + s01 / n


@pytest.fixture(scope="module")
def breast_cancer_scores() -> tuple[Array, Array, NDArray[np.bool_]]:
    """Two logistic models on held-out breast-cancer patients (malignant = positive).

    Model A uses two texture/smoothness features, model B one size feature, so both AUCs
    are well below 1 and the two are correlated.
    """
    data = load_breast_cancer(as_frame=True)
    x, y = data.data, data.target.to_numpy() == 0
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.5, random_state=0, stratify=y)
    cols_a, cols_b = ["mean texture", "mean smoothness"], ["mean symmetry"]
    a = LogisticRegression(max_iter=1000).fit(x_tr[cols_a], y_tr).predict_proba(x_te[cols_a])
    b = LogisticRegression(max_iter=1000).fit(x_tr[cols_b], y_tr).predict_proba(x_te[cols_b])
    return a[:, 1], b[:, 1], y_te


def test_auc_matches_sklearn(breast_cancer_scores: tuple[Array, Array, NDArray[np.bool_]]) -> None:
    a, b, y = breast_cancer_scores
    for s in (a, b, np.round(a, 1)):  # the rounded one has many ties
        assert disc.delong_auc(s, y).auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_delong_variance_matches_structural_components(
    breast_cancer_scores: tuple[Array, Array, NDArray[np.bool_]],
) -> None:
    a, b, y = breast_cancer_scores
    for scores in (np.vstack([a, b]), np.vstack([np.round(a, 1), np.round(b, 2)])):
        fast_auc, fast_cov = disc.delong_covariance(scores, y)
        slow_auc, slow_cov = slow_delong(scores, y)
        np.testing.assert_allclose(fast_auc, slow_auc, rtol=0, atol=1e-12)
        np.testing.assert_allclose(fast_cov, slow_cov, rtol=1e-10, atol=0)
    est = disc.delong_auc(a, y)
    se = np.sqrt(slow_delong(a, y)[1][0, 0])
    assert est.se == pytest.approx(se, rel=1e-10)
    assert est.ci_low == pytest.approx(est.auc - 1.959963984540054 * se, rel=1e-9)
    assert est.ci_high == pytest.approx(est.auc + 1.959963984540054 * se, rel=1e-9)
    assert 0.6 < est.auc < 0.9  # a case where the CI is informative, not a ceiling effect


def test_delong_test_two_models(
    breast_cancer_scores: tuple[Array, Array, NDArray[np.bool_]],
) -> None:
    a, b, y = breast_cancer_scores
    result = disc.delong_test(a, b, y, ("A", "B"))
    aucs, cov = slow_delong(np.vstack([a, b]), y)
    z = (aucs[0] - aucs[1]) / np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert result.z == pytest.approx(z, rel=1e-9)
    assert result.p_value == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-9)
    assert result.p_value < 0.05
    same = disc.delong_test(a, a, y, ("A", "A"))
    assert same.p_value == 1.0 and same.difference == 0.0


def test_bootstrap_ci_brackets_auc_and_agrees_with_delong(
    breast_cancer_scores: tuple[Array, Array, NDArray[np.bool_]],
) -> None:
    a, _, y = breast_cancer_scores
    est = disc.delong_auc(a, y)
    low, high = disc.bootstrap_auc_ci(a, y, n_boot=1000)
    assert low < est.auc < high
    assert low == pytest.approx(est.ci_low, abs=0.02)
    assert high == pytest.approx(est.ci_high, abs=0.02)
    assert disc.bootstrap_auc_ci(a, y, n_boot=200) == disc.bootstrap_auc_ci(a, y, n_boot=200)


def test_roc_curve_matches_sklearn(
    breast_cancer_scores: tuple[Array, Array, NDArray[np.bool_]],
) -> None:
    a, _, y = breast_cancer_scores
    s = np.round(a, 2)
    fpr, tpr, thr = sk_roc_curve(y, s, drop_intermediate=False)
    ours = disc.roc_curve(s, y)
    np.testing.assert_allclose(ours.fpr, fpr)
    np.testing.assert_allclose(ours.tpr, tpr)
    np.testing.assert_allclose(ours.thresholds[1:], thr[1:])


@pytest.mark.parametrize(("k", "n"), [(0, 10), (1, 10), (7, 20), (20, 20), (13, 57), (99, 100)])
def test_clopper_pearson_matches_scipy(k: int, n: int) -> None:
    ours = disc.clopper_pearson(k, n)
    ref = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    assert ours.ci_low == pytest.approx(ref.low, abs=1e-12)
    assert ours.ci_high == pytest.approx(ref.high, abs=1e-12)
    assert ours.estimate == k / n


def test_threshold_metrics_by_hand() -> None:
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.55, 0.4, 0.3, 0.2])
    y = np.array([1, 1, 0, 1, 0, 0, 1, 0], dtype=bool)
    t = disc.threshold_metrics(s, y, 0.6)  # called positive: 0.9 0.8 0.7 0.6
    assert (t.confusion.tp, t.confusion.fp, t.confusion.tn, t.confusion.fn) == (3, 1, 3, 1)
    assert t.sensitivity.estimate == 0.75 and t.specificity.estimate == 0.75
    assert t.ppv.estimate == 0.75 and t.npv.estimate == 0.75
    assert t.accuracy.estimate == 0.75 and t.f1 == pytest.approx(0.75)
    # Youden J: 0.8 → 0.5, 0.6 → 0.5, 0.3 → 0.5; ties resolve to the highest threshold
    assert disc.youden_threshold(disc.roc_curve(s, y)) == 0.8


def test_midranks() -> None:
    np.testing.assert_array_equal(
        disc.midranks(np.array([3.0, 1.0, 3.0, 2.0, 3.0])), [4.0, 1.0, 4.0, 2.0, 4.0]
    )


def test_one_vs_rest_matches_sklearn() -> None:
    iris = load_iris()
    x = iris.data[:, [1]]  # sepal width alone: overlapping classes
    p = LogisticRegression(max_iter=1000).fit(x, iris.target).predict_proba(x)
    result = disc.multiclass_metrics(p, iris.target.astype(np.int64), ("a", "b", "c"))
    ref = roc_auc_score(iris.target, p, multi_class="ovr", average=None)
    np.testing.assert_allclose([a.auc for a in result.one_vs_rest], ref, atol=1e-12)
    assert result.macro_auc == pytest.approx(float(np.mean(ref)))
    assert sum(map(sum, result.confusion)) == 150
    assert result.accuracy.estimate == pytest.approx(float(np.mean(p.argmax(1) == iris.target)))
