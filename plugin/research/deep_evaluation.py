"""Score a phantom cohort with an image response bundle through the served path.

Each patient's inputs are what a node would prepare (served segmentation, largest measured
lesion, ``inference.deep_response.prepare``, see ``plugin.research.deep_cohort``); the bundle
runs in ONNX Runtime through ``inference.deep_response.predict_image``, the function the
pipeline calls. Written beside the scores:

* ``predictions.csv`` / ``predictions_dropped.csv`` in the format ``hepatica evaluate``
  reads; a dropped phase is the channel replaced by a uniform liver signal (the occlusion
  ``inference.deep_response`` documents);
* heatmap localisation: per explanation image, the share of its positive mass within
  ``radius_mm`` of the ground-truth lesion whose planted features drive the outcome (the
  largest), measured on the crop grid against the true distance map.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from inference.bundle import Bundle
from inference.deep_response import (
    ImagePrediction,
    ImageSpec,
    image_spec,
    open_graph,
    predict_image,
    zoom_to_lesion,
)
from inference.response import MissingInputs, build_vector
from plugin.research.deep_cohort import DeepDataSpec, cohort_inputs
from plugin.research.radiomics_cohort import read_rows

__all__ = ["DeepScores", "localisation", "score_cohort", "served_prediction"]

Progress = Callable[[str, int, int], None]
ALL_CHANNELS = "all image inputs"


@dataclass
class DeepScores:
    """Served predictions of a cohort and what they measured."""

    predictions: dict[str, ImagePrediction] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    localisation: dict[str, list[float]] = field(default_factory=dict)
    displayed: dict[str, list[float]] = field(default_factory=dict)
    dropped: dict[str, dict[str, float]] = field(default_factory=dict)


def served_spec(bundle: Bundle, segmentation: Path, phantom_seed: int = 0) -> DeepDataSpec:
    """The data spec of served inputs for ``bundle`` (no margin: the serving crop)."""
    spec = image_spec(bundle)
    return DeepDataSpec(tuple(bundle.inputs.phases), spec.crop_zyx, spec.spacing_xyz, 0,
                        spec.normalisation, "mr", phantom_seed, str(Path(segmentation).resolve()))


def clinical_row(bundle: Bundle, row: Mapping[str, str]) -> npt.NDArray[np.float32] | None:
    """The bundle's clinical input columns for a cohort row (None: it takes none)."""
    spec = image_spec(bundle)
    if not spec.clinical_features:
        return None
    vector = build_vector(_clinical_only(bundle), {}, row, {})
    return np.array([vector[f] for f in spec.clinical_features], np.float32)


def _clinical_only(bundle: Bundle) -> Bundle:
    from dataclasses import replace
    features = tuple(f for f in bundle.inputs.features if f.startswith("clinical:"))
    return replace(bundle, inputs=replace(bundle.inputs, features=features))


def served_prediction(bundle: Bundle, image: npt.NDArray[np.float32],
                      clinical: npt.NDArray[np.float32] | None) -> ImagePrediction:
    """One prepared study through the bundle's ONNX graph(s) on the CPU."""
    spec = image_spec(bundle)
    session = open_graph(bundle.model_file, ["CPUExecutionProvider"])
    head = open_graph(spec.head_file, ["CPUExecutionProvider"]) if spec.head_file else None
    return predict_image(spec, bundle.outputs, session, image.astype(np.float32), clinical,
                         head, threshold=bundle.threshold("probability", 0.5))


DISPLAYED = 0.15
"""Overlay values below this fraction of the image's maximum are drawn transparent
(``export.sc.explanation``): the "displayed" localisation counts only what is drawn."""


def localisation(prediction: ImagePrediction, distance_mm: npt.NDArray[np.floating],
                 radius_mm: float = 10.0, displayed: bool = False) -> list[float]:
    """Per explanation image: positive mass within ``radius_mm`` of the lesion / all of it
    (``displayed``: only the values the secondary capture draws)."""
    shares = []
    for item in prediction.explanations:
        mass = np.maximum(item.values, 0.0)
        if displayed and mass.size:
            mass = np.where(mass >= DISPLAYED * float(mass.max()), mass, 0.0)
        total = float(mass.sum())
        if total <= 0:
            continue
        near = distance_mm[min(item.crop_z, distance_mm.shape[0] - 1)] <= radius_mm
        shares.append(float(mass[near].sum()) / total)
    return shares


def score_cohort(bundle: Bundle, cohort_dir: Path, patients: Sequence[str],
                 segmentation: Path, phantom_seed: int = 0, workers: int = 1,
                 progress: Progress | None = None) -> DeepScores:
    """Served predictions, channel-dropped scores and localisation for ``patients``."""
    rows = {r["patient_id"]: r for r in read_rows(cohort_dir)}
    data = cohort_inputs(cohort_dir, served_spec(bundle, segmentation, phantom_seed),
                         patients, workers, progress)
    spec = image_spec(bundle)
    out = DeepScores()
    for pid in patients:
        item = data[pid]
        if "missing" in item:
            out.skipped[pid] = "the served segmentation found no lesion"
            continue
        try:
            clinical = clinical_row(bundle, rows[pid])
        except MissingInputs as exc:
            out.skipped[pid] = str(exc)
            continue
        image, distance = _zoomed(spec, item)
        prediction = served_prediction(bundle, image, clinical)
        out.predictions[pid] = prediction
        out.localisation[pid] = localisation(prediction, distance)
        out.displayed[pid] = localisation(prediction, distance, displayed=True)
        out.dropped[pid] = _dropped(bundle, spec, image, clinical, prediction)
    return out


def _zoomed(spec: ImageSpec, item: Mapping[str, npt.NDArray[Any]]
            ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """The served input and the distance map on the model's grid (zoomed to the measured
    lesion diameter when the bundle zooms)."""
    image = np.asarray(item["image"], np.float32)
    distance = np.asarray(item["distance_mm"], np.float32)
    if spec.zoom is None:
        return image, distance
    diameter = float(item["diameter_mm"])
    return (zoom_to_lesion(image, spec.spacing_xyz[0], diameter, spec.zoom),
            zoom_to_lesion(distance, spec.spacing_xyz[0], diameter, spec.zoom))


def _dropped(bundle: Bundle, spec: ImageSpec, image: npt.NDArray[np.float32],
             clinical: npt.NDArray[np.float32] | None, prediction: ImagePrediction
             ) -> dict[str, float]:
    """P(positive) with each channel occluded (from the prediction's own occlusion batch,
    via its log-odds), and with every channel occluded."""
    full = _logit(prediction.positive_probability)
    out = {name: _sigmoid(full - delta) for name, delta in prediction.channel_log_odds}
    blank = np.full_like(image, 1.0)
    out[ALL_CHANNELS] = served_prediction(bundle, blank, clinical).positive_probability
    return out


def _logit(p: float) -> float:
    q = min(max(p, 1e-7), 1 - 1e-7)
    return math.log(q / (1 - q))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def write_csvs(bundle: Bundle, scores: DeepScores, out_dir: Path) -> tuple[Path, Path]:
    """``predictions.csv`` and ``predictions_dropped.csv`` as ``hepatica evaluate`` reads."""
    out_dir.mkdir(parents=True, exist_ok=True)
    threshold = bundle.threshold("probability", 0.5)
    predictions, dropped = out_dir / "predictions.csv", out_dir / "predictions_dropped.csv"
    with predictions.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patient_id", "model", "score", "log_odds", "threshold"])
        for pid, p in scores.predictions.items():
            writer.writerow([pid, bundle.name, repr(p.positive_probability),
                             repr(_logit(p.positive_probability)), repr(threshold)])
    with dropped.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patient_id", "model", "dropped", "inputs_removed", "score"])
        for pid, values in scores.dropped.items():
            for name, value in values.items():
                removed = ("every image channel" if name == ALL_CHANNELS
                           else f"{name} channel (uniform liver signal)")
                writer.writerow([pid, bundle.name, name, removed, repr(value)])
    return predictions, dropped


def summary(scores: DeepScores, labels: Mapping[str, int], radius_mm: float = 10.0
            ) -> dict[str, Any]:
    """AUC with DeLong CI on the scored patients, localisation statistics, skips."""
    from inference.evaluation.discrimination import delong_auc

    pids = [p for p in scores.predictions if p in labels]
    y = np.array([labels[p] for p in pids], bool)
    s = np.array([scores.predictions[p].positive_probability for p in pids])
    out: dict[str, Any] = {"patients_scored": len(pids), "skipped": len(scores.skipped)}
    if len(set(y.tolist())) == 2:
        auc = delong_auc(s, y)
        out |= {"auc": round(auc.auc, 4), "auc_ci95": [round(auc.ci_low, 4),
                                                       round(auc.ci_high, 4)]}
    shares = [v for values in scores.localisation.values() for v in values]
    if shares:
        out |= {"heatmaps": len(shares),
                f"heatmap_mass_within_{radius_mm:g}mm_median": round(float(np.median(shares)), 4),
                f"heatmap_mass_within_{radius_mm:g}mm_mean": round(float(np.mean(shares)), 4),
                "heatmaps_at_least_70pct": round(float(np.mean(np.array(shares) >= 0.7)), 4)}
    drawn = [v for values in scores.displayed.values() for v in values]
    if drawn:
        out |= {f"displayed_mass_within_{radius_mm:g}mm_mean": round(float(np.mean(drawn)), 4),
                "displayed_heatmaps_at_least_70pct": round(
                    float(np.mean(np.array(drawn) >= 0.7)), 4)}
    return out


IMAGE_ROBUSTNESS_METHOD = (
    "image bundles: the dropped phase's channel of the prepared crop is replaced by a uniform "
    "liver signal (1.0 after liver-median normalisation), so it carries no information about "
    "the lesion; every other channel and clinical input stays as served. 'all image inputs' "
    "replaces every channel.")


def run_image_bundles(bundles: Sequence[Bundle], cohort_dir: Path, out_dir: Path,
                      patients: Sequence[str] | None = None, workers: int = 1,
                      phantom_seed: int = 0, segmentation: Path | None = None,
                      progress: Progress | None = None) -> Any:
    """``hepatica evaluate --run`` for image bundles: served scores of a phantom cohort and
    the phase-occlusion scores, written as predictions.csv / predictions_dropped.csv;
    returns ``plugin.research.evaluate_run.RunResult``."""
    from plugin.research.deep_training import DEFAULT_SEGMENTATION
    from plugin.research.evaluate_run import RunResult

    rows = read_rows(cohort_dir)
    pids = list(patients) if patients is not None else [r["patient_id"] for r in rows]
    seg = Path(segmentation or DEFAULT_SEGMENTATION)
    all_scores = {b.name: score_cohort(b, cohort_dir, pids, seg, phantom_seed, workers,
                                       progress) for b in bundles}
    predictions, dropped = out_dir / "predictions.csv", out_dir / "predictions_dropped.csv"
    out_dir.mkdir(parents=True, exist_ok=True)
    with predictions.open("w", newline="") as p_handle, dropped.open("w", newline="") as d:
        p_writer, d_writer = csv.writer(p_handle), csv.writer(d)
        p_writer.writerow(["patient_id", "model", "score", "log_odds", "threshold"])
        d_writer.writerow(["patient_id", "model", "dropped", "inputs_removed", "score"])
        for bundle in bundles:
            threshold = bundle.threshold("probability", 0.5)
            scores = all_scores[bundle.name]
            for pid, p in scores.predictions.items():
                q = p.positive_probability
                p_writer.writerow([pid, bundle.name, repr(q), repr(_logit(q)), repr(threshold)])
            for pid, values in scores.dropped.items():
                for name, value in values.items():
                    removed = ("every image channel" if name == ALL_CHANNELS
                               else f"{name} channel (uniform liver signal)")
                    d_writer.writerow([pid, bundle.name, name, removed, repr(value)])
    labels = {str(b.training.get("label", "")) for b in bundles}
    notes = tuple(f"{b.name}: {len(all_scores[b.name].skipped)} patients not scored "
                  f"({'; '.join(sorted(set(all_scores[b.name].skipped.values())))})"
                  for b in bundles if all_scores[b.name].skipped)
    return RunResult(predictions, dropped, cohort_dir / "cohort.csv",
                     labels.pop() if len(labels) == 1 else None,
                     {b.name: b.threshold("probability", 0.5) for b in bundles}, notes,
                     {b.name: len(all_scores[b.name].predictions) for b in bundles})


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m plugin.research.deep_evaluation BUNDLE COHORT --rows 180:240 --out DIR``:
    served scores of a slice of a phantom cohort, AUC with DeLong CI and localisation."""
    import argparse
    import json

    from inference.bundle import load_bundle
    from plugin.research.deep_training import DEFAULT_SEGMENTATION

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("cohort", type=Path)
    parser.add_argument("--rows", default=":", help="python slice of the cohort rows, e.g. -60:")
    parser.add_argument("--label", default="")
    parser.add_argument("--out", type=Path, default=None, help="write the evaluate CSVs here")
    parser.add_argument("--segmentation", type=Path, default=DEFAULT_SEGMENTATION)
    parser.add_argument("--phantom-seed", type=int, default=0)
    args = parser.parse_args(argv)
    bundle = load_bundle(args.bundle)
    start, _, stop = args.rows.partition(":")
    rows = read_rows(args.cohort)[int(start) if start else None:int(stop) if stop else None]
    label = args.label or str(bundle.training.get("label", ""))
    scores = score_cohort(bundle, args.cohort, [r["patient_id"] for r in rows],
                          args.segmentation, args.phantom_seed)
    if args.out is not None:
        write_csvs(bundle, scores, args.out)
    print(json.dumps(summary(scores, {r["patient_id"]: int(r[label]) for r in rows}),
                     sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
