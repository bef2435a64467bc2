"""``hepatica train segmentation --studies DIR``: fine-tune on a site's annotated studies.

The studies are read by ``annotated_studies`` (reader SEG/RTSTRUCT → labels, bundle channels
filled as serving fills them). Training starts from a shipped bundle's weights (rebuilt in
torch from its ONNX file, ``inference.training.warm_start``) or from scratch, keeps the
source bundle's inputs, grid and thresholds so the result is served the same way, and uses
the partial-label loss so a liver-only or tumour-only outline teaches only what it says. The
written ``bundle.toml`` records counts (studies, modalities, what was drawn), never an
identifier, and the command.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from inference.bundle import Bundle, BundleInputs, load_bundle
from plugin.research.annotated_studies import AnnotatedStudy, load_annotated_studies

__all__ = ["SITE_BUNDLE_NAME", "resolve_bundle", "train_on_studies"]

Progress = Callable[[str, int, int], None]
SITE_BUNDLE_NAME = "liver-tumour-seg-site"
SHIPPED = Path(__file__).resolve().parents[2] / "inference" / "bundles"


def resolve_bundle(name_or_path: str | Path) -> Bundle:
    """A bundle folder, or the name of a shipped bundle (``liver-tumour-seg-any``)."""
    path = Path(name_or_path)
    if not (path / "bundle.toml").is_file() and (SHIPPED / str(name_or_path)).is_dir():
        path = SHIPPED / str(name_or_path)
    return load_bundle(path)


def _scratch_inputs() -> BundleInputs:
    from plugin.research.training import ANY_ALTERNATIVES, ANY_CHANNEL

    return BundleInputs(phases=(ANY_CHANNEL,), alternatives={ANY_CHANNEL: ANY_ALTERNATIVES})


def _network(source: Bundle | None) -> dict[str, Any]:
    """The source network's architecture: ``[training] network``, else its training.json."""
    if source is None:
        return {}
    if isinstance(source.training.get("network"), dict):
        return dict(source.training["network"])
    record = source.path / "training.json"
    if record.is_file():
        config = json.loads(record.read_text()).get("config", {})
        return {k: config[k] for k in ("channels", "strides", "num_res_units") if k in config}
    return {}


def site_config(source: Bundle | None, steps: int, seed: int, threads: int,
                learning_rate: float) -> Any:
    """Training settings: the source bundle's grid and network, randomised real patches."""
    from inference.training.domain_randomisation import RandomisationConfig
    from inference.training.segmentation import SegmentationTrainingConfig

    network = _network(source)
    config = SegmentationTrainingConfig(
        steps=steps, seed=seed, threads=threads, learning_rate=learning_rate,
        randomisation=RandomisationConfig(),
        in_channels=len(source.inputs.phases) if source else 1)
    if network:
        config = replace(config, channels=tuple(network.get("channels", config.channels)),
                         strides=tuple(network.get("strides", config.strides)),
                         num_res_units=int(network.get("num_res_units",
                                                       config.num_res_units)))
    if source is not None:
        config = replace(config, spacing_xyz=source.spacing_mm, patch_zyx=source.patch_size,
                         classes=source.outputs)
    return config


def train_on_studies(studies_dir: Path, out_dir: Path, *, from_bundle: str | Path | None = None,
                     steps: int = 300, seed: int = 0, threads: int = 2,
                     learning_rate: float = 5e-4, name: str = "", version: str = "0.1.0",
                     progress: Progress | None = None) -> dict[str, Any]:
    """Fine-tune (or train) on the annotated studies under ``studies_dir``; returns the
    training record (also in ``out_dir/training.json``)."""
    from inference.training.onnx_export import export_to_onnx
    from inference.training.segmentation import TrainingCase, train_segmentation
    from inference.training.warm_start import unet_from_onnx

    source = resolve_bundle(from_bundle) if from_bundle else None
    inputs = source.inputs if source else _scratch_inputs()
    studies, skipped = load_annotated_studies(studies_dir, inputs)
    if not studies:
        reasons = "; ".join(sorted({s.reason for s in skipped})) or "no DICOM studies found"
        raise ValueError(f"no usable annotated study under {studies_dir}: {reasons}")
    config = site_config(source, steps, seed, threads, learning_rate)
    initial = unet_from_onnx(source.model_file, config) if source else None
    cases = [TrainingCase(list(s.channels), s.labels, s.spacing) for s in studies]

    def on_step(step: int, total: int, loss: float) -> None:
        if progress:
            progress(f"training (loss {loss:.3f})", step, total)

    model, summary = train_segmentation(cases, config, on_step, initial=initial)
    out_dir.mkdir(parents=True, exist_ok=True)
    export_to_onnx(model, config.in_channels, config.patch_zyx, out_dir / "model.onnx")
    record = {"config": asdict(config), "summary": summary,
              "data": _data_counts(studies, len(skipped)),
              "fine_tuned_from": f"{source.name} {source.version}" if source else None,
              "command": _command(from_bundle, steps, seed, learning_rate)}
    _write_toml(out_dir, source, inputs, config, record, name or _default_name(source),
                version)
    load_bundle(out_dir)  # what was written must serve
    (out_dir / "training.json").write_text(json.dumps(record, indent=2, default=str))
    return record


def _default_name(source: Bundle | None) -> str:
    return f"{source.name}-site" if source else SITE_BUNDLE_NAME


def _command(from_bundle: str | Path | None, steps: int, seed: int, rate: float) -> str:
    origin = f" --from-bundle {Path(from_bundle).name}" if from_bundle else ""
    return (f"hepatica train segmentation --studies DIR{origin} --out DIR --steps {steps} "
            f"--seed {seed} --learning-rate {rate}")


def _data_counts(studies: Sequence[AnnotatedStudy], skipped: int) -> dict[str, Any]:
    """What the bundle learnt from, as counts only (no UIDs, names or dates)."""
    drawn = Counter("liver+tumour" if s.liver_drawn and s.tumour_drawn
                    else "liver only" if s.liver_drawn else "tumour only" for s in studies)
    return {"studies": len(studies), "skipped": skipped,
            "modalities": dict(Counter(s.modality for s in studies)),
            "phases": dict(Counter("+".join(s.phases) for s in studies)),
            "reader_outlines": dict(drawn)}


def _write_toml(out_dir: Path, source: Bundle | None, inputs: BundleInputs, config: Any,
                record: dict[str, Any], name: str, version: str) -> None:
    from inference.training.response_bundle import write_bundle_toml

    data = record["data"]
    origin = (f"fine-tuned from {record['fine_tuned_from']}" if source
              else "trained from random weights")
    text = (f"{data['studies']} site studies with a reader's SEG/RTSTRUCT ("
            + ", ".join(f"{k}: {v}" for k, v in data["reader_outlines"].items()) + "; "
            + ", ".join(f"{k}: {v}" for k, v in data["modalities"].items())
            + f"), {origin}; identities not recorded")
    phases: dict[str, Any] = {"phases": list(inputs.phases)}
    if inputs.alternatives:
        phases["alternatives"] = {k: list(v) for k, v in inputs.alternatives.items()}
    training: dict[str, Any] = {
        "data": text, "command": record["command"], "seed": config.seed,
        "steps": config.steps, "learning_rate": config.learning_rate,
        "final_loss": round(float(record["summary"]["final_loss"]), 4),
        "studies": data["studies"], "studies_skipped": data["skipped"],
        "network": {"channels": list(config.channels), "strides": list(config.strides),
                    "num_res_units": config.num_res_units}}
    if source:
        training["fine_tuned_from"] = record["fine_tuned_from"]
    document = {
        "name": name, "version": version, "family": "segmentation",
        "intended_use": "RESEARCH USE ONLY — not for diagnostic use. Liver and liver-tumour "
                        "segmentation, trained on this site's annotated studies.",
        "description": f"MONAI 3-D UNet, {len(inputs.phases)} input channel(s) "
                       f"({', '.join(inputs.phases)}); {origin}.",
        "model_file": "model.onnx",
        "inputs": phases,
        "preprocessing": {"spacing_mm": list(config.spacing_xyz),
                          "normalisation": "robust_scale",
                          "patch_size": list(config.patch_zyx)},
        "outputs": {"labels": list(config.classes), "output_activation": "logits"},
        "thresholds": dict(source.thresholds) if source else {"min_lesion_ml": 0.2,
                                                               "organ_margin_mm": 5.0},
        "training": training,
    }
    write_bundle_toml(out_dir, document)
