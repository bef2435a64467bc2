"""Pipeline step: every installed response bundle whose inputs the study satisfies.

Bundles that take another bundle's score (a nomogram over the radiomics score) run after it.
Bundles sharing a ``group`` are variants of one model (seed 001's nomogram with and without
AFP response): the satisfied variant with the most inputs is served, the others say why not.
A bundle that cannot run records the reason, which the SR carries - a study without clinical
variables still gets its radiomics-only prediction, and the SR says what the nomogram lacked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from dicom_io.phases import PhaseRules
from dicom_io.selection import LabelledSeries, NoUsableSeries, SelectedVolume, select_volume
from dicom_io.volume import Volume, resample_like
from export.sr.response_models import response_model_groups, response_model_notes
from inference.bundle import Bundle
from inference.deep_response import is_image_bundle
from inference.radiomics import FeatureCache, extract_all, make_tasks, settings_path
from inference.response import (
    MissingInputs,
    ResponsePrediction,
    build_vector,
    clinical_variables,
    predict,
    score_names,
)
from inference.runtime import create_session
from plugin.pipeline.clinical import ClinicalInputs, gather_clinical
from plugin.pipeline.context import StudyContext
from plugin.pipeline.image_models import run_image_bundle
from plugin.pipeline.models import installed_bundles

__all__ = ["PredictionInputs", "ResponseOutcome", "ResponseSettings", "predict_step",
           "run_response_models"]

log = logging.getLogger(__name__)
RESPONSE_FAMILY = "response"


@dataclass(frozen=True)
class ResponseSettings:
    """Where clinical inputs and the feature cache live; ``data_dir`` None: none of them."""

    data_dir: Path | None = None
    workers: int = 2

    @property
    def clinical_folder(self) -> Path | None:
        return None if self.data_dir is None else self.data_dir / "clinical"

    @property
    def store(self) -> Path | None:
        return None if self.data_dir is None else self.data_dir / "orthanc.sqlite3"

    @property
    def cache_dir(self) -> Path | None:
        return None if self.data_dir is None else self.data_dir / "radiomics-cache"


@dataclass(frozen=True)
class PredictionInputs:
    """What the step reads of a study: its series, the reference grid and the masks."""

    study_uid: str
    patient_id: str
    labelled: Sequence[LabelledSeries]
    reference: Volume
    organ: npt.NDArray[np.bool_]
    lesion_labels: npt.NDArray[Any] | None
    modality: str = ""
    rules: PhaseRules | None = None
    lesion_diameter_mm: float | None = None
    """Longest diameter of lesion 1 (image bundles that zoom to the lesion read it)."""


@dataclass(frozen=True)
class ResponseOutcome:
    """One bundle's result for the study: a prediction, or the reason there is none."""

    name: str
    version: str
    group: str
    prediction: ResponsePrediction | None
    reason: str
    inputs_used: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    explanation: Any = field(default=None, compare=False, repr=False)
    """Image bundles: the ``plugin.pipeline.image_models.ImageExplanation`` to draw."""

    @property
    def probability(self) -> float | None:
        return None if self.prediction is None else self.prediction.probability

    @property
    def threshold(self) -> float:
        return 0.5 if self.prediction is None else self.prediction.threshold

    @property
    def label(self) -> str:
        return "" if self.prediction is None else self.prediction.label

    @property
    def contributions(self) -> tuple[tuple[str, float], ...]:
        return () if self.prediction is None else self.prediction.contributions

    def summary(self) -> dict[str, Any]:
        """JSON for summary.json."""
        p = self.prediction
        return {"name": self.name, "version": self.version, "group": self.group,
                "reason": self.reason, "inputs_used": self.inputs_used,
                "seconds": round(self.seconds, 3),
                **({} if self.explanation is None else {"explanation": {
                    "method": self.explanation.method,
                    "images": [[i.channel, i.reference_z, round(i.weight, 4)]
                               for i in self.explanation.images]}}),
                **({} if p is None else {
                    "probability": round(p.probability, 4), "threshold": p.threshold,
                    "positive": p.positive, "label": p.label,
                    "contributions": [[n, round(v, 4)] for n, v in p.contributions]})}


class _Features:
    """Radiomics per (bundle settings), extracted once per study and shared by bundles."""

    def __init__(self, context: PredictionInputs, settings: ResponseSettings) -> None:
        self.context = context
        self.settings = settings
        self.cache = FeatureCache(settings.cache_dir)
        self.series: dict[str, str] = {}

    def for_bundle(self, bundle: Bundle) -> dict[str, float]:
        needed = [f for f in bundle.inputs.features if ":" not in f]
        if not needed:
            return {}
        lesion = self._largest_lesion()
        images = {phase: self._volume(phase).array for phase in bundle.inputs.phases}
        config = bundle.radiomics
        tasks = make_tasks(images, lesion, self.context.reference.spacing,
                           tuple(config.get("regions", ("tumour", "ring"))),
                           float(config.get("ring_mm", 5.0)),
                           settings_path(str(config.get("settings", "ct_original")),
                                         bundle.path),
                           self._study_key(bundle), within=self.context.organ)
        return extract_all(tasks, self.cache, self.settings.workers)

    def _study_key(self, bundle: Bundle) -> str:
        series = ",".join(self.series[p] for p in bundle.inputs.phases)
        return f"{self.context.study_uid}|{series}"

    def _largest_lesion(self) -> npt.NDArray[np.bool_]:
        labels = self.context.lesion_labels
        if labels is None or not (labels == 1).any():
            raise MissingInputs(["a segmented tumour"])
        return np.asarray(labels == 1, dtype=bool)  # lesion 1 is the largest

    def _volume(self, phase: str) -> Volume:
        try:
            selected = select_volume(self.context.labelled, phase, self.context.rules)
        except NoUsableSeries as exc:
            raise MissingInputs([f"{phase} series ({exc.reason})"]) from exc
        self.series[phase] = selected.series_uid
        return resample_like(selected.volume, self.context.reference)


def _order(bundles: Sequence[Bundle]) -> list[Bundle]:
    """Score providers before their consumers; within a group, more inputs first."""
    ranked = sorted(bundles, key=lambda b: (len(score_names(b)) > 0, b.group or b.name,
                                            -len(b.inputs.features), b.name))
    return ranked


def _inputs_used(bundle: Bundle, clinical: ClinicalInputs, series: dict[str, str]
                 ) -> dict[str, str]:
    used = {f"phase {p}": f"series {series.get(p, '?')}" for p in bundle.inputs.phases
            if any(":" not in f for f in bundle.inputs.features)}
    used |= {v: f"{clinical.values.get(v)!s} ({clinical.origin.get(v, '?')})"
             for v in clinical_variables(bundle)}
    used |= {f"score {s}": "this study's prediction" for s in score_names(bundle)}
    return used


def _run_image(bundle: Bundle, features: _Features, clinical: ClinicalInputs,
               settings: Any) -> ResponseOutcome:
    """An image bundle (``[inputs] kind = "image"``): ``plugin.pipeline.image_models``."""
    started = time.perf_counter()
    context = features.context
    try:
        prediction, used, explanation = run_image_bundle(
            bundle, context.labelled, context.reference, context.organ, context.lesion_labels,
            dict(clinical.values), context.rules, tuple(settings.providers),
            context.lesion_diameter_mm)
    except MissingInputs as exc:
        return ResponseOutcome(bundle.name, bundle.version, bundle.group, None,
                               f"not run: {exc}", seconds=time.perf_counter() - started)
    except (ValueError, RuntimeError, OSError) as exc:
        log.warning("image response bundle %s failed: %s", bundle.name, exc)
        return ResponseOutcome(bundle.name, bundle.version, bundle.group, None,
                               f"failed: {exc}", seconds=time.perf_counter() - started)
    for variable in clinical_variables(bundle):
        used[variable] = f"{clinical.values.get(variable)!s} ({clinical.origin.get(variable, '?')})"
    return ResponseOutcome(bundle.name, bundle.version, bundle.group, prediction, "predicted",
                           used, time.perf_counter() - started, explanation)


def _run_one(bundle: Bundle, features: _Features, clinical: ClinicalInputs,
             scores: dict[str, float], settings: Any) -> ResponseOutcome:
    if is_image_bundle(bundle):
        return _run_image(bundle, features, clinical, settings)
    started = time.perf_counter()
    wanted = str(bundle.radiomics.get("modality", "")).upper()
    if wanted and features.context.modality and wanted != features.context.modality.upper():
        return ResponseOutcome(bundle.name, bundle.version, bundle.group, None,
                               f"not run: trained on {wanted}, the study is "
                               f"{features.context.modality}")
    try:
        radiomics = features.for_bundle(bundle)
        vector = build_vector(bundle, radiomics, clinical.values, scores)
        session = create_session(bundle.model_file, providers=list(settings.providers) or None)
        prediction = predict(bundle, session, vector)
    except MissingInputs as exc:
        return ResponseOutcome(bundle.name, bundle.version, bundle.group, None,
                               f"not run: {exc}", seconds=time.perf_counter() - started)
    except (ValueError, RuntimeError, OSError) as exc:
        log.warning("response bundle %s failed: %s", bundle.name, exc)
        return ResponseOutcome(bundle.name, bundle.version, bundle.group, None,
                               f"failed: {exc}", seconds=time.perf_counter() - started)
    return ResponseOutcome(bundle.name, bundle.version, bundle.group, prediction, "predicted",
                           _inputs_used(bundle, clinical, features.series),
                           time.perf_counter() - started)


def run_response_models(context: PredictionInputs, study_datasets: Sequence[Dataset],
                        pipeline_settings: Any, settings: ResponseSettings | None = None
                        ) -> list[ResponseOutcome]:
    """Run every response bundle installed for this node on the study."""
    settings = settings or ResponseSettings()
    bundles = [b for b in installed_bundles(pipeline_settings.bundle_dirs)
               if b.family == RESPONSE_FAMILY]
    if not bundles:
        return []
    clinical = gather_clinical(context.study_uid, context.patient_id, store=settings.store,
                               folder=settings.clinical_folder, study_datasets=study_datasets)
    features = _Features(context, settings)
    scores: dict[str, float] = {}
    served_groups: dict[str, str] = {}
    outcomes = []
    for bundle in _order(bundles):
        if bundle.group and bundle.group in served_groups:
            outcomes.append(ResponseOutcome(
                bundle.name, bundle.version, bundle.group, None,
                f"not run: variant {served_groups[bundle.group]} of group {bundle.group} "
                "had all its inputs"))
            continue
        outcome = _run_one(bundle, features, clinical, scores, pipeline_settings)
        if outcome.prediction is not None:
            scores[bundle.name] = outcome.prediction.log_odds
            if bundle.group:
                served_groups[bundle.group] = bundle.name
        outcomes.append(outcome)
    log.info("response models: %s; feature cache %d hit(s), %d miss(es)",
             [(o.name, o.reason) for o in outcomes], features.cache.hits, features.cache.misses)
    return outcomes


def predict_step(ctx: StudyContext) -> None:
    """Every response bundle on the study; without a segmentation each says what it lacks."""
    if ctx.inputs is not None:
        reference, datasets = ctx.reference_volume, ctx.inputs.datasets
    else:
        found = _any_reference(ctx)
        if found is None:
            log.warning("no series stacks into a volume: response models not run")
            return
        reference, datasets = found.volume, list(found.datasets)
    seg = ctx.segmentation
    labels = seg.labels if seg is not None else np.zeros(reference.shape, np.uint8)
    lesions = ctx.measurements.lesion_labels if ctx.measurements is not None else None
    first = datasets[0]
    diameter = (ctx.measurements.lesions[0].longest_diameter_mm
                 if ctx.measurements is not None and ctx.measurements.lesions else None)
    context = PredictionInputs(str(first.StudyInstanceUID), str(first.get("PatientID", "")),
                               ctx.labelled, reference, np.asarray(labels > 0, dtype=bool),
                               lesions, str(first.get("Modality", "")), ctx.rules, diameter)
    study_datasets = [ds for item in ctx.labelled for ds in item.series.datasets]
    study_datasets += ctx.non_image_datasets()  # a clinical SR in the study is read
    settings = ctx.settings.response or ResponseSettings()
    ctx.predictions = run_response_models(context, study_datasets, ctx.settings, settings)


def _any_reference(ctx: StudyContext) -> SelectedVolume | None:
    """A grid for response models when no segmentation bundle ran: any stackable series."""
    phases = dict.fromkeys(p for b in ctx.bundles for ch in b.inputs.phases
                           for p in b.inputs.accepted(ch))
    for wanted in [*phases, *dict.fromkeys(i.label.label for i in ctx.labelled)]:
        try:
            return select_volume(ctx.labelled, wanted, ctx.rules)
        except NoUsableSeries:
            continue
    return None


def response_sr_parts(outcomes: Sequence[ResponseOutcome], study_uid: str
                      ) -> tuple[list[Any], list[tuple[str, str]]]:
    """TID 1501 groups and TEXT notes for the SR (``export.sr.response_models``)."""
    return response_model_groups(outcomes, study_uid), response_model_notes(outcomes)
