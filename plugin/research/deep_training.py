"""``hepatica train inception-svm|resnet-mil``: a phantom cohort in, an image response
bundle out, scored on held-out patients through the served path.

Training reads ground-truth crops (``plugin.research.deep_cohort``); the held-out patients
are segmented by the segmentation bundle and scored exactly as a node would score them
(``plugin.research.deep_evaluation``), so the AUC and the heatmap localisation the bundle
records are the served ones. The command that made a bundle is recorded in it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from inference.bundle import load_bundle
from inference.training.response_bundle import write_bundle_toml
from plugin.research.deep_cohort import DeepDataSpec, cohort_inputs
from plugin.research.deep_evaluation import score_cohort, summary, write_csvs
from plugin.research.radiomics_cohort import read_rows

__all__ = ["CLINICAL_004", "LOG_VARIABLES", "encode_clinical", "train_inception_svm",
           "train_resnet_mil"]

Progress = Callable[[str, int, int], None]
CLINICAL_004 = (
    "age", "sex", "prior_treatment", "haic_cycles", "haic_regimen", "tumour_number",
    "largest_tumour_mm", "pvtt", "extrahepatic_mets", "hbv", "afp", "pivka_ii",
    "prothrombin_time_s", "platelets", "neutrophils", "lymphocytes", "monocytes", "nlr", "plr",
    "bilirubin", "albi", "alt", "ast", "alp", "ggt", "albumin", "crp")
"""Seed 004's 27 clinical factors, as the phantom cohort names them (HBsAg = ``hbv``,
tumour thrombus = ``pvtt``)."""
LOG_VARIABLES = frozenset({"afp", "pivka_ii", "bilirubin", "alt", "ast", "alp", "ggt", "crp"})
"""Right-skewed laboratory values: log(1 + x) inside the graph before the SVM's scaler."""
LABEL_NAMES = {"dcr": ("progressive disease", "disease control"),
               "orr": ("no objective response", "objective response")}
PHANTOM_NOTE = ("Trained on synthetic phantoms only (hepatica cohort); not for clinical use. "
                "A site trains its own with `hepatica train`.")
DEFAULT_SEGMENTATION = Path(__file__).resolve().parents[2] / "inference" / "bundles" / \
    "liver-tumour-seg"


def encode_clinical(rows: Sequence[Mapping[str, str]], variables: Sequence[str]) -> list[str]:
    """Input columns: numbers as they are, categories as indicators of every level but the
    most common (the reference); a variable with one level gives no column."""
    columns = []
    for variable in variables:
        values = [r[variable] for r in rows]
        if all(_is_number(v) for v in values):
            columns.append(f"clinical:{variable}")
            continue
        levels = sorted(set(values), key=lambda v: (-values.count(v), v))
        columns += [f"clinical:{variable}={level}" for level in levels[1:]]
    return columns


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def clinical_matrix(rows: Sequence[Mapping[str, str]], columns: Sequence[str]
                    ) -> npt.NDArray[np.float32]:
    from inference.response import _value
    out = np.zeros((len(rows), len(columns)), np.float32)
    for i, row in enumerate(rows):
        for j, column in enumerate(columns):
            value = _value(column, {}, row, {})
            if value is None:
                raise ValueError(f"patient {row['patient_id']} lacks {column}")
            out[i, j] = value
    return out


def _split(rows: list[dict[str, str]], holdout: int) -> tuple[list[dict[str, str]],
                                                            list[dict[str, str]]]:
    if holdout >= len(rows) - 10:
        raise ValueError(f"--holdout {holdout} leaves too few of {len(rows)} patients")
    return rows[:len(rows) - holdout], rows[len(rows) - holdout:]


def _command() -> str:
    return "hepatica " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _threads(count: int) -> None:
    import torch
    torch.set_num_threads(max(1, count))


# ------------------------------------------------------------------ seed 004


def train_inception_svm(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    """Seed 004: CNN per sequence (cross-fitted) + 27 clinical → SVM; CAM per sequence."""
    from inference.training.deep_dcr import DcrConfig, export_dcr, fit_dcr, onnx_parity

    _threads(args.threads)
    started = time.time()
    rows = read_rows(args.cohort)
    train, test = _split(rows, args.holdout)
    channels = tuple(args.sequences.split(","))
    crop = (1, args.crop, args.crop)
    spacing = (args.spacing, args.spacing, 3.0)
    data_spec = DeepDataSpec(channels, crop, spacing, args.margin, "liver_median", "mr",
                             args.phantom_seed)
    data = cohort_inputs(args.cohort, data_spec, [r["patient_id"] for r in train],
                         args.workers, progress)
    prepared = time.time()
    images = _zoomed_training(data, train, args, spacing[0])
    variables = [v for v in args.clinical.split(",") if v]
    columns = encode_clinical(train, variables)
    clinical = clinical_matrix(train, columns)
    log_columns = [j for j, c in enumerate(columns)
                   if c.split(":", 1)[1].split("=", 1)[0] in LOG_VARIABLES and "=" not in c]
    y = np.array([int(r[args.label]) for r in train])
    config = DcrConfig(width=args.width, features=args.features, epochs=args.epochs,
                       folds=args.folds, margin=args.margin, seed=args.seed, kernel=args.kernel,
                       optimiser=args.optimiser, lr=args.lr)
    model = fit_dcr(images, clinical, y, log_columns, config, progress)
    trained = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    onnx_path = export_dcr(model, crop[1:], args.out)  # the zoomed input: crop x crop
    centre = np.ascontiguousarray(images[:8, ..., args.margin:-args.margin,
                                         args.margin:-args.margin]) if args.margin else images[:8]
    parity = onnx_parity(model, onnx_path, centre, clinical[:8])
    document = _dcr_document(args, channels, crop, spacing, variables, columns, model, parity,
                             len(train), {"prepare_inputs_s": round(prepared - started, 1),
                                          "train_s": round(trained - prepared, 1)})
    return _finish(args, document, test)


def _dcr_document(args: argparse.Namespace, channels: Sequence[str], crop: Sequence[int],
                  spacing: Sequence[float], variables: Sequence[str], columns: Sequence[str],
                  model: Any, parity: Mapping[str, float], n_train: int,
                  seconds: Mapping[str, float]) -> dict[str, Any]:
    name = args.name or f"hepatica-{args.label}-inception-svm-mr"
    return {
        "name": name, "version": args.version, "family": "response",
        "intended_use": "RESEARCH USE ONLY - not for diagnostic use. Probability of "
                        f"{LABEL_NAMES[args.label][1]} (RECIST 1.1) after HAIC from "
                        "multi-sequence liver MRI and clinical variables (seed 004).",
        "description": args.description or (
            f"Inception-style CNN per sequence ({', '.join(channels)}; width {args.width}, "
            f"{args.features} features, {crop[1]}x{crop[2]} crop zoomed to {args.zoom_scale:g}x "
            "the largest lesion on its largest cross-section) -> one deep score per sequence, "
            f"cross-fitted over {args.folds} folds; SVM ({model.metrics['svm_kernel']} kernel) "
            f"over the scores and {len(variables)} clinical variables; CAM per sequence."),
        "model_file": "model.onnx", "extra_files": ["MODEL_CARD.md"],
        "inputs": {"kind": "image", "phases": list(channels), "clinical": list(variables),
                   "features": list(columns)},
        "preprocessing": {"spacing_mm": list(spacing), "normalisation": "liver_median",
                          "patch_size": _context(crop, args.margin)},
        "outputs": {"labels": list(LABEL_NAMES[args.label])},
        "thresholds": {"probability": model.metrics["threshold_youden_cv"]},
        "explain": {"method": "cam", "target": args.explain_target},
        "image": {"crop": "largest lesion, its largest axial cross-section",
                  **_zoom_keys(args), "graph_inputs": ["image", "clinical"],
                  "graph_outputs": ["probability", "explanation"]},
        "training": {
            "data": f"{args.cohort.name}: {n_train} patients", "label": args.label,
            "family": "inception-svm (seed 004)", "command": _command(), "seed": args.seed,
            "date": dt.date.today().isoformat(), "epochs": args.epochs, "folds": args.folds,
            "width": args.width, "features": args.features, "margin_px": args.margin,
            "optimiser": args.optimiser, "lr": args.lr,
            "onnx_parity_max_abs_probability": parity["probability"],
            "onnx_parity_max_abs_explanation": parity["explanation"],
            **seconds, **{k: v for k, v in model.metrics.items() if not isinstance(v, list)},
            "cnn_oof_auc_folds": model.metrics["cnn_oof_auc_folds"],
            "scale_down": "study: InceptionV4 on 450x320 slices, 5 sequences, SGD, batch 1; "
                          f"here: stem + 2 Inception blocks + 1 reduction, width {args.width}, "
                          f"{crop[1]}x{crop[2]} crops zoomed to {args.zoom_scale:g}x the lesion "
                          f"diameter, {args.optimiser} lr {args.lr:g}, batch 16, "
                          f"{args.epochs} epochs",
        },
    }


# ------------------------------------------------------------------ seed 000


def train_resnet_mil(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    """Seed 000: four phases, 2.5-D ResNet encoder + Transformer MIL → P(ORR); Grad-CAM."""
    from inference.training.deep_orr import (
        OrrConfig,
        export_orr,
        fit_orr,
        instance_layout,
        onnx_parity,
    )

    _threads(args.threads)
    started = time.time()
    rows = read_rows(args.cohort)
    train, test = _split(rows, args.holdout)
    phases = tuple(args.phases.split(","))
    crop = (args.slices + 2, args.crop, args.crop)
    spacing = (args.spacing, args.spacing, 3.0)
    data_spec = DeepDataSpec(phases, crop, spacing, args.margin, "liver_median", "mr",
                             args.phantom_seed)
    data = cohort_inputs(args.cohort, data_spec, [r["patient_id"] for r in train],
                         args.workers, progress)
    prepared = time.time()
    images = _zoomed_training(data, train, args, spacing[0])
    y = np.array([int(r[args.label]) for r in train])
    config = OrrConfig(width=args.width, features=args.features, dim=args.dim,
                       epochs=args.epochs, patience=args.patience, margin=args.margin,
                       seed=args.seed, lr=args.lr)
    model = fit_orr(images, y, config, progress)
    trained = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    main, head = export_orr(model, crop, len(phases), args.out)
    sample = np.ascontiguousarray(images[:4, ..., args.margin:-args.margin,
                                         args.margin:-args.margin]) if args.margin else images[:4]
    parity = onnx_parity(model, main, head, sample)
    names, zs = instance_layout(phases, crop[0])
    name = args.name or f"hepatica-{args.label}-resnet-mil-mr"
    document = {
        "name": name, "version": args.version, "family": "response",
        "intended_use": "RESEARCH USE ONLY - not for diagnostic use. Probability of "
                        f"{LABEL_NAMES[args.label][1]} (RECIST 1.1) under immunotherapy from "
                        "four-phase liver MRI (seed 000).",
        "description": args.description or (
            f"2.5-D ResNet-family encoder (BasicBlocks, width {args.width}, {args.features} "
            f"features) over {args.slices} slices x {len(phases)} phases ({', '.join(phases)}), "
            f"{args.crop}x{args.crop} crops zoomed to {args.zoom_scale:g}x the largest lesion; "
            f"2-layer, {config.heads}-head Transformer MIL with attention pooling -> P(ORR); "
            "Grad-CAM on the last convolution of the top-attended slices."),
        "model_file": "model.onnx", "extra_files": ["head.onnx", "MODEL_CARD.md"],
        "inputs": {"kind": "image", "phases": list(phases)},
        "preprocessing": {"spacing_mm": list(spacing), "normalisation": "liver_median",
                          "patch_size": _context(crop, args.margin)},
        "outputs": {"labels": list(LABEL_NAMES[args.label])},
        "thresholds": {"probability": model.metrics["threshold_youden_validation"]},
        "explain": {"method": "grad-cam", "target": args.explain_target},
        "image": {"crop": "largest lesion, its largest axial cross-section +- "
                          f"{args.slices // 2} slices", **_zoom_keys(args),
                  "head_file": "head.onnx", "instances": names, "instance_slices": zs,
                  "top_instances": 3, "graph_inputs": ["image"],
                  "graph_outputs": ["probability", "attention", "activations", "features"]},
        "training": {
            "data": f"{args.cohort.name}: {len(train)} patients", "label": args.label,
            "family": "resnet-mil (seed 000)", "command": _command(), "seed": args.seed,
            "date": dt.date.today().isoformat(), "epochs_max": args.epochs,
            "patience": args.patience, "width": args.width, "features": args.features,
            "dim": args.dim, "margin_px": args.margin, "lr": args.lr,
            "prepare_inputs_s": round(prepared - started, 1),
            "train_s": round(trained - prepared, 1),
            **{f"onnx_parity_max_abs_{k}": v for k, v in parity.items()},
            **model.metrics,
            "scale_down": "study: ResNet50 (1024-d layer3 features) on 1 mm grids, +-4 slices, "
                          "one instance per phase, AdamW 1e-5; here: 3 BasicBlocks, width "
                          f"{args.width}, {args.crop}x{args.crop} crops zoomed to "
                          f"{args.zoom_scale:g}x the lesion diameter, "
                          f"{args.slices} slices per phase each an instance, AdamW {args.lr:g}",
        },
    }
    return _finish(args, document, test)


# ------------------------------------------------------------------ shared


def _context(crop: Sequence[int], margin: int) -> list[int]:
    """The first-stage (context) crop: the model's crop plus the training margin."""
    return [int(crop[0]), int(crop[1]) + 2 * margin, int(crop[2]) + 2 * margin]


def _zoom_keys(args: argparse.Namespace) -> dict[str, Any]:
    return {"zoom_size": args.crop, "zoom_scale": args.zoom_scale,
            "zoom_min_mm": args.zoom_min_mm, "zoom_max_mm": args.zoom_max_mm}


def _zoomed_training(data: Mapping[str, Mapping[str, npt.NDArray[Any]]],
                     rows: Sequence[Mapping[str, str]], args: argparse.Namespace,
                     context_spacing: float) -> npt.NDArray[np.float32]:
    """Training inputs: each context crop zoomed to the lesion (plus the margin the random
    shifts draw from). The lesion diameter is the cohort's planned largest diameter (the
    phantom draws it; serving uses the measured one)."""
    from inference.deep_response import Zoom, zoom_to_lesion

    zoom = Zoom(args.crop, args.zoom_scale, args.zoom_min_mm, args.zoom_max_mm)
    return np.stack([zoom_to_lesion(np.asarray(data[r["patient_id"]]["image"], np.float32),
                                    context_spacing, float(r["largest_tumour_mm"]), zoom,
                                    margin=args.margin) for r in rows]).astype(np.float32)



def _finish(args: argparse.Namespace, document: dict[str, Any],
            test: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    """Write and re-load the bundle; score held-out patients through the served path."""
    header = PHANTOM_NOTE if _is_phantom(args.cohort) else ""
    if header:
        rows = read_rows(args.cohort)
        document["training"]["data"] += " of a synthetic phantom cohort (no patient data)"
        document["training"]["cohort_command"] = (
            f"hepatica cohort {args.cohort} --patients {len(rows)} --seed {args.phantom_seed} "
            f"--scenario {rows[0]['scenario']} --modality mr --no-images")
    if test:
        document["training"]["holdout_patients"] = len(test)
    _write(args.out, document, header)
    bundle = load_bundle(args.out)
    if test:
        pids = [r["patient_id"] for r in test]
        scores = score_cohort(bundle, args.cohort, pids, args.segmentation,
                              args.phantom_seed, args.workers, None)
        labels = {r["patient_id"]: int(r[args.label]) for r in test}
        measured = summary(scores, labels)
        write_csvs(bundle, scores, args.out.parent / f"{args.out.name}-holdout")
        document["training"]["holdout_served"] = json.dumps(measured, sort_keys=True)
        document["training"]["holdout_auc_served_onnx"] = measured.get("auc", float("nan"))
        _write(args.out, document, header)
        load_bundle(args.out)
    return document


def _write(folder: Path, document: dict[str, Any], header: str) -> None:
    write_bundle_toml(folder, document, header)
    (folder / "MODEL_CARD.md").write_text(model_card(document))


def model_card(document: Mapping[str, Any]) -> str:
    """A short model card from the bundle document."""
    training = document["training"]
    lines = [f"# {document['name']} {document['version']}", "",
             "RESEARCH USE ONLY - not for diagnostic use.", "",
             f"Intended use: {document['intended_use']}", "",
             f"Model: {document['description']}", "",
             f"Scale-down from the study: {training.get('scale_down', '')}", "",
             f"Training data: {training['data']}", "",
             "Reproduce (phantom cohort rows, then training):", "",
             f"    {training.get('cohort_command', '(site cohort)')}",
             f"    nice -n 10 {training.get('command', '')}", "", "## Measured", ""]
    lines += [f"- {k}: {v}" for k, v in training.items()
              if k not in ("data", "command", "scale_down", "cohort_command")]
    return "\n".join(lines) + "\n"


def _is_phantom(cohort: Path) -> bool:
    rows = read_rows(cohort)
    return bool(rows) and "scenario" in rows[0] and rows[0]["patient_id"].startswith("HCC")
