"""Cohort scoring, written once: every bundle's radiomics for a cohort, and served
predictions per patient (ONNX Runtime through ``inference.response.predict``, as a node
runs them). Training reports held-out AUCs with it and ``evaluate --run`` scores with it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from inference.bundle import Bundle
from inference.response import (
    ClinicalValue,
    MissingInputs,
    ResponsePrediction,
    build_vector,
    predict,
    score_names,
)
from inference.runtime import Session, create_session
from plugin.research.radiomics_cohort import FeatureSpec, cohort_features

Progress = Callable[[str, int, int], None]
ALL = "*"  # in a set of dropped phases: every image input


def image_features(bundle: Bundle) -> tuple[str, ...]:
    """Radiomics inputs: every feature that is neither clinical: nor score:."""
    return tuple(f for f in bundle.inputs.features if ":" not in f)


def phase_of(feature: str, phases: Sequence[str]) -> str | None:
    """``AP`` for ``AP_tumour_original_...``; None when the name starts with no phase."""
    return next((p for p in phases if feature.startswith(f"{p}_")), None)


def bundle_cohort_features(cohort_dir: Path, bundles: Sequence[Bundle], workers: int,
                           phantom_seed: int, progress: Progress | None
                           ) -> dict[str, dict[str, float]]:
    """Every bundle's radiomics for every patient of a phantom cohort (cached per spec)."""
    merged: dict[str, dict[str, float]] = {}
    for bundle in bundles:
        if not image_features(bundle):
            continue
        spec = FeatureSpec.for_bundle(bundle, phantom_seed)
        features, _ = cohort_features(cohort_dir, spec, 0, workers, progress)
        for pid, values in features.items():
            merged.setdefault(pid, {}).update(values)
    return merged


class Scorer:
    """Served predictions per (bundle, patient, dropped phases), each computed once."""

    def __init__(self, library: Mapping[str, Bundle], rows: Mapping[str, Mapping[str, str]],
                 features: Mapping[str, Mapping[str, float]],
                 scores: Mapping[str, Mapping[str, float]] | None = None) -> None:
        self.library, self.rows, self.features = library, rows, features
        self.given = scores or {}
        """Log-odds of score bundles known in advance (e.g. out-of-fold), by patient."""
        self.sessions: dict[str, Session] = {}
        self.memo: dict[tuple[str, str, frozenset[str]], ResponsePrediction] = {}

    def predict(self, bundle: Bundle, pid: str, dropped: frozenset[str] = frozenset()
                ) -> ResponsePrediction:
        """P(positive); ``MissingInputs`` when the patient lacks an input."""
        key = (bundle.name, pid, dropped)
        if key not in self.memo:
            vector = self._vector(bundle, pid, dropped)
            self.memo[key] = predict(bundle, self._session(bundle), vector, top=0)
        return self.memo[key]

    def _session(self, bundle: Bundle) -> Session:
        if bundle.name not in self.sessions:
            self.sessions[bundle.name] = create_session(bundle.model_file,
                                                        providers=["CPUExecutionProvider"])
        return self.sessions[bundle.name]

    def _vector(self, bundle: Bundle, pid: str, dropped: frozenset[str]) -> dict[str, float]:
        scores = {}
        for name in score_names(bundle):
            if name in self.given.get(pid, {}):
                scores[name] = self.given[pid][name]
                continue
            try:
                scores[name] = self.predict(self.library[name], pid, dropped).log_odds
            except MissingInputs as exc:
                lacks = ", ".join(exc.missing)
                raise MissingInputs([f"score:{name}, which lacks {lacks}"]) from exc
        if image_features(bundle) and pid not in self.features:
            raise MissingInputs(["radiomics features (the patient has no feature row)"])
        clinical: Mapping[str, ClinicalValue] = self.rows.get(pid, {})
        vector = build_vector(bundle, self.features.get(pid, {}), clinical, scores)
        return _ablate(bundle, vector, dropped) if dropped else vector


def _ablate(bundle: Bundle, vector: dict[str, float], dropped: frozenset[str]
            ) -> dict[str, float]:
    """The dropped phases' radiomics set to their training means (``explain.baseline``)."""
    if not image_features(bundle):
        return vector
    if not bundle.baseline:
        raise MissingInputs([f"training means of {bundle.name} (no explain.baseline)"])
    out = dict(vector)
    for name, mean in zip(bundle.inputs.features, bundle.baseline, strict=True):
        if ":" not in name and (ALL in dropped
                                or phase_of(name, bundle.inputs.phases) in dropped):
            out[name] = mean
    return out


def score_rows(bundle: Bundle, rows: Sequence[Mapping[str, str]],
               features: Mapping[str, Mapping[str, float]],
               scores: Mapping[str, Mapping[str, float]] | None = None
               ) -> npt.NDArray[np.float64]:
    """P(positive) of each row through the served path; ``scores`` are the log-odds of the
    bundle's score inputs per patient."""
    scorer = Scorer({bundle.name: bundle}, {r["patient_id"]: r for r in rows}, features, scores)
    return np.array([scorer.predict(bundle, r["patient_id"]).probability for r in rows])
