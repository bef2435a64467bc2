"""Serving of response bundles: input vector, probability, class and feature contributions.

A response bundle's ``inputs.features`` lists the model's input columns in order, each one of:
``clinical:<variable>`` (a number), ``clinical:<variable>=<level>`` (1 when the variable
equals the level, else 0: how a categorical such as AFP response enters), ``score:<bundle>``
(the log-odds another response bundle gave for this study: how a nomogram takes radiomics
scores) or a radiomics feature name (``<phase>_<region>_<pyradiomics name>``).

Contributions are occlusion effects in log-odds: the model's log-odds minus its log-odds with
that one input set to its training mean (``explain.baseline``). For a logistic model this is
exactly coefficient x (value - mean), the additive decomposition a nomogram draws; for other
families it is a documented approximation of SHAP that needs only the ONNX model at run time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from inference.bundle import Bundle
from inference.runtime import Session

__all__ = [
    "ClinicalValue",
    "MissingInputs",
    "ResponsePrediction",
    "build_vector",
    "clinical_variables",
    "predict",
    "score_names",
]

ClinicalValue = str | int | float | bool | None
CLINICAL = "clinical:"
SCORE = "score:"


class MissingInputs(LookupError):
    """The study lacks inputs a bundle needs; ``missing`` names them."""

    def __init__(self, missing: Sequence[str]) -> None:
        super().__init__("missing inputs: " + ", ".join(missing))
        self.missing = tuple(missing)


@dataclass(frozen=True)
class ResponsePrediction:
    """One bundle's output for one study."""

    probability: float
    log_odds: float
    positive: bool
    threshold: float
    label: str
    inputs: dict[str, float]
    contributions: tuple[tuple[str, float], ...]


def clinical_variables(bundle: Bundle) -> tuple[str, ...]:
    """Clinical variables the bundle reads (from its features, else ``inputs.clinical``)."""
    names = [f[len(CLINICAL):].split("=", 1)[0] for f in bundle.inputs.features
             if f.startswith(CLINICAL)]
    return tuple(dict.fromkeys([*bundle.inputs.clinical, *names]))


def score_names(bundle: Bundle) -> tuple[str, ...]:
    """Bundles whose score this one takes as an input."""
    return tuple(f[len(SCORE):] for f in bundle.inputs.features if f.startswith(SCORE))


def _value(name: str, radiomics: Mapping[str, float], clinical: Mapping[str, ClinicalValue],
           scores: Mapping[str, float]) -> float | None:
    if name.startswith(SCORE):
        return scores.get(name[len(SCORE):])
    if name.startswith(CLINICAL):
        variable, _, level = name[len(CLINICAL):].partition("=")
        raw = clinical.get(variable)
        if raw is None or raw == "":
            return None
        if level:
            return 1.0 if str(raw).strip().lower() == level.lower() else 0.0
        try:
            number = float(raw)
        except (TypeError, ValueError):
            return None
        return number if math.isfinite(number) else None
    value = radiomics.get(name)
    return None if value is None or not math.isfinite(value) else float(value)


def build_vector(bundle: Bundle, radiomics: Mapping[str, float],
                 clinical: Mapping[str, ClinicalValue], scores: Mapping[str, float]
                 ) -> dict[str, float]:
    """The model's inputs by name, in order; ``MissingInputs`` names every absent one."""
    values = {name: _value(name, radiomics, clinical, scores) for name in bundle.inputs.features}
    missing = [name for name, value in values.items() if value is None]
    if missing:
        raise MissingInputs(missing)
    return {name: float(value) for name, value in values.items() if value is not None}


def _log_odds(p: float) -> float:
    q = min(max(p, 1e-7), 1 - 1e-7)
    return math.log(q / (1 - q))


def predict(bundle: Bundle, session: Session, vector: Mapping[str, float],
            top: int = 10) -> ResponsePrediction:
    """Probability of the bundle's positive class (its last output label) and contributions.

    One batch holds the row and its occluded copies, so explaining costs one model call.
    """
    names = list(bundle.inputs.features)
    row = np.array([vector[n] for n in names], dtype=np.float32)
    baseline = bundle.baseline or tuple(float(v) for v in row)
    batch = np.repeat(row[None, :], len(names) + 1, axis=0)
    for j in range(len(names)):
        batch[j + 1, j] = baseline[j]
    probabilities = np.asarray(session.run(batch), dtype=np.float64)[:, -1]
    log_odds = [_log_odds(float(p)) for p in probabilities]
    contributions = sorted(((n, log_odds[0] - log_odds[j + 1]) for j, n in enumerate(names)),
                           key=lambda item: -abs(item[1]))[:top]
    threshold = bundle.threshold("probability", 0.5)
    probability = float(probabilities[0])
    return ResponsePrediction(probability, log_odds[0], probability >= threshold, threshold,
                              bundle.outputs[-1], dict(vector), tuple(contributions))
