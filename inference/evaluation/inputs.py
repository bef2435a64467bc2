"""Reading and checking the predictions and cohort tables.

Errors here are the user's first contact with ``hepatica evaluate``: each says which file,
which column or which patients, so that a site can fix its CSV without reading code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from inference.evaluation.discrimination import BoolArray, FloatArray, IntArray

__all__ = [
    "KNOWN_LABELS",
    "EvaluationError",
    "ModelData",
    "detect_label",
    "load_cohort",
    "load_dropped",
    "load_predictions",
    "model_data",
    "models_in",
    "survival_endpoints",
]

KNOWN_LABELS = ("dcb", "orr", "pd", "dc", "response", "label", "risk_class")
PROB_PREFIX = "p_"


class EvaluationError(ValueError):
    """The inputs cannot be evaluated as given; the message says what to fix."""


@dataclass(frozen=True)
class ModelData:
    """One model's predictions joined to the cohort, patients with a known label only.

    Binary: ``scores`` is (n,), ``truth`` is 0/1. Multi-class: ``scores`` is (n, k) class
    probabilities in ``classes`` order and ``truth`` indexes ``classes``.
    """

    model: str
    patient_ids: tuple[str, ...]
    scores: FloatArray
    truth: IntArray
    classes: tuple[str, ...] | None
    cohort: pd.DataFrame  # cohort rows aligned with patient_ids
    excluded_missing_label: int

    @property
    def binary(self) -> bool:
        """True for a single score per patient."""
        return self.classes is None

    @property
    def positive(self) -> BoolArray:
        """Binary truth as booleans."""
        return np.asarray(self.truth == 1)


def _read_csv(path: Path, what: str) -> pd.DataFrame:
    """Read with patient_id as text (leading zeros matter in hospital identifiers)."""
    if not path.is_file():
        raise EvaluationError(f"{what} file not found: {path}")
    try:
        frame = pd.read_csv(path, dtype={"patient_id": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"{what} file {path} is not a readable CSV: {exc}") from exc
    if "patient_id" not in frame.columns:
        raise EvaluationError(
            f"{what} file {path} has no 'patient_id' column (columns: {list(frame.columns)})"
        )
    frame["patient_id"] = frame["patient_id"].str.strip()
    return frame


def load_predictions(path: Path) -> pd.DataFrame:
    """Predictions: patient_id, model and either score or p_<class> columns."""
    frame = _read_csv(path, "predictions")
    if "model" not in frame.columns:
        raise EvaluationError(f"predictions file {path} has no 'model' column")
    frame["model"] = frame["model"].astype(str)
    prob = [c for c in frame.columns if c.startswith(PROB_PREFIX)]
    if "score" not in frame.columns and len(prob) < 2:
        raise EvaluationError(
            f"predictions file {path} needs a 'score' column (binary) or two or more "
            f"'p_<class>' columns (multi-class); it has {list(frame.columns)}"
        )
    duplicated = frame.duplicated(["patient_id", "model"])
    if duplicated.any():
        first = frame.loc[duplicated, ["patient_id", "model"]].iloc[0].tolist()
        raise EvaluationError(f"predictions file {path} repeats patient/model {first}")
    return frame


DROPPED_COLUMNS = ("model", "dropped", "inputs_removed", "score")


def load_dropped(path: Path) -> pd.DataFrame:
    """Scores with a phase removed: patient_id, model, dropped, inputs_removed, score."""
    frame = _read_csv(path, "dropped-phase predictions")
    absent = [c for c in DROPPED_COLUMNS if c not in frame.columns]
    if absent:
        raise EvaluationError(f"dropped-phase predictions file {path} lacks columns {absent}")
    frame["model"] = frame["model"].astype(str)
    frame["dropped"] = frame["dropped"].astype(str)
    frame["inputs_removed"] = frame["inputs_removed"].fillna("").astype(str)
    frame["score"] = pd.to_numeric(frame["score"], errors="coerce")
    if frame["score"].isna().any():
        raise EvaluationError(f"dropped-phase predictions file {path} has missing scores")
    return frame


def load_cohort(path: Path) -> pd.DataFrame:
    """Cohort: one row per patient with outcomes and covariates."""
    frame = _read_csv(path, "cohort")
    if frame["patient_id"].duplicated().any():
        dup = frame.loc[frame["patient_id"].duplicated(), "patient_id"].iloc[0]
        raise EvaluationError(f"cohort file {path} lists patient {dup!r} more than once")
    return frame.set_index("patient_id")


def detect_label(cohort: pd.DataFrame, label: str | None) -> str:
    """The given label column, or the single well-known one the cohort has."""
    if label is not None:
        if label not in cohort.columns:
            raise EvaluationError(
                f"label column {label!r} is not in the cohort (columns: {list(cohort.columns)})"
            )
        return label
    found = [c for c in KNOWN_LABELS if c in cohort.columns]
    if len(found) != 1:
        raise EvaluationError(
            f"say which cohort column is the outcome with --label (candidates found: {found})"
        )
    return found[0]


def survival_endpoints(
    cohort: pd.DataFrame, time_column: str | None, event_column: str | None
) -> list[tuple[str, str]]:
    """Explicit (time, event) columns, or every <x>_months/<x>_event pair in the cohort."""
    if (time_column is None) != (event_column is None):
        raise EvaluationError("give both --time-column and --event-column, or neither")
    if time_column is not None and event_column is not None:
        for column in (time_column, event_column):
            if column not in cohort.columns:
                raise EvaluationError(f"survival column {column!r} is not in the cohort")
        return [(time_column, event_column)]
    pairs = []
    for column in cohort.columns:
        if column.endswith("_months") and f"{column[:-7]}_event" in cohort.columns:
            pairs.append((column, f"{column[:-7]}_event"))
    return pairs


def _check_matched(pred: pd.DataFrame, cohort: pd.DataFrame, model: str) -> None:
    """Every predicted patient must be in the cohort: a mismatch usually means wrong IDs."""
    missing = sorted(set(pred["patient_id"]) - set(cohort.index))
    if missing:
        shown = ", ".join(missing[:5]) + (" …" if len(missing) > 5 else "")
        raise EvaluationError(
            f"model {model!r}: {len(missing)} of {len(pred)} predicted patients are not in "
            f"the cohort ({shown}); check that both files use the same patient_id"
        )


def _binary_truth(values: pd.Series, label: str) -> IntArray:
    """0/1 (or true/false) outcome; anything else is an error naming the values."""
    mapped = values.map(
        lambda v: {"1": 1, "0": 0, "true": 1, "false": 0, "1.0": 1, "0.0": 0}.get(
            str(v).strip().lower(), -1
        )
    )
    if (mapped < 0).any():
        bad = sorted({str(v) for v in values[mapped < 0]})[:5]
        raise EvaluationError(f"label {label!r} must be 0/1 for a binary score; found {bad}")
    truth: IntArray = mapped.to_numpy(dtype=np.int64)
    if truth.min() == truth.max():
        raise EvaluationError(
            f"label {label!r} has a single class ({truth[0]}) among the matched patients: "
            "discrimination needs both outcomes"
        )
    return truth


def _class_truth(values: pd.Series, classes: tuple[str, ...], label: str) -> IntArray:
    """Index of each patient's class among the p_<class> columns."""
    text = values.map(lambda v: str(v).strip())
    unknown = sorted(set(text) - set(classes))
    if unknown:
        raise EvaluationError(
            f"label {label!r} has values {unknown[:5]} with no p_<class> column "
            f"(classes: {list(classes)})"
        )
    truth: IntArray = text.map({c: i for i, c in enumerate(classes)}).to_numpy(dtype=np.int64)
    if np.unique(truth).size < 2:
        raise EvaluationError(f"label {label!r} has a single class among the matched patients")
    return truth


def _score_matrix(pred: pd.DataFrame, model: str) -> tuple[FloatArray, tuple[str, ...] | None]:
    """The model's scores (binary) or class-probability matrix (multi-class)."""
    prob = [c for c in pred.columns if c.startswith(PROB_PREFIX) and pred[c].notna().any()]
    if "score" in pred.columns and pred["score"].notna().all():
        columns, classes = ["score"], None
    elif len(prob) >= 2:
        columns, classes = prob, tuple(c[len(PROB_PREFIX) :] for c in prob)
    else:
        raise EvaluationError(f"model {model!r} has missing scores")
    values = pred[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        raise EvaluationError(f"model {model!r} has missing or non-numeric scores")
    return (values[:, 0] if classes is None else values), classes


def model_data(pred: pd.DataFrame, cohort: pd.DataFrame, model: str, label: str) -> ModelData:
    """Join one model's predictions to the cohort and build the outcome vector."""
    rows = pred[pred["model"] == model]
    _check_matched(rows, cohort, model)
    joined = cohort.loc[rows["patient_id"].to_list()]
    known = joined[label].notna().to_numpy()
    rows, joined = rows[known], joined[known]
    scores, classes = _score_matrix(rows, model)
    truth = (
        _binary_truth(joined[label], label)
        if classes is None
        else _class_truth(joined[label], classes, label)
    )
    return ModelData(
        model=model,
        patient_ids=tuple(rows["patient_id"]),
        scores=scores,
        truth=truth,
        classes=classes,
        cohort=joined,
        excluded_missing_label=int((~known).sum()),
    )


def models_in(pred: pd.DataFrame) -> Sequence[str]:
    """Models in file order."""
    return list(dict.fromkeys(pred["model"]))
