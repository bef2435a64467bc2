"""``hepatica train radiomics`` and ``hepatica train nomogram``: cohort in, response bundle out.

Both print progress and a cross-validated metrics table, write the bundle, re-load it with
``load_bundle`` and score any held-out patients through the served path (ONNX Runtime via
``inference.response.predict``), so the AUC reported is the one a node would get.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inference.bundle import Bundle, load_bundle
from inference.radiomics import reproducible_features
from inference.response import MissingInputs
from plugin.research.radiomics_cohort import FeatureSpec, cohort_features, read_rows
from plugin.research.scoring import bundle_cohort_features, score_rows

__all__ = ["add_parsers", "train_nomogram", "train_radiomics"]

Progress = Callable[[str, int, int], None]
LABELS = ("pd", "orr", "dcb", "dcr")
LABEL_NAMES = {"pd": ("no progressive disease", "progressive disease"),
               "orr": ("no objective response", "objective response"),
               "dcb": ("no durable clinical benefit", "durable clinical benefit"),
               "dcr": ("progressive disease", "disease control")}
PHANTOM_NOTE = ("Trained on synthetic phantoms only (hepatica cohort); not for clinical use. "
                "Retraining reads a cohort folder as `hepatica cohort` writes it; reading a "
                "site's own DICOM studies is implemented for segmentation only.")


def add_parsers(families: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the two sub-commands under ``hepatica train``."""
    rad = families.add_parser("radiomics", help="ICC + LASSO + classifier comparison (seed 003)")
    _common(rad)
    rad.add_argument("--phases", default="AP,PVP")
    rad.add_argument("--regions", default="tumour,ring")
    rad.add_argument("--ring-mm", type=float, default=5.0)
    rad.add_argument("--settings", default="ct_original",
                     help="pyradiomics settings: ct, ct_original, mr_3mm, mr_original or a file")
    rad.add_argument("--modality", choices=("ct", "mr"), default="ct")
    rad.add_argument("--icc", type=float, default=0.90, help="keep features with ICC >= this")
    rad.add_argument("--rated-patients", type=int, default=30,
                     help="patients whose masks are perturbed for the ICC")
    rad.add_argument("--max-features", type=int, default=10)
    rad.add_argument("--family", default="", help="serve this family, not the best by CV AUC")
    rad.add_argument("--phantom-seed", type=int, default=0,
                     help="the --seed the --no-images phantom cohort was written with")
    rad.set_defaults(func=run_cli, kind="radiomics")
    nom = families.add_parser("nomogram", help="logistic nomogram: scores + clinical (seed 001)")
    _common(nom)
    nom.add_argument("--score-bundle", type=Path, action="append", default=[],
                     help="response bundle whose score is a predictor (repeatable)")
    nom.add_argument("--clinical", default="afp_response,platelets,dilated_vasculature")
    nom.add_argument("--group", default="", help="variants of one model share a group")
    nom.set_defaults(func=run_cli, kind="nomogram")
    from plugin.cli import train_deep

    train_deep.add_parsers(families)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cohort", type=Path, required=True, help="folder with cohort.csv")
    p.add_argument("--label", choices=LABELS, required=True)
    p.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    p.add_argument("--name", default="")
    p.add_argument("--version", default="0.1.0")
    p.add_argument("--holdout", type=int, default=0,
                   help="keep the last N patients out of training and report their AUC")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--description", default="")


def _split(rows: list[dict[str, str]], holdout: int) -> tuple[list[dict[str, str]],
                                                            list[dict[str, str]]]:
    if holdout >= len(rows) - 10:
        raise ValueError(f"--holdout {holdout} leaves too few of {len(rows)} patients")
    return rows[:len(rows) - holdout], rows[len(rows) - holdout:]


def _labels(rows: Sequence[Mapping[str, str]], label: str) -> np.ndarray:
    return np.array([int(r[label]) for r in rows])


# ------------------------------------------------------------------ radiomics


def train_radiomics(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    """Features -> ICC -> selection -> CV of every family -> best to ONNX -> bundle."""
    from inference.training import radiomics as tr

    spec = FeatureSpec(tuple(args.phases.split(",")), tuple(args.regions.split(",")),
                       args.ring_mm, args.settings, args.modality, args.phantom_seed)
    rows = read_rows(args.cohort)
    features, ratings = cohort_features(args.cohort, spec, args.rated_patients, args.workers,
                                        progress)
    reproducible = reproducible_features(ratings, args.icc) if ratings else {
        k: 1.0 for k in next(iter(features.values()))}
    names = sorted(reproducible)
    train, test = _split(rows, args.holdout)
    x = tr.design([features[r["patient_id"]] for r in train], names)
    y = _labels(train, args.label)
    progress(f"{len(names)} of {len(next(iter(features.values())))} features with ICC >= "
             f"{args.icc}; selecting", 0, 1)
    selected = tr.select_features(x, y, names, args.max_features, seed=args.seed)
    xs = tr.design([features[r["patient_id"]] for r in train], selected)
    results = tr.cross_validate(xs, y, list(tr.FAMILIES), seed=args.seed, progress=progress)
    chosen = next(r for r in results if r.family == args.family) if args.family else results[0]
    pipeline = tr.clone_fit(tr.make_pipeline(chosen.family, args.seed), xs, y)
    args.out.mkdir(parents=True, exist_ok=True)
    tr.export_onnx(pipeline, len(selected), args.out / "model.onnx")
    parity = _parity(pipeline, args.out / "model.onnx", xs)
    document = _radiomics_document(args, spec, selected, xs, chosen, results, parity,
                                   len(names), len(train))
    _write_oof(args.cohort / f"oof_scores_{document['name']}.csv", train, chosen.oof)
    return _finish(args, document, features, test)


def _write_oof(path: Path, rows: Sequence[Mapping[str, str]], probability: np.ndarray) -> None:
    """Out-of-fold probabilities of the training patients, kept beside the cohort (never in
    the bundle: it would carry patient ids). A nomogram trained on in-sample scores would
    trust them far more than they deserve on new patients."""
    with path.open("w") as handle:
        handle.write("patient_id,probability\n")
        handle.writelines(f"{r['patient_id']},{p!r}\n" for r, p in
                          zip(rows, probability.tolist(), strict=True))


def _read_oof(path: Path) -> dict[str, float]:
    if not path.is_file():
        return {}
    with path.open(newline="") as handle:
        return {r["patient_id"]: float(r["probability"]) for r in csv.DictReader(handle)}


def _parity(pipeline: Any, onnx_path: Path, x: np.ndarray) -> float:
    from inference.training.radiomics import onnx_probabilities
    reference = pipeline.predict_proba(np.asarray(x, np.float32))[:, 1]
    return float(np.max(np.abs(onnx_probabilities(onnx_path, x) - reference)))


def _radiomics_document(args: argparse.Namespace, spec: FeatureSpec, selected: list[str],
                        x: np.ndarray, chosen: Any, results: Sequence[Any], parity: float,
                        reproducible: int, n_train: int) -> dict[str, Any]:
    from inference.training.radiomics import LINEAR_FAMILIES, column_means
    name = args.name or f"hepatica-radiomics-{args.label}-{spec.modality}"
    return {
        "name": name, "version": args.version, "family": "response",
        "intended_use": "Research use only: probability of " + LABEL_NAMES[args.label][1]
                        + " from pre-treatment radiomics.",
        "description": args.description or f"pyradiomics ({spec.settings}) on tumour and "
                       f"{spec.ring_mm:g} mm ring, ICC >= {args.icc}, correlation pruning + "
                       f"LASSO, {chosen.family} chosen by 5-fold CV ROC AUC (seed 003).",
        "model_file": "model.onnx",
        "inputs": {"phases": list(spec.phases), "clinical": [], "features": selected},
        "radiomics": {"settings": spec.settings, "regions": list(spec.regions),
                      "ring_mm": spec.ring_mm, "lesion": "largest",
                      "modality": spec.modality.upper()},
        "outputs": {"labels": list(LABEL_NAMES[args.label])},
        "thresholds": {"probability": chosen.metrics["threshold"]},
        "explain": {"method": "exact-linear" if chosen.family in LINEAR_FAMILIES
                    else "occlusion", "baseline": column_means(x)},
        "training": {"data": f"{args.cohort.name}: {n_train} patients", "label": args.label,
                     "family": chosen.family, "selection_metric": "mean 5-fold CV ROC AUC",
                     "reproducible_features": reproducible, "onnx_parity_max_abs": parity,
                     "seed": args.seed, "date": dt.date.today().isoformat(),
                     "cv": {r.family: r.metrics["auc_cv_mean"] for r in results},
                     **{f"best_{k}": v for k, v in chosen.metrics.items()}},
    }


# ------------------------------------------------------------------ nomogram


def _encode(rows: Sequence[Mapping[str, str]], variables: Sequence[str]) -> list[str]:
    """Input columns for clinical variables: numbers as they are, categories as indicators
    of every level but the most common one (the reference)."""
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


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-7, 1 - 1e-7)
    return np.asarray(np.log(q / (1 - q)), dtype=np.float64)


def train_nomogram(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    """Scores of the score bundles + encoded clinical predictors -> logistic nomogram."""
    from inference.training import radiomics as tr
    from inference.training.nomogram import nomogram_pipeline, plot_nomogram, raw_coefficients

    rows = read_rows(args.cohort)
    score_bundles = [load_bundle(d) for d in args.score_bundle]
    features = bundle_cohort_features(args.cohort, score_bundles, args.workers,
                                      getattr(args, "phantom_seed", 0), progress)
    scores: dict[str, dict[str, float]] = {r["patient_id"]: {} for r in rows}
    for bundle in score_bundles:
        oof = _read_oof(args.cohort / f"oof_scores_{bundle.name}.csv")
        served = score_rows(bundle, rows, features)
        for row, value in zip(rows, served.tolist(), strict=True):
            probability = oof.get(row["patient_id"], value)
            scores[row["patient_id"]][bundle.name] = float(_logit(np.array([probability]))[0])
    train, test = _split(rows, args.holdout)
    variables = [v for v in args.clinical.split(",") if v]
    columns = [f"score:{b.name}" for b in score_bundles] + _encode(train, variables)
    table = [_row_values(r, columns, scores) for r in train]
    x, y = tr.design(table, columns), _labels(train, args.label)
    cv = _nomogram_cv(x, y, args.seed)
    progress(f"nomogram 5-fold CV AUC {cv['auc_cv_mean']:.3f}", 1, 1)
    pipeline = nomogram_pipeline().fit(x, y)
    args.out.mkdir(parents=True, exist_ok=True)
    tr.export_onnx(pipeline, len(columns), args.out / "model.onnx")
    coefficients = raw_coefficients(pipeline, columns)
    ranges = {c: (float(x[:, j].min()), float(x[:, j].max())) for j, c in enumerate(columns)}
    plot_nomogram(coefficients, ranges, args.out / "nomogram.png",
                  f"{args.name or 'nomogram'}: P({LABEL_NAMES[args.label][1]})")
    document = _nomogram_document(args, score_bundles, variables, columns, x, cv,
                                  coefficients, _parity(pipeline, args.out / "model.onnx", x),
                                  len(train))
    return _finish(args, document, features, test, scores)


def _row_values(row: Mapping[str, str], columns: Sequence[str],
                scores: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    from inference.response import _value
    values = {c: _value(c, {}, row, scores[row["patient_id"]]) for c in columns}
    missing = [c for c, v in values.items() if v is None]
    if missing:
        raise MissingInputs(missing)
    return {c: float(v) for c, v in values.items() if v is not None}


def _nomogram_cv(x: np.ndarray, y: np.ndarray, seed: int) -> dict[str, float]:
    from sklearn.model_selection import StratifiedKFold

    from inference.training.nomogram import nomogram_pipeline
    from inference.training.radiomics import _auc, _metrics, youden_threshold
    oof = np.zeros(len(y))
    aucs = []
    for train, test in StratifiedKFold(5, shuffle=True, random_state=seed).split(x, y):
        oof[test] = nomogram_pipeline().fit(x[train], y[train]).predict_proba(x[test])[:, 1]
        aucs.append(_auc(y[test], oof[test]))
    return {"auc_cv_mean": round(float(np.mean(aucs)), 4),
            "auc_cv_sd": round(float(np.std(aucs)), 4),
            **_metrics(y, oof, youden_threshold(y, oof))}


def _nomogram_document(args: argparse.Namespace, score_bundles: Sequence[Bundle],
                       variables: Sequence[str], columns: Sequence[str], x: np.ndarray,
                       cv: dict[str, float], coefficients: dict[str, float], parity: float,
                       n_train: int) -> dict[str, Any]:
    from inference.training.radiomics import column_means
    phases = sorted({p for b in score_bundles for p in b.inputs.phases}) or ["AP"]
    return {
        "name": args.name or f"hepatica-nomogram-{args.label}",
        "version": args.version, "family": "response", "group": args.group,
        "intended_use": "Research use only: probability of " + LABEL_NAMES[args.label][1]
                        + " from model scores and clinical predictors (seed 001 nomogram).",
        "description": args.description or "Logistic regression over "
                       + ", ".join(columns) + ".",
        "model_file": "model.onnx", "extra_files": ["nomogram.png"],
        "inputs": {"phases": phases, "clinical": list(variables), "features": list(columns)},
        "outputs": {"labels": list(LABEL_NAMES[args.label])},
        "thresholds": {"probability": cv["threshold"]},
        "explain": {"method": "exact-linear", "baseline": column_means(x)},
        "training": {"data": f"{args.cohort.name}: {n_train} patients", "label": args.label,
                     "family": "logistic nomogram", "onnx_parity_max_abs": parity,
                     "seed": args.seed, "date": dt.date.today().isoformat(),
                     "coefficients": coefficients, **cv},
    }


# ------------------------------------------------------------------ shared


def _finish(args: argparse.Namespace, document: dict[str, Any],
            features: Mapping[str, Mapping[str, float]], test: Sequence[Mapping[str, str]],
            scores: Mapping[str, Mapping[str, float]] | None = None) -> dict[str, Any]:
    """Write and re-load the bundle; score the held-out rows through the served path."""
    from inference.training.radiomics import _auc
    from inference.training.response_bundle import write_bundle_toml
    if test:
        document["training"]["holdout_patients"] = len(test)
    header = PHANTOM_NOTE if _is_phantom(args.cohort) else ""
    if header:
        document["training"]["data"] += " of a synthetic phantom cohort (no patient data)"
    write_bundle_toml(args.out, document, header)
    bundle = load_bundle(args.out)
    if test:
        probability = score_rows(bundle, test, features, scores)
        auc = round(_auc(_labels(test, args.label), probability), 4)
        document["training"]["holdout_auc_served_onnx"] = auc
        write_bundle_toml(args.out, document, header)
        load_bundle(args.out)
    return document


def run_training(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    """Dispatch on the sub-command."""
    if args.kind == "radiomics":
        return train_radiomics(args, progress)
    return train_nomogram(args, progress)


def _is_phantom(cohort: Path) -> bool:
    """``hepatica cohort`` writes a ``scenario`` column and HCC00000-style patient ids."""
    rows = read_rows(cohort)
    return bool(rows) and "scenario" in rows[0] and rows[0]["patient_id"].startswith("HCC")


def run_cli(args: argparse.Namespace) -> int:
    """Progress bar, training, then the CV summary table."""
    from rich.console import Console
    from rich.progress import Progress as Bar
    from rich.table import Table

    console = Console()
    with Bar(console=console) as bar:
        task = bar.add_task("starting", total=None)

        def progress(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)

        document = run_training(args, progress)
    training = document["training"]
    table = Table(title=f"{document['name']} {document['version']}: cross-validated metrics")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in training.get("cv", {}).items():
        table.add_row(f"CV AUC {key}", f"{value:.3f}")
    for key, value in training.items():
        if isinstance(value, float | int) and not isinstance(value, bool):
            table.add_row(key, f"{value:.4g}")
    console.print(table)
    console.print(f"bundle written to {args.out}")
    return 0
