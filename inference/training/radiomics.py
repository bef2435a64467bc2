"""Radiomics response models (seeds 002, 003) and the clinical-radiomics nomogram (seed 001).

The recipe of seed 003: reproducible features (ICC >= 0.90 across perturbed masks), then
correlation pruning and a cross-validated LASSO down to a handful, then ten classifiers
compared by 5-fold cross-validation. The best by mean fold ROC AUC (stated in the bundle) is
refitted on all rows and exported to ONNX with its scaler, so one runtime serves every family.

Families (scikit-learn unless noted): ``logistic``, ``svm`` (RBF, Platt-calibrated by 5-fold CV),
``naive_bayes`` (Gaussian), ``decision_tree`` (CART), ``ctree_like``, ``random_forest``,
``knn``, ``mlp``, ``boosting`` (gradient boosting), ``bagging`` (bagged CART), and
``xgboost`` (XGBoost, exported by onnxmltools).

``ctree_like`` stands in for R's conditional-inference tree (party::ctree), which scikit-learn
lacks: ctree splits only where a permutation test says a variable is associated with the
outcome and stops otherwise, so it neither overfits nor favours many-valued variables. The
nearest scikit-learn tree is a CART with entropy splits, ctree's default minimum node sizes
(20 to split, 7 per leaf) and cost-complexity pruning as the statistical stop; it does not
correct variable selection for multiple testing.

Tree families get no scaler: float32 ONNX and float64 scikit-learn could otherwise land on
opposite sides of a split threshold. Training data are cast to float32 for the same reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import (
    BaggingClassifier,
    GradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import StratifiedKFold
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

__all__ = [
    "FAMILIES",
    "CvResult",
    "correlation_prune",
    "cross_validate",
    "export_onnx",
    "lasso_select",
    "make_pipeline",
    "onnx_probabilities",
    "select_features",
    "youden_threshold",
]

Progress = Callable[[str, int, int], None]
LINEAR_FAMILIES = ("logistic",)


def _xgboost(seed: int) -> Any:
    from xgboost import XGBClassifier
    return XGBClassifier(n_estimators=100, max_depth=2, learning_rate=0.1, subsample=0.8,
                         random_state=seed, n_jobs=1, eval_metric="logloss")


def _scaled(model: Any) -> Pipeline:
    return Pipeline([("scale", StandardScaler()), ("model", model)])


def _bare(model: Any) -> Pipeline:
    return Pipeline([("model", model)])


FAMILIES: dict[str, Callable[[int], Pipeline]] = {
    "logistic": lambda s: _scaled(LogisticRegression(C=1.0, max_iter=2000)),
    "svm": lambda s: _scaled(CalibratedClassifierCV(SVC(kernel="rbf", C=1.0), method="sigmoid",
                                                    cv=5, ensemble=False)),
    "naive_bayes": lambda s: _scaled(GaussianNB()),
    "decision_tree": lambda s: _bare(DecisionTreeClassifier(max_depth=4, min_samples_leaf=5,
                                                            random_state=s)),
    "ctree_like": lambda s: _bare(DecisionTreeClassifier(
        criterion="entropy", min_samples_split=20, min_samples_leaf=7, ccp_alpha=0.01,
        random_state=s)),
    "random_forest": lambda s: _bare(RandomForestClassifier(
        n_estimators=100, max_depth=4, min_samples_leaf=3, random_state=s, n_jobs=1)),
    "knn": lambda s: _scaled(KNeighborsClassifier(n_neighbors=15)),
    "mlp": lambda s: _scaled(MLPClassifier(hidden_layer_sizes=(16,), alpha=1e-2,
                                           max_iter=3000, random_state=s)),
    "boosting": lambda s: _bare(GradientBoostingClassifier(
        n_estimators=100, max_depth=2, learning_rate=0.05, random_state=s)),
    "bagging": lambda s: _bare(BaggingClassifier(
        DecisionTreeClassifier(max_depth=4), n_estimators=50, random_state=s)),
    "xgboost": lambda s: _bare(_xgboost(s)),
}
"""Family name -> a fresh, unfitted pipeline for a seed."""


def make_pipeline(family: str, seed: int = 0) -> Pipeline:
    """A fresh pipeline of ``family``; ``KeyError`` lists the known ones."""
    if family not in FAMILIES:
        raise KeyError(f"unknown classifier family {family!r}; choose from {sorted(FAMILIES)}")
    return FAMILIES[family](seed)


# ---------------------------------------------------------------- feature selection


def correlation_prune(x: np.ndarray, y: np.ndarray, names: Sequence[str],
                      threshold: float = 0.9) -> list[str]:
    """Greedy: keep features by falling univariate AUC, skip any |r| > threshold to a kept one.

    Why univariate AUC first: of two redundant features the more predictive should survive.
    """
    strength = np.array([abs(_auc(y, x[:, j]) - 0.5) for j in range(x.shape[1])])
    corr = np.nan_to_num(np.corrcoef(x, rowvar=False))
    kept: list[int] = []
    for j in np.argsort(-strength):
        if all(abs(corr[j, k]) <= threshold for k in kept):
            kept.append(int(j))
    return [names[j] for j in kept]


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    if np.ptp(score) == 0:
        return 0.5
    return float(roc_auc_score(y, score))


def lasso_select(x: np.ndarray, y: np.ndarray, names: Sequence[str], max_features: int = 10,
                 seed: int = 0) -> list[str]:
    """L1 logistic regression with its penalty chosen by 5-fold CV; the largest |coef| kept."""
    scaled = StandardScaler().fit_transform(x)
    lasso = LogisticRegressionCV(Cs=20, cv=StratifiedKFold(5, shuffle=True, random_state=seed),
                                 penalty="l1", solver="liblinear", scoring="roc_auc",
                                 max_iter=5000).fit(scaled, y)
    coef = np.abs(lasso.coef_[0])
    order = [int(j) for j in np.argsort(-coef) if coef[j] > 0][:max_features]
    if not order:  # a flat LASSO: fall back to the strongest univariate feature
        order = [int(np.argmax([abs(_auc(y, x[:, j]) - 0.5) for j in range(x.shape[1])]))]
    return [names[j] for j in order]


def select_features(x: np.ndarray, y: np.ndarray, names: Sequence[str],
                    max_features: int = 10, corr_threshold: float = 0.9,
                    seed: int = 0) -> list[str]:
    """Constant features out, correlation pruning, then LASSO."""
    varying = [j for j in range(x.shape[1]) if np.std(x[:, j]) > 1e-12]
    x, names = x[:, varying], [names[j] for j in varying]
    pruned = correlation_prune(x, y, names, corr_threshold)
    idx = [names.index(n) for n in pruned]
    return lasso_select(x[:, idx], y, pruned, max_features, seed)


# ---------------------------------------------------------------- cross-validation


@dataclass
class CvResult:
    """Out-of-fold predictions and metrics of one family (means over the folds)."""

    family: str
    fold_auc: list[float]
    oof: np.ndarray
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def auc(self) -> float:
        return float(np.mean(self.fold_auc))


def youden_threshold(y: np.ndarray, probability: np.ndarray) -> float:
    """The probability threshold maximising sensitivity + specificity - 1."""
    fpr, tpr, thresholds = roc_curve(y, probability)
    best = int(np.argmax(tpr - fpr))
    return float(min(max(thresholds[best], 0.0), 1.0))


def _metrics(y: np.ndarray, probability: np.ndarray, threshold: float) -> dict[str, float]:
    predicted = probability >= threshold
    tp = float(np.sum(predicted & (y == 1)))
    tn = float(np.sum(~predicted & (y == 0)))
    fp = float(np.sum(predicted & (y == 0)))
    fn = float(np.sum(~predicted & (y == 1)))
    sens = tp / max(tp + fn, 1.0)
    prec = tp / max(tp + fp, 1.0)
    return {"auc_oof": round(_auc(y, probability), 4), "threshold": round(threshold, 4),
            "sensitivity": round(sens, 4), "specificity": round(tn / max(tn + fp, 1.0), 4),
            "precision": round(prec, 4), "accuracy": round((tp + tn) / len(y), 4),
            "f1": round(2 * prec * sens / max(prec + sens, 1e-12), 4)}


def cross_validate(x: np.ndarray, y: np.ndarray, families: Sequence[str], folds: int = 5,
                   seed: int = 0, progress: Progress | None = None) -> list[CvResult]:
    """Stratified k-fold CV of each family on the same folds; best first by mean fold AUC."""
    x = np.asarray(x, np.float32)
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y))
    results = []
    for done, family in enumerate(families, start=1):
        oof = np.zeros(len(y))
        aucs = []
        for train, test in splits:
            model = make_pipeline(family, seed).fit(x[train], y[train])
            oof[test] = model.predict_proba(x[test])[:, 1]
            aucs.append(_auc(y[test], oof[test]))
        result = CvResult(family, aucs, oof)
        result.metrics = {"auc_cv_mean": round(result.auc, 4),
                          "auc_cv_sd": round(float(np.std(aucs)), 4),
                          **_metrics(y, oof, youden_threshold(y, oof))}
        results.append(result)
        if progress:
            progress(f"cross-validated {family}", done, len(families))
    return sorted(results, key=lambda r: -r.auc)


# ---------------------------------------------------------------- ONNX


def _register_xgboost() -> None:
    """Teach skl2onnx to convert XGBClassifier inside a Pipeline (onnxmltools' converter)."""
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import calculate_linear_classifier_output_shapes
    from xgboost import XGBClassifier
    update_registered_converter(
        XGBClassifier, "XGBoostXGBClassifier", calculate_linear_classifier_output_shapes,
        convert_xgboost, options={"nocl": [True, False], "zipmap": [True, False, "columns"]})


def export_onnx(pipeline: Pipeline, n_features: int, path: Path) -> Path:
    """Write ``pipeline`` as ONNX with one input ``features`` [N, F] float32 and one output,
    the class probabilities [N, 2] (the label output is dropped: serving needs only these)."""
    import onnx
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    _register_xgboost()
    model = pipeline.steps[-1][1]
    proto = convert_sklearn(pipeline, initial_types=[("features", FloatTensorType([None,
                                                                                 n_features]))],
                            options={id(model): {"zipmap": False}},
                            target_opset={"": 17, "ai.onnx.ml": 3})
    outputs = [o for o in proto.graph.output if "prob" in o.name]
    del proto.graph.output[:]
    proto.graph.output.extend(outputs[:1])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return path


def onnx_probabilities(path: Path, x: np.ndarray) -> np.ndarray:
    """P(positive) from an exported model through ONNX Runtime (as serving runs it)."""
    import onnxruntime as ort
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.asarray(x, np.float32)}
    return np.asarray(session.run(None, feed)[0])[:, 1]


def logit(p: float) -> float:
    """log-odds of a probability, clipped so that 0 and 1 stay finite."""
    q = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(q / (1 - q))


def column_means(x: np.ndarray) -> list[float]:
    """Training means: the baseline against which contributions are measured."""
    return [float(v) for v in np.asarray(x, np.float64).mean(axis=0)]


def design(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> np.ndarray:
    """Rows of named values as a float32 matrix in ``columns`` order."""
    return np.array([[float(r[c]) for c in columns] for r in rows], dtype=np.float32)


def clone_fit(pipeline: Pipeline, x: np.ndarray, y: np.ndarray) -> Pipeline:
    """A refit on all rows (the CV copies are discarded)."""
    return clone(pipeline).fit(np.asarray(x, np.float32), y)
