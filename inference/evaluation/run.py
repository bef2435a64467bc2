"""``evaluate``: predictions + cohort → metrics.json, report.html and a result dict.

One function per analysis, each returning frozen results; this module only sequences them,
records why an analysis was skipped (a note, never a silent gap) and writes the outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inference.evaluation import calibration as cal
from inference.evaluation import discrimination as disc
from inference.evaluation import survival as surv
from inference.evaluation.decision_curve import DecisionCurve, net_benefit
from inference.evaluation.inputs import (
    EvaluationError,
    ModelData,
    detect_label,
    load_cohort,
    load_dropped,
    load_predictions,
    model_data,
    models_in,
    survival_endpoints,
)
from inference.evaluation.report import to_jsonable, write_outputs
from inference.evaluation.robustness import RobustnessRow, robustness_table

__all__ = [
    "Evaluation",
    "ModelEvaluation",
    "ProgressCallback",
    "SurvivalAnalysis",
    "evaluate",
]

ProgressCallback = Callable[[str, int, int], None]
"""Called with (message, steps done, total steps) as the evaluation advances."""

STEPS_PER_MODEL = 4


@dataclass(frozen=True)
class SurvivalAnalysis:
    """One endpoint (OS, PFS, …) split by the model's predicted group."""

    endpoint: str
    time_column: str
    event_column: str
    grouping: str
    curves: tuple[surv.KaplanMeierCurve, ...] = ()
    logrank: surv.LogRank | None = None
    hazard_ratios: surv.CoxResult | None = None
    multivariable: surv.CoxResult | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelEvaluation:
    """Every statistic for one model; fields that do not apply to its kind stay None."""

    model: str
    kind: str  # "binary" or "multiclass"
    n: int
    n_excluded_missing_label: int
    auc: disc.AucEstimate | None = None
    auc_bootstrap_ci: tuple[float, float] | None = None
    roc: disc.RocCurve | None = None
    youden: disc.ThresholdMetrics | None = None
    at_threshold: disc.ThresholdMetrics | None = None
    multiclass: disc.MulticlassMetrics | None = None
    class_roc: tuple[disc.RocCurve, ...] = ()
    brier: float | None = None
    hosmer_lemeshow: cal.HosmerLemeshow | None = None
    spiegelhalter: cal.SpiegelhalterZ | None = None
    calibration_curve: tuple[cal.CalibrationBin, ...] = ()
    decision_curve: DecisionCurve | None = None
    survival: tuple[SurvivalAnalysis, ...] = ()
    robustness: tuple[RobustnessRow, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Evaluation:
    """The whole run: inputs, per-model results and model comparisons."""

    predictions_csv: str
    cohort_csv: str
    label: str
    threshold: float | None
    covariates: tuple[str, ...]
    models: tuple[ModelEvaluation, ...]
    comparisons: tuple[disc.DelongComparison, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
    robustness_method: str = ""
    dropped_predictions_csv: str | None = None


class _Steps:
    """Counts steps for the progress callback (a no-op when none is given)."""

    def __init__(self, total: int, callback: ProgressCallback | None) -> None:
        self.total, self.done, self.callback = total, 0, callback

    def __call__(self, message: str) -> None:
        self.done += 1
        if self.callback is not None:
            self.callback(message, self.done, self.total)


def _is_probability(scores: np.ndarray[Any, Any]) -> bool:
    """Calibration and decision curves only make sense for probabilities."""
    return bool(np.all((scores >= 0) & (scores <= 1)))


def _binary_discrimination(data: ModelData, threshold: float | None) -> dict[str, Any]:
    """ROC, DeLong and bootstrap AUC, Youden and the given threshold."""
    y, s = data.positive, data.scores
    roc = disc.roc_curve(s, y)
    youden = disc.threshold_metrics(s, y, disc.youden_threshold(roc))
    return {
        "auc": disc.delong_auc(s, y),
        "auc_bootstrap_ci": disc.bootstrap_auc_ci(s, y),
        "roc": roc,
        "youden": youden,
        "at_threshold": None if threshold is None else disc.threshold_metrics(s, y, threshold),
    }


def _binary_calibration(data: ModelData) -> tuple[dict[str, Any], list[str]]:
    """Calibration and decision curve, or a note saying why not."""
    s, y = data.scores, data.positive
    if not _is_probability(s):
        return {}, ["scores are not probabilities in [0, 1]: calibration and DCA skipped"]
    return {
        "brier": cal.brier_score(s, y),
        "hosmer_lemeshow": cal.hosmer_lemeshow(s, y),
        "spiegelhalter": cal.spiegelhalter_z(s, y),
        "calibration_curve": cal.calibration_curve(s, y),
        "decision_curve": net_benefit(s, y),
    }, []


def _multiclass(data: ModelData) -> dict[str, Any]:
    """One-vs-rest AUCs and ROC curves, accuracy, F1 and the multi-class Brier score."""
    assert data.classes is not None
    p, t = data.scores, data.truth
    onehot = np.eye(len(data.classes))[t]
    return {
        "multiclass": disc.multiclass_metrics(p, t, data.classes),
        "class_roc": tuple(disc.roc_curve(p[:, c], t == c) for c in range(len(data.classes))),
        "brier": float(np.mean(np.sum((p - onehot) ** 2, axis=1))),
    }


def _predicted_groups(
    data: ModelData, threshold: float | None, youden: disc.ThresholdMetrics | None
) -> tuple[list[str], str, str]:
    """Group names per patient, the reference group and a sentence saying how they were made."""
    if data.classes is not None:
        groups = [data.classes[i] for i in np.argmax(data.scores, axis=1)]
        return groups, data.classes[0], "predicted class (highest probability)"
    cut = threshold if threshold is not None else youden.threshold if youden else 0.5
    high, low = f"score ≥ {cut:.3g}", f"score < {cut:.3g}"
    source = "the given threshold" if threshold is not None else "the Youden threshold"
    groups = [high if v >= cut else low for v in data.scores]
    return groups, low, f"score at {source} ({cut:.3g})"


def _covariate_frame(cohort: pd.DataFrame, covariates: Sequence[str]) -> pd.DataFrame:
    """Numeric covariates as they are; categorical ones as 0/1 columns against the first level."""
    missing = [c for c in covariates if c not in cohort.columns]
    if missing:
        raise EvaluationError(f"covariates {missing} are not in the cohort")
    parts = []
    for c in covariates:
        column = cohort[c]
        if pd.api.types.is_numeric_dtype(column):
            parts.append(column.astype(float).to_frame(c))
        else:
            dummies = pd.get_dummies(column, prefix=c, drop_first=True, dtype=float)
            dummies.loc[column.isna()] = np.nan
            parts.append(dummies)
    return pd.concat(parts, axis=1) if parts else pd.DataFrame(index=cohort.index)


def _survival_one(
    data: ModelData,
    endpoint: tuple[str, str],
    groups: list[str],
    reference: str,
    grouping: str,
    covariates: Sequence[str],
) -> SurvivalAnalysis:
    """KM, log-rank, group HR and the multivariable Cox model for one endpoint."""
    time_col, event_col = endpoint
    frame = _covariate_frame(data.cohort, covariates)
    frame.insert(0, "_group", groups)
    frame["_time"] = pd.to_numeric(data.cohort[time_col], errors="coerce").to_numpy()
    frame["_event"] = pd.to_numeric(data.cohort[event_col], errors="coerce").to_numpy()
    complete = frame.dropna()
    notes = []
    if len(complete) < len(frame):
        notes.append(f"{len(frame) - len(complete)} patients without {time_col}/{event_col}/"
                     "covariates left out")
    t, e = complete["_time"].to_numpy(float), complete["_event"].to_numpy(float)
    g = complete["_group"].tolist()
    name = time_col.removesuffix("_months").upper()
    result = SurvivalAnalysis(name, time_col, event_col, grouping, surv.kaplan_meier(t, e, g))
    return _add_survival_tests(result, complete, g, reference, notes)


def _add_survival_tests(
    result: SurvivalAnalysis, complete: pd.DataFrame, g: list[str], reference: str,
    notes: list[str],
) -> SurvivalAnalysis:
    """Log-rank, HR and Cox; each failure becomes a note instead of stopping the run."""
    t, e = complete["_time"].to_numpy(float), complete["_event"].to_numpy(float)
    values: dict[str, Any] = {}
    try:
        values["logrank"] = surv.logrank(t, e, g)
        values["hazard_ratios"] = surv.group_hazard_ratios(t, e, g, reference)
        dummies = pd.get_dummies(complete["_group"], dtype=float)
        dummies = dummies.drop(columns=[reference], errors="ignore")
        design = pd.concat([dummies, complete.drop(columns=["_group"])], axis=1)
        covs = [c for c in design.columns if c not in ("_time", "_event")]
        values["multivariable"] = surv.fit_cox(design, "_time", "_event", covs)
    except surv.SurvivalFitError as exc:
        notes.append(str(exc))
    return SurvivalAnalysis(**{**result.__dict__, **values, "notes": tuple(notes)})


def _robustness(data: ModelData, dropped: pd.DataFrame | None) -> tuple[RobustnessRow, ...]:
    """The model without each phase, on exactly the patients the full model is judged on."""
    rows = None if dropped is None else dropped[dropped["model"] == data.model]
    if rows is None or rows.empty or not data.binary:
        return ()
    scores, removed = {}, {}
    for name, group in rows.groupby("dropped", sort=False):
        by_patient = dict(zip(group["patient_id"], group["score"], strict=True))
        missing = [p for p in data.patient_ids if p not in by_patient]
        if missing:
            raise EvaluationError(f"model {data.model!r} without {name}: no score for "
                                  f"{len(missing)} patients ({', '.join(missing[:5])})")
        scores[str(name)] = np.array([by_patient[p] for p in data.patient_ids], dtype=float)
        removed[str(name)] = str(group["inputs_removed"].iloc[0]).split(";")
    return robustness_table(data.scores, scores, data.positive, removed)


def _evaluate_model(
    data: ModelData,
    threshold: float | None,
    endpoints: list[tuple[str, str]],
    covariates: Sequence[str],
    step: _Steps,
    dropped: pd.DataFrame | None = None,
) -> ModelEvaluation:
    """All analyses for one model."""
    values: dict[str, Any] = {}
    notes: list[str] = []
    if data.binary:
        values.update(_binary_discrimination(data, threshold))
        values["robustness"] = _robustness(data, dropped)
        step(f"{data.model}: discrimination")
        calibration, notes = _binary_calibration(data)
        values.update(calibration)
    else:
        values.update(_multiclass(data))
        step(f"{data.model}: discrimination")
        notes.append("multi-class model: calibration tests and DCA are for binary scores")
    step(f"{data.model}: calibration and decision curve")
    groups, reference, grouping = _predicted_groups(data, threshold, values.get("youden"))
    values["survival"] = tuple(
        _survival_one(data, ep, groups, reference, grouping, covariates) for ep in endpoints
    )
    step(f"{data.model}: survival")
    kind = "binary" if data.binary else "multiclass"
    return ModelEvaluation(data.model, kind, len(data.patient_ids), data.excluded_missing_label,
                           notes=tuple(notes), **values)


def _compare(
    datasets: dict[str, ModelData], pair: tuple[str, str]
) -> tuple[disc.DelongComparison, ...]:
    """DeLong test on the patients both models scored (per class for multi-class models)."""
    for name in pair:
        if name not in datasets:
            raise EvaluationError(f"--compare: no model {name!r} (models: {list(datasets)})")
    a, b = datasets[pair[0]], datasets[pair[1]]
    if a.classes != b.classes:
        raise EvaluationError("--compare needs two models of the same kind and classes")
    common = sorted(set(a.patient_ids) & set(b.patient_ids))
    if len(common) < 4:
        raise EvaluationError(f"--compare: only {len(common)} patients scored by both models")
    pos_a = {p: i for i, p in enumerate(a.patient_ids)}
    pos_b = {p: i for i, p in enumerate(b.patient_ids)}
    ia, ib = [pos_a[p] for p in common], [pos_b[p] for p in common]
    if a.classes is None:
        return (disc.delong_test(a.scores[ia], b.scores[ib], a.positive[ia], pair),)
    return tuple(
        disc.delong_test(a.scores[ia, c], b.scores[ib, c], a.truth[ia] == c,
                         (f"{pair[0]} [{k}]", f"{pair[1]} [{k}]"))
        for c, k in enumerate(a.classes)
    )


def evaluate(
    predictions_csv: Path | str,
    cohort_csv: Path | str,
    out_dir: Path | str,
    label: str | None = None,
    compare: tuple[str, str] | None = None,
    progress: ProgressCallback | None = None,
    *,
    threshold: float | None = None,
    time_column: str | None = None,
    event_column: str | None = None,
    covariates: Sequence[str] = (),
    model_thresholds: Mapping[str, float] | None = None,
    dropped_predictions: Path | str | None = None,
    robustness_method: str = "",
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """Evaluate every model in ``predictions_csv``; write metrics.json and report.html.

    ``model_thresholds`` overrides ``threshold`` per model (each bundle has its own).
    ``dropped_predictions`` (patient_id, model, dropped, inputs_removed, score) holds the
    scores with a phase removed, made as ``robustness_method`` says; ``notes`` are shown at
    the top of the report (patients a run could not score, for instance).
    Returns the metrics.json content. Raises EvaluationError for inputs that cannot be used.
    """
    predictions = load_predictions(Path(predictions_csv))
    dropped = None if dropped_predictions is None else load_dropped(Path(dropped_predictions))
    per_model = dict(model_thresholds or {})
    cohort = load_cohort(Path(cohort_csv))
    label = detect_label(cohort, label)
    endpoints = survival_endpoints(cohort, time_column, event_column)
    names = models_in(predictions)
    step = _Steps(STEPS_PER_MODEL * len(names) + 3, progress)
    step("inputs read")
    datasets = {}
    for name in names:
        datasets[name] = model_data(predictions, cohort, name, label)
        step(f"{name}: {len(datasets[name].patient_ids)} patients matched")
    models = tuple(_evaluate_model(datasets[n], per_model.get(n, threshold), endpoints,
                                   covariates, step, dropped) for n in names)
    comparisons = _compare(datasets, compare) if compare else ()
    step("comparisons")
    evaluation = Evaluation(str(predictions_csv), str(cohort_csv), label, threshold,
                            tuple(covariates), models, comparisons, tuple(notes),
                            robustness_method,
                            None if dropped_predictions is None else str(dropped_predictions))
    write_outputs(evaluation, Path(out_dir))
    step("report written")
    return to_jsonable(evaluation)
