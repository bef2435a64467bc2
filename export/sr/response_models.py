"""Response-model results in the TID 1500 report: one TID 1501 group per model that ran.

Each group carries the model's own TID 4019 Algorithm Identification (name, version: IHE AIR
asks that every result name the algorithm that made it), the probability and the threshold
as NUM items (unit UCUM "1") and the class at that threshold as a CODE. What does not fit a
coded measurement - the inputs used, the feature contributions, and for models that did not
run the reason - goes to the report's Qualitative Evaluations as TEXT ("name: value" notes,
see ``build_measurement_report(extra_text=...)``), so a reader sees why a model is absent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import highdicom as hd

from export.common import MANUFACTURER, derive_uid
from export.sr import codes

__all__ = ["ResponseResultLike", "response_model_groups", "response_model_notes"]


class ResponseResultLike(Protocol):
    """What the exporter reads of one model's outcome (``plugin`` adapts its own objects)."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def probability(self) -> float | None: ...
    @property
    def threshold(self) -> float: ...
    @property
    def label(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def inputs_used(self) -> Mapping[str, str]: ...
    @property
    def contributions(self) -> Sequence[tuple[str, float]]: ...


def _group(result: ResponseResultLike, study_uid: str
           ) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    probability = float(result.probability or 0.0)
    positive = probability >= result.threshold
    algorithm = hd.sr.AlgorithmIdentification(name=result.name, version=result.version,
                                              manufacturer=MANUFACTURER)
    uid = derive_uid(study_uid, "response-model", result.name, result.version)
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=uid, identifier=result.name[:64]),
        finding_type=codes.RESPONSE_PREDICTION,
        algorithm_id=algorithm,
        measurements=[
            hd.sr.Measurement(name=codes.PREDICTED_PROBABILITY, value=probability,
                              unit=codes.UNIT_NO_UNITS),
            hd.sr.Measurement(name=codes.DECISION_THRESHOLD, value=float(result.threshold),
                              unit=codes.UNIT_NO_UNITS)],
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(
            codes.PREDICTED_CLASS, codes.CLASS_POSITIVE if positive else codes.CLASS_NEGATIVE)])


def response_model_groups(results: Sequence[ResponseResultLike], study_uid: str
                          ) -> list[hd.sr.MeasurementsAndQualitativeEvaluations]:
    """TID 1501 groups of the models that gave a probability (for ``extra_groups``)."""
    return [_group(r, study_uid) for r in results if r.probability is not None]


def response_model_notes(results: Sequence[ResponseResultLike]) -> list[tuple[str, str]]:
    """TEXT notes per model: output, inputs and contributions, or the reason it did not run."""
    notes = []
    for r in results:
        title = f"Response model {r.name} {r.version}"
        if r.probability is None:
            notes.append((title, r.reason))
            continue
        verdict = "positive" if r.probability >= r.threshold else "negative"
        notes.append((title, f"P({r.label}) = {r.probability:.3f}; {verdict} at threshold "
                             f"{r.threshold:.3f}"))
        notes.append((f"{title} inputs", "; ".join(f"{k} = {v}"
                                                    for k, v in r.inputs_used.items())))
        notes.append((f"{title} contributions (log-odds)",
                      "; ".join(f"{n} {v:+.3f}" for n, v in r.contributions)))
    return notes
