"""`hepatica train segmentation`: phantoms (dicom_io) → training (inference) → a bundle.

Composes the rooms: the phantoms come from ``dicom_io.synthetic`` as arrays, the network is
trained by ``inference.training`` and exported to ONNX, and the bundle records the data,
seed and held-out metrics so that anyone can rebuild and judge the shipped weights.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from dicom_io.synthetic import PhantomSpec, make_phantom
from dicom_io.synthetic.anatomy import Phantom

log = logging.getLogger(__name__)

TRAIN_SEED_BASE = 100_000
"""Phantom seeds used for training start here; held-out evaluation uses other seeds."""

BUNDLE_PHASES = ("AP", "PVP")
"""The segmentation bundle's inputs: arterial and portal-venous, in either modality."""

CT_EQUIVALENT = {"AP": "CT_AP", "PVP": "CT_PVP"}


def phase_arrays(phantom: Phantom) -> list[np.ndarray]:
    """The phantom's volumes in bundle input order (CT phases stand in for MR ones)."""
    ct = phantom.spec.modality == "CT"
    return [phantom.phases[CT_EQUIVALENT[p] if ct else p] for p in BUNDLE_PHASES]


TRAIN_NECROSIS_PROBABILITY = 0.8
"""How often training phantoms' large lesions carry necrosis: more than the phantom's 0.5, as
necrotic parts are what the network finds hardest."""


def phantom_seeds(count: int, ct_every: int = 4, necrosis_probability: float = 0.5
                  ) -> Iterator[tuple[int, PhantomSpec]]:
    """Phantoms: mostly MR, every ``ct_every``-th a CT."""
    for i in range(count):
        modality = "CT" if ct_every and i % ct_every == ct_every - 1 else "MR"
        yield TRAIN_SEED_BASE + i, PhantomSpec(modality=modality,
                                               necrosis_probability=necrosis_probability)


VALIDATION_SEED_BASE = 200_000
"""Held-out phantoms for the bundle's metrics; tests use yet other seeds."""

BUNDLE_NAME = "liver-tumour-seg"
BUNDLE_VERSION = "0.2.0"


def train_segmentation_bundle(out_dir: Path, *, cases: int = 40, steps: int = 3000,
                              seed: int = 0, threads: int = 2, validation_cases: int = 4,
                              necrosis_probability: float = TRAIN_NECROSIS_PROBABILITY,
                              progress: Callable[[str, int, int], None] | None = None) -> Path:
    """Train on phantoms, export ONNX, validate through the served path, write the bundle."""
    from inference.training.segmentation import (
        SegmentationTrainingConfig,
        TrainingCase,
        train_segmentation,
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    config = SegmentationTrainingConfig(steps=steps, seed=seed, threads=threads)
    training_cases = []
    for i, (phantom_seed, spec) in enumerate(
            phantom_seeds(cases, necrosis_probability=necrosis_probability)):
        phantom = make_phantom(phantom_seed, spec)
        training_cases.append(TrainingCase(phase_arrays(phantom), phantom.labels, phantom.spacing))
        if progress:
            progress("phantoms", i + 1, cases)

    def on_step(step: int, total: int, loss: float) -> None:
        if progress:
            progress(f"training (loss {loss:.3f})", step, total)

    model, summary = train_segmentation(training_cases, config, on_step)
    del training_cases
    record = {"config": asdict(config), "summary": summary, "cases": cases,
              "seed_base": TRAIN_SEED_BASE, "necrosis_probability": necrosis_probability,
              "command": f"hepatica train segmentation --out DIR --cases {cases} "
                         f"--steps {steps} --seed {seed} "
                         f"--necrosis-probability {necrosis_probability}"}
    return finish_bundle(out_dir, model, record, validation_cases, progress)


def finish_bundle(out_dir: Path, model: Any, record: dict[str, Any], validation_cases: int,
                  progress: Callable[[str, int, int], None] | None = None) -> Path:
    """Export the trained network, measure it on held-out phantoms, write bundle.toml."""
    from inference.training.onnx_export import export_to_onnx

    config = record["config"]
    export_to_onnx(model, len(BUNDLE_PHASES), config["patch_zyx"], out_dir / "model.onnx")
    _write_bundle_toml(out_dir, record, metrics={})
    record["metrics"] = validate_bundle(out_dir, validation_cases, progress)
    _write_bundle_toml(out_dir, record, record["metrics"])
    (out_dir / "training.json").write_text(json.dumps(record, indent=2))
    return out_dir


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Sørensen–Dice overlap of two boolean masks (1.0 when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def validate_bundle(bundle_dir: Path, count: int, progress: Callable[[str, int, int], None]
                    | None = None, seed_base: int = VALIDATION_SEED_BASE) -> dict[str, Any]:
    """Dice and diameter error on held-out phantoms, through ONNX Runtime as served."""
    from inference.bundle import load_bundle
    from inference.measurements import measure
    from inference.runtime import create_session
    from inference.segmentation import segment

    bundle = load_bundle(bundle_dir)
    session = create_session(bundle.model_file)
    liver, tumour, errors = [], [], []
    for i, (_seed, spec) in enumerate(phantom_seeds(count, ct_every=2)):
        phantom = make_phantom(seed_base + i, PhantomSpec(modality=spec.modality))
        result = segment(bundle, session, phase_arrays(phantom), phantom.spacing)
        liver.append(dice(result.labels > 0, phantom.labels > 0))
        tumour.append(dice(result.labels == 2, phantom.labels == 2))
        found = measure(result.labels, phantom.spacing)
        errors += _diameter_errors(phantom, found.lesions)
        if progress:
            progress("validation", i + 1, count)
    return {"validation": f"{count} held-out phantoms (seeds {seed_base}–{seed_base + count - 1},"
                          " MR and CT alternating)",
            "dice_liver_mean": round(float(np.mean(liver)), 4),
            "dice_tumour_mean": round(float(np.mean(tumour)), 4),
            "dice_tumour_min": round(float(np.min(tumour)), 4),
            "diameter_abs_error_mm_max": round(float(np.max(errors)) if errors else -1.0, 2),
            "diameter_abs_error_mm_mean": round(float(np.mean(errors)) if errors else -1.0, 2)}


def _diameter_errors(phantom: Phantom, lesions: Sequence[Any]) -> list[float]:
    """|measured − true| longest diameter for truth lesions ≥ 10 mm, matched by centroid."""
    errors = []
    for truth in phantom.lesions:
        if truth.longest_diameter_mm < 10:
            continue
        if not lesions:  # a missed lesion counts as measured 0 mm
            errors.append(truth.longest_diameter_mm)
            continue
        nearest = min(lesions, key=lambda m: float(np.linalg.norm(
            np.subtract(m.centroid_zyx, truth.centroid_zyx) * phantom.spacing[::-1])))
        errors.append(abs(nearest.longest_diameter_mm - truth.longest_diameter_mm))
    return errors


def _write_bundle_toml(out_dir: Path, record: dict[str, Any], metrics: dict[str, Any]) -> None:
    config = record["config"]
    lines = [
        f'name = "{BUNDLE_NAME}"',
        f'version = "{BUNDLE_VERSION}"',
        'family = "segmentation"',
        'intended_use = "RESEARCH USE ONLY — not for diagnostic use. Liver and liver-tumour '
        'segmentation on contrast-enhanced liver MRI (arterial + portal venous) or CT."',
        'description = "MONAI 3-D UNet, 2 input channels (arterial, portal venous), '
        'outputs background/liver/tumour logits."',
        'model_file = "model.onnx"',
        "",
        "[inputs]",
        'phases = ["AP", "PVP"]',
        "",
        "[preprocessing]",
        f"spacing_mm = {list(config['spacing_xyz'])}",
        'normalisation = "robust_scale"',
        f"patch_size = {list(config['patch_zyx'])}",
        "",
        "[outputs]",
        f"labels = {json.dumps(list(config['classes']))}",
        'output_activation = "logits"',
        "",
        "[thresholds]",
        "min_lesion_ml = 0.2",
        "organ_margin_mm = 5.0",
        "",
        "[training]",
        f'data = "{record["cases"]} synthetic phantom studies (hepatica phantom seeds '
        f'{record["seed_base"]}–{record["seed_base"] + record["cases"] - 1}, 3 MR : 1 CT, '
        f'necrosis probability {record.get("necrosis_probability", 0.5)}); '
        'NO patient data — retrain on site data before any research use"',
        f'command = "{record["command"]}"',
        f"seed = {config['seed']}",
        f"steps = {config['steps']}",
        f"final_loss = {record['summary']['final_loss']:.4f}",
    ]
    if metrics:
        lines.append("metrics = { " + ", ".join(
            f"{k} = {json.dumps(v)}" for k, v in metrics.items()) + " }")
    (out_dir / "bundle.toml").write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------ any-phase bundle

ANY_BUNDLE_NAME = "liver-tumour-seg-any"
ANY_BUNDLE_VERSION = "0.2.0"
ANY_CHANNEL = "ANY"
ANY_ALTERNATIVES = ("PVP", "CT_PVP", "AP", "CT_AP", "DP", "CT_DP", "HBP", "PRE", "CT_NC")
"""What may fill the single channel, preferred first: portal venous (the liver enhances most
evenly, and it is the commonest follow-up series), then arterial, delayed, hepatobiliary, and
unenhanced last (least liver-to-neighbour contrast)."""

VALIDATION_SEQUENCES = {"MR": ("PRE", "AP", "PVP", "DP", "HBP"),
                        "CT": ("CT_NC", "CT_AP", "CT_PVP", "CT_DP")}


def any_phase_config(steps: int, seed: int, threads: int) -> Any:
    """The shipped any-phase recipe: one channel, domain-randomised, partial-label loss."""
    from inference.training.domain_randomisation import RandomisationConfig
    from inference.training.segmentation import SegmentationTrainingConfig

    return SegmentationTrainingConfig(steps=steps, seed=seed, threads=threads,
                                      randomisation=RandomisationConfig(), in_channels=1)


def any_phase_cases(count: int, seed: int, necrosis_probability: float,
                    progress: Callable[[str, int, int], None] | None = None) -> list[Any]:
    """Training phantoms as tissue maps (half MR, half CT) with added anatomy, each with
    one intensity table per phase of its modality (a patch draws one phase)."""
    from inference.training.domain_randomisation import enrich_anatomy
    from inference.training.segmentation import TrainingCase
    from plugin.research.phantom_tissues import phase_tables, tissue_map

    cases = []
    for i, (phantom_seed, spec) in enumerate(
            phantom_seeds(count, ct_every=2, necrosis_probability=necrosis_probability)):
        truth = tissue_map(phantom_seed, spec)
        tissues = enrich_anatomy(truth.tissues, truth.spacing,
                                 np.random.default_rng([seed, phantom_seed]))
        cases.append(TrainingCase((), truth.labels, truth.spacing, tissues,
                                  phase_tables(spec.modality), spec.modality))
        if progress:
            progress("phantom anatomy", i + 1, count)
    return cases


def train_any_phase_bundle(out_dir: Path, *, cases: int = 60, steps: int = 1500,
                           seed: int = 0, threads: int = 2, validation_cases: int = 3,
                           necrosis_probability: float = TRAIN_NECROSIS_PROBABILITY,
                           evaluate_studies: Sequence[Path] = (),
                           progress: Callable[[str, int, int], None] | None = None,
                           checkpoint_every: int = 0,
                           init_from: str | None = BUNDLE_NAME) -> Path:
    """Train the single-series bundle on domain-randomised phantoms, export, measure.

    ``checkpoint_every`` also exports ``checkpoints/step_<n>/model.onnx`` bundles on the way
    (to watch a long run; they do not change the weights). ``init_from`` (a bundle folder or
    shipped name; default the two-channel ``liver-tumour-seg``) starts from its weights, the
    first layer summed over its channels; None starts from random weights."""
    from inference.training.onnx_export import export_to_onnx
    from inference.training.segmentation import train_segmentation

    out_dir.mkdir(parents=True, exist_ok=True)
    config = any_phase_config(steps, seed, threads)
    training_cases = any_phase_cases(cases, seed, necrosis_probability, progress)

    def on_step(step: int, total: int, loss: float) -> None:
        if progress:
            progress(f"training (loss {loss:.3f})", step, total)

    def snapshot(step: int, model: Any) -> None:
        folder = out_dir / "checkpoints" / f"step_{step}"
        export_to_onnx(model, 1, config.patch_zyx, folder / "model.onnx")
        write_any_bundle_toml(folder, {**record, "summary": {"final_loss": 0.0,
                                                             "train_seconds": 0.0}}, {})

    record: dict[str, Any] = {"config": asdict(config), "cases": cases,
                              "seed_base": TRAIN_SEED_BASE,
                              "necrosis_probability": necrosis_probability}
    initial = None
    if init_from:
        from inference.training.warm_start import unet_from_onnx
        from plugin.research.site_training import resolve_bundle

        source = resolve_bundle(init_from)
        initial = unet_from_onnx(source.model_file, config, in_channels=1)
        record["initialised_from"] = f"{source.name} {source.version}"
    model, summary = train_segmentation(training_cases, config, on_step, initial=initial,
                                        checkpoint=snapshot, checkpoint_every=checkpoint_every)
    del training_cases
    export_to_onnx(model, 1, config.patch_zyx, out_dir / "model.onnx")
    command = (f"hepatica train segmentation --phases any --out DIR --cases {cases} "
               f"--steps {steps} --seed {seed} --necrosis-probability {necrosis_probability} "
               f"--validation-cases {validation_cases}"
               + (f" --init-from {init_from}" if init_from else " --init-from none")
               + "".join(f" --evaluate-studies {p}" for p in evaluate_studies))
    record.update(summary=summary, command=command)
    write_any_bundle_toml(out_dir, record, {})
    metrics = validate_any_bundle(out_dir, validation_cases, progress)
    for folder in evaluate_studies:
        metrics.setdefault("real", []).append(real_study_metrics(out_dir, folder, progress))
    record["metrics"] = metrics
    write_any_bundle_toml(out_dir, record, metrics)
    (out_dir / "training.json").write_text(json.dumps(record, indent=2))
    return out_dir


def validate_any_bundle(bundle_dir: Path, count: int,
                        progress: Callable[[str, int, int], None] | None = None,
                        seed_base: int = VALIDATION_SEED_BASE) -> dict[str, Any]:
    """Dice per phase on held-out MR and CT phantoms (every phase alone), served via ONNX."""
    from inference.bundle import load_bundle
    from inference.measurements import measure
    from inference.runtime import create_session
    from inference.segmentation import segment

    bundle = load_bundle(bundle_dir)
    session = create_session(bundle.model_file)
    per_phase: dict[str, dict[str, list[float]]] = {}
    errors: list[float] = []
    phantoms = [(seed_base + 2 * i + k, modality) for i in range(count)
                for k, modality in enumerate(("MR", "CT"))]
    for done, (phantom_seed, modality) in enumerate(phantoms, start=1):
        phantom = make_phantom(phantom_seed, PhantomSpec(
            modality=modality, sequences=VALIDATION_SEQUENCES[modality]))
        for phase, volume in phantom.phases.items():
            result = segment(bundle, session, [volume], phantom.spacing)
            scores = per_phase.setdefault(phase, {"liver": [], "tumour": []})
            scores["liver"].append(dice(result.labels > 0, phantom.labels > 0))
            scores["tumour"].append(dice(result.labels == 2, phantom.labels == 2))
            errors += _diameter_errors(phantom, measure(result.labels, phantom.spacing).lesions)
        if progress:
            progress("validation", done, len(phantoms))
    liver = [v for s in per_phase.values() for v in s["liver"]]
    tumour = [v for s in per_phase.values() for v in s["tumour"]]
    return {"validation": f"{len(phantoms)} held-out phantoms (seeds {seed_base}–"
                          f"{seed_base + len(phantoms) - 1}, MR and CT alternating), each "
                          "phase segmented alone",
            "dice_liver_mean": round(float(np.mean(liver)), 4),
            "dice_liver_min": round(float(np.min(liver)), 4),
            "dice_tumour_mean": round(float(np.mean(tumour)), 4),
            "dice_tumour_min": round(float(np.min(tumour)), 4),
            "diameter_abs_error_mm_mean": round(float(np.mean(errors)) if errors else -1.0, 2),
            "diameter_abs_error_mm_max": round(float(np.max(errors)) if errors else -1.0, 2),
            "per_phase": {phase: {"dice_liver": round(float(np.mean(s["liver"])), 4),
                                  "dice_tumour": round(float(np.mean(s["tumour"])), 4)}
                          for phase, s in per_phase.items()}}


def real_study_metrics(bundle_dir: Path, folder: Path,
                       progress: Callable[[str, int, int], None] | None = None
                       ) -> dict[str, Any]:
    """Liver/tumour Dice on real annotated studies (reader SEG/RTSTRUCT) under ``folder``."""
    from inference.bundle import load_bundle
    from plugin.research.annotated_studies import load_annotated_studies
    from plugin.research.segmentation_evaluation import evaluate_studies

    bundle = load_bundle(bundle_dir)
    studies, skipped = load_annotated_studies(folder, bundle.inputs)
    result = evaluate_studies(bundle, studies, skipped, progress)
    rows = result["studies"]
    return {"source": str(folder), "studies": len(rows), "skipped": len(skipped),
            "inputs": [f"{r['modality']} {'+'.join(r['phases'])} {r['slices']} slices"
                       for r in rows],
            "dice_liver": [r["dice_liver"] for r in rows if r["dice_liver"] is not None],
            "hd95_liver_mm": [r["hd95_liver_mm"] for r in rows
                              if r["hd95_liver_mm"] is not None],
            "dice_tumour": [r["dice_tumour"] for r in rows if r["dice_tumour"] is not None]}


def write_any_bundle_toml(out_dir: Path, record: dict[str, Any],
                          metrics: dict[str, Any]) -> Path:
    """bundle.toml of the any-phase bundle (``[inputs.alternatives]`` names the phases)."""
    from inference.training.response_bundle import write_bundle_toml

    record = {"command": "(checkpoint)", **record}
    config = record["config"]
    randomisation = config["randomisation"] or {}
    training: dict[str, Any] = {
        "data": f"{record['cases']} synthetic phantom studies as tissue maps (hepatica phantom "
                f"seeds {record['seed_base']}–{record['seed_base'] + record['cases'] - 1}, "
                f"MR and CT alternating, necrosis probability {record['necrosis_probability']}"
                "), subcutaneous fat, ribs, bowel, stomach and lung bases added; every patch "
                "re-drawn "
                "with one random phase's intensities or random ones (SynthSeg-style domain "
                "randomisation); NO patient data — measure on site data (hepatica evaluate "
                "segmentation) before any research use",
        "command": record["command"],
        "initialised_from": record.get("initialised_from", "random weights") + (
            " (first layer summed over its two channels)" if "initialised_from" in record
            else ""),
        "seed": config["seed"],
        "steps": config["steps"],
        "final_loss": round(float(record["summary"]["final_loss"]), 4),
        "train_seconds": round(float(record["summary"]["train_seconds"])),
        "network": {"channels": list(config["channels"]), "strides": list(config["strides"]),
                    "num_res_units": config["num_res_units"]},
        "randomisation": {k: list(v) if isinstance(v, tuple | list) else v
                          for k, v in randomisation.items()},
    }
    if metrics:
        training["metrics"] = metrics
    document = {
        "name": ANY_BUNDLE_NAME, "version": ANY_BUNDLE_VERSION, "family": "segmentation",
        "intended_use": "RESEARCH USE ONLY — not for diagnostic use. Liver and liver-tumour "
                        "segmentation from one series of any contrast phase (or unenhanced), "
                        "CT or MR, when a study lacks what a multi-phase bundle needs.",
        "description": "MONAI 3-D UNet, 1 input channel (one series: portal venous preferred, "
                       "see inputs.alternatives), outputs background/liver/tumour logits.",
        "model_file": "model.onnx",
        "inputs": {"phases": [ANY_CHANNEL], "alternatives": {ANY_CHANNEL: list(ANY_ALTERNATIVES)}},
        "preprocessing": {"spacing_mm": list(config["spacing_xyz"]),
                          "normalisation": "robust_scale",
                          "patch_size": list(config["patch_zyx"])},
        "outputs": {"labels": list(config["classes"]), "output_activation": "logits"},
        "thresholds": {"min_lesion_ml": 0.2, "organ_margin_mm": 5.0},
        "training": training,
    }
    return write_bundle_toml(out_dir, document)
