"""Import a trained nnU-Net v2 model folder as a Hepatica bundle (torch and nnunetv2 needed).

The folder is what ``nnUNetv2_train`` leaves (and what TotalSegmentator downloads):
``dataset.json``, ``plans.json`` and ``fold_*/checkpoint_final.pth``. The network is rebuilt
the way ``nnUNetPredictor`` rebuilds it (the trainer class named in the checkpoint, from the
plans), every chosen fold's weights are loaded and the folds are exported as ONE ONNX model
whose output stacks their logits (serving averages them as nnU-Net does). Everything else
nnU-Net's prediction depends on is copied into ``bundle.toml``; anything serving would not
reproduce exactly (cascades, 2-D models, region-based training, custom preprocessors,
resampling or normalisation) is refused with the reason.

The checkpoints are Python pickles: import only models from a source you trust.
"""

from __future__ import annotations

import inspect
import json
import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inference.importers.common import ImportRefused, label_map, parse_labels, slug, write_bundle

__all__ = ["import_nnunet"]

log = logging.getLogger(__name__)

READERS = {"SimpleITKIO": "zyx", "NibabelIO": "xyz"}
"""nnU-Net image readers Hepatica can stand in for, and the array axis order each returns."""
SCHEMES = {"CTNormalization", "ZScoreNormalization", "NoNormalization",
           "RescaleTo01Normalization"}
RESAMPLING = "resample_data_or_seg_to_shape"


def import_nnunet(model_dir: str | Path, out_dir: str | Path,
                  labels: str | Mapping[str, str | Sequence[str]] | None = None,
                  folds: Sequence[int | str] | str | None = None, *,
                  phases: Sequence[str] | None = None, name: str | None = None,
                  version: str = "1.0.0", orientation: str = "none",
                  checkpoint: str = "checkpoint_final.pth", mirroring: bool = True,
                  step_size: float | None = None) -> Path:
    """Write a bundle for the nnU-Net model in ``model_dir`` into ``out_dir``; returns it.

    ``labels`` maps Hepatica's ``liver``/``tumour`` to the model's label names
    (``"liver=liver,tumour=liver_tumor"``); ``folds`` picks folds (default: every
    ``fold_N`` with a checkpoint, as ``nnUNetPredictor`` does); ``phases`` names the Hepatica
    phase of each input channel (default ``PVP`` for one-channel models); ``orientation`` the
    axis codes the model's training images had when read (``"RAS"`` for TotalSegmentator,
    ``"none"`` to pass volumes in DICOM order); ``mirroring`` and ``step_size`` override
    nnU-Net's test-time mirroring and window step (defaults: as ``nnUNetPredictor``).
    """
    source = Path(model_dir)
    target = Path(out_dir)
    dataset, plans = _read_json(source, "dataset.json"), _read_json(source, "plans.json")
    chosen = _folds(source, folds, checkpoint)
    checkpoints = [_load_checkpoint(source / f"fold_{f}" / checkpoint) for f in chosen]
    first = checkpoints[0]
    configuration = str(first["init_args"]["configuration"])
    trainer_name = str(first["trainer_name"])
    settings, patch = _settings(plans, dataset, configuration, source)
    model_labels = _model_labels(dataset, source)
    mapping = label_map(model_labels, parse_labels(labels), str(source))
    channel_names = [str(v) for _, v in sorted(
        (int(k), v) for k, v in _channel_names(dataset).items())]
    channel_phases = _phases(phases, channel_names)

    networks = [_network(plans, dataset, configuration, trainer_name, c) for c in checkpoints]
    target.mkdir(parents=True, exist_ok=True)
    onnx_path = target / "model.onnx"
    max_diff = _export(networks, len(channel_names), patch, onnx_path)

    mirror = first.get("inference_allowed_mirroring_axes")
    settings.update({
        "trainer": trainer_name, "plans": str(plans.get("plans_name", "")),
        "configuration": configuration, "folds": [_fold_value(f) for f in chosen],
        "num_classes": len(model_labels),
        "step_size": 0.5 if step_size is None else float(step_size),
        "gaussian": True,
        "mirror_axes": [int(a) for a in mirror] if (mirror is not None and mirroring) else [],
        "logits_dtype": "float16",
    })
    document = _document(source, dataset, plans, settings, patch, model_labels, mapping,
                         channel_phases, name, version, orientation, first, max_diff)
    return write_bundle(target, document)


# ------------------------------------------------------------------------------------ reading


def _read_json(folder: Path, name: str) -> dict[str, Any]:
    path = folder / name
    if not path.is_file():
        raise ImportRefused(f"{folder}: no {name} (not an nnU-Net v2 model folder: it needs "
                            "dataset.json, plans.json and fold_*/checkpoint_final.pth)")
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ImportRefused(f"{path}: not a JSON object")
    return data


def _folds(folder: Path, folds: Sequence[int | str] | str | None,
           checkpoint: str) -> list[str]:
    if folds is None:
        found = sorted((p.name[len("fold_"):] for p in folder.glob("fold_*")
                        if p.name != "fold_all" and (p / checkpoint).is_file()),
                       key=lambda f: (not f.isdigit(), int(f) if f.isdigit() else 0))
        if not found:
            raise ImportRefused(f"{folder}: no fold_N/{checkpoint} found")
        return found
    wanted = [str(f).strip() for f in (folds.split(",") if isinstance(folds, str) else folds)]
    for fold in wanted:
        if not (folder / f"fold_{fold}" / checkpoint).is_file():
            raise ImportRefused(f"{folder}: fold {fold!r} has no {checkpoint}")
    return wanted


def _fold_value(fold: str) -> int | str:
    return int(fold) if fold.isdigit() else fold


def _load_checkpoint(path: Path) -> dict[str, Any]:
    import torch

    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    needed = ("network_weights", "trainer_name", "init_args")
    if not isinstance(checkpoint, dict) or not all(k in checkpoint for k in needed):
        raise ImportRefused(f"{path}: not an nnU-Net v2 checkpoint (needs keys {needed})")
    return checkpoint


def _channel_names(dataset: Mapping[str, Any]) -> dict[str, Any]:
    names = dataset.get("channel_names", dataset.get("modality"))
    if not isinstance(names, Mapping) or not names:
        raise ImportRefused("dataset.json: no channel_names")
    return dict(names)


def _model_labels(dataset: Mapping[str, Any], source: str | Path) -> list[str]:
    """Model output channels in order: dataset.json labels by value, the ignore label left out."""
    table = dataset.get("labels")
    if not isinstance(table, Mapping):
        raise ImportRefused(f"{source}/dataset.json: no labels table")
    pairs = []
    for label, value in table.items():
        if isinstance(value, list | tuple):
            raise ImportRefused(f"{source}: region-based model (label {label!r} is the region "
                                f"{value}); Hepatica serves softmax label models only")
        if label != "ignore":
            pairs.append((int(value), str(label)))
    pairs.sort()
    if [v for v, _ in pairs] != list(range(len(pairs))):
        raise ImportRefused(f"{source}: labels must be 0..N-1, got {sorted(pairs)}")
    return [label for _, label in pairs]


def _phases(phases: Sequence[str] | None, channels: Sequence[str]) -> list[str]:
    if phases is None:
        if len(channels) == 1:
            return ["PVP"]
        raise ImportRefused(f"the model reads {len(channels)} channels {list(channels)}; name "
                            "the Hepatica phase of each with --phases (e.g. AP,PVP)")
    chosen = [p.strip() for p in phases]
    if len(chosen) != len(channels):
        raise ImportRefused(f"--phases names {len(chosen)} phases for {len(channels)} "
                            f"channels {list(channels)}")
    return chosen


def _settings(plans: Mapping[str, Any], dataset: Mapping[str, Any], configuration: str,
              source: Path) -> tuple[dict[str, Any], list[int]]:
    """The ``[nnunet]`` table from the plans, refusing what serving would not reproduce."""
    configs = plans.get("configurations", {})
    if configuration not in configs:
        raise ImportRefused(f"{source}/plans.json: no configuration {configuration!r}")
    config = _resolved(configs, configuration)
    if config.get("previous_stage"):
        raise ImportRefused(f"{source}: {configuration} is a cascade stage (needs the "
                            f"segmentation of {config['previous_stage']!r}); not supported")
    patch = [int(p) for p in config["patch_size"]]
    if len(patch) != 3:
        raise ImportRefused(f"{source}: {configuration} is a 2-D configuration; Hepatica "
                            "imports 3-D nnU-Net models (3d_fullres, 3d_lowres)")
    reader = str(plans.get("image_reader_writer", "SimpleITKIO"))
    if reader not in READERS:
        raise ImportRefused(f"{source}: image reader {reader!r} is not one Hepatica can stand "
                            f"in for ({sorted(READERS)})")
    if config.get("preprocessor_name", "DefaultPreprocessor") != "DefaultPreprocessor":
        raise ImportRefused(f"{source}: custom preprocessor {config['preprocessor_name']!r}")
    if plans.get("label_manager", "LabelManager") != "LabelManager":
        raise ImportRefused(f"{source}: custom label manager {plans['label_manager']!r}")
    for key in ("resampling_fn_data", "resampling_fn_probabilities"):
        if config.get(key) != RESAMPLING:
            raise ImportRefused(f"{source}: {key} is {config.get(key)!r}; only nnU-Net's "
                                f"{RESAMPLING} is reproduced")
    schemes = list(config["normalization_schemes"])
    unknown = sorted(set(schemes) - SCHEMES)
    if unknown:
        raise ImportRefused(f"{source}: normalisation {unknown} is not reproduced "
                            f"(supported: {sorted(SCHEMES)})")
    properties = plans.get("foreground_intensity_properties_per_channel",
                           plans.get("foreground_intensity_properties_by_modality", {}))
    names = _channel_names(dataset)
    if len(schemes) != len(names):
        raise ImportRefused(f"{source}: {len(schemes)} normalisation schemes for "
                            f"{len(names)} channels")
    channels = []
    for index, scheme in enumerate(schemes):
        entry: dict[str, Any] = {"name": str(names[str(index)]) if str(index) in names
                                 else str(index), "scheme": scheme,
                                 "use_mask_for_norm": bool(config["use_mask_for_norm"][index])}
        stats = properties.get(str(index), {})
        for key in ("mean", "std", "percentile_00_5", "percentile_99_5"):
            if key in stats:
                entry[key] = float(stats[key])
        if scheme == "CTNormalization" and len(entry) < 7:
            raise ImportRefused(f"{source}: channel {index} uses CTNormalization but the plans "
                                "lack its foreground intensity properties")
        channels.append(entry)
    settings: dict[str, Any] = {
        "axes": READERS[reader],
        "transpose_forward": [int(a) for a in plans["transpose_forward"]],
        "transpose_backward": [int(a) for a in plans["transpose_backward"]],
        "spacing": [float(s) for s in config["spacing"]],
        "patch_size": patch,
        "resampling_data": _resampling(config, "resampling_fn_data_kwargs", source),
        "resampling_probabilities": _resampling(config, "resampling_fn_probabilities_kwargs",
                                                source),
        "channels": channels,
    }
    return settings, patch


def _resolved(configs: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A configuration with what it ``inherits_from`` filled in (as nnU-Net's PlansManager)."""
    config = dict(configs[name])
    parent = config.pop("inherits_from", None)
    if parent is None:
        return config
    merged = _resolved(configs, parent)
    merged.update(config)
    return merged


def _resampling(config: Mapping[str, Any], key: str, source: Path) -> dict[str, Any]:
    kwargs = dict(config.get(key, {}))
    if kwargs.get("is_seg"):
        raise ImportRefused(f"{source}: {key} resamples as segmentation; not reproduced")
    allowed = {"is_seg", "order", "order_z", "force_separate_z",
               "separate_z_anisotropy_threshold"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ImportRefused(f"{source}: {key} has options {unknown} Hepatica does not know")
    force = kwargs.get("force_separate_z")
    out: dict[str, Any] = {"order": int(kwargs.get("order", 3)),
                           "order_z": int(kwargs.get("order_z", 0)),
                           "force_separate_z": "auto" if force is None else bool(force)}
    if "separate_z_anisotropy_threshold" in kwargs:
        out["anisotropy_threshold"] = float(kwargs["separate_z_anisotropy_threshold"])
    else:
        from nnunetv2.configuration import ANISO_THRESHOLD

        out["anisotropy_threshold"] = float(ANISO_THRESHOLD)
    return out


# ---------------------------------------------------------------------------------- network


def _network(plans: Mapping[str, Any], dataset: Mapping[str, Any], configuration: str,
             trainer_name: str, checkpoint: Mapping[str, Any]) -> Any:
    """The fold's network, built as ``nnUNetPredictor`` builds it, in eval mode."""
    from nnunetv2.inference.predict_from_raw_data import recursive_find_trainer_class_by_name
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    manager = PlansManager(dict(plans))
    config = manager.get_configuration(configuration)
    inputs = determine_num_input_channels(manager, config, dict(dataset))
    outputs = manager.get_label_manager(dict(dataset)).num_segmentation_heads
    trainer = recursive_find_trainer_class_by_name(trainer_name)
    if trainer is None:
        raise ImportRefused(f"trainer class {trainer_name!r} is not installed (a custom "
                            "trainer: install the package that defines it, then import)")
    if "plans_manager" in inspect.signature(trainer.build_network_architecture).parameters:
        network = trainer.build_network_architecture(manager, config, inputs, outputs,
                                                     enable_deep_supervision=False)
    else:
        network = trainer.build_network_architecture(
            config.network_arch_class_name, config.network_arch_init_kwargs,
            config.network_arch_init_kwargs_req_import, inputs, outputs,
            enable_deep_supervision=False)
    network.load_state_dict(checkpoint["network_weights"])
    return network.eval()


def _export(networks: Sequence[Any], in_channels: int, patch: Sequence[int],
            path: Path) -> float:
    """Export the folds as one ONNX model (their logits stacked on the channel axis) and
    return the largest difference between ONNX Runtime and torch on a random patch."""
    import torch

    from inference.runtime import OnnxSession
    from inference.training.onnx_export import export_to_onnx

    class Stacked(torch.nn.Module):
        """All folds in one graph: serving blends each fold's windows separately, as
        nnU-Net does, and averages them at the end."""

        def __init__(self, members: Sequence[torch.nn.Module]) -> None:
            super().__init__()
            self.members = torch.nn.ModuleList(members)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([member(x) for member in self.members], dim=1)

    model = Stacked(networks).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_to_onnx(model, in_channels, patch, path)
    sample = np.random.default_rng(0).normal(size=(2, in_channels, *patch)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(sample)).numpy()
    got = OnnxSession(path, ["CPUExecutionProvider"]).run(sample)
    diff = float(np.max(np.abs(got - expected)))
    log.info("exported %s: ONNX vs torch max |diff| %.3g", path, diff)
    if not diff < 1e-3 * max(1.0, float(np.max(np.abs(expected)))):
        raise ImportRefused(f"the exported ONNX model differs from torch by {diff:.3g}")
    return diff


# --------------------------------------------------------------------------------- bundle.toml


def _document(source: Path, dataset: Mapping[str, Any], plans: Mapping[str, Any],
              settings: dict[str, Any], patch: list[int], model_labels: list[str],
              mapping: Mapping[str, tuple[str, ...]], phases: list[str], name: str | None,
              version: str, orientation: str, checkpoint: Mapping[str, Any],
              max_diff: float) -> dict[str, Any]:
    dataset_name = str(plans.get("dataset_name", dataset.get("name", source.name)))
    configuration = settings["configuration"]
    target_xyz = _target_spacing_xyz(settings)
    folds = ", ".join(str(f) for f in settings["folds"])
    return {
        "name": name or f"nnunet-{slug(dataset_name)}-{slug(configuration)}",
        "version": version,
        "family": "segmentation",
        "intended_use": "Research use only: an imported nnU-Net v2 model; validate it on "
                        "local data before relying on it. Not for diagnostic use.",
        "description": f"nnU-Net v2 {configuration} ({settings['trainer']}, "
                       f"{settings['plans']}), folds {folds}, of {dataset_name}; imported by "
                       "hepatica models import nnunet",
        "model_file": "model.onnx",
        "inputs": {"phases": phases},
        "preprocessing": {"kind": "nnunet", "spacing_mm": target_xyz,
                          "normalisation": "nnunet", "patch_size": patch,
                          "orientation": orientation},
        "outputs": {"labels": model_labels, "output_activation": "logits",
                    "map": {k: list(v) for k, v in mapping.items()}},
        "training": {"data": str(dataset.get("description", dataset_name)),
                     "source": str(source), "framework": "nnU-Net v2",
                     "epochs": int(checkpoint.get("current_epoch", 0)),
                     "onnx_max_abs_diff": max_diff},
        "nnunet": settings,
    }


def _target_spacing_xyz(settings: Mapping[str, Any]) -> list[float]:
    """The plans' target spacing (network axis order) as Hepatica's (x, y, z)."""
    spacing = [0.0, 0.0, 0.0]
    for network_axis, array_axis in enumerate(settings["transpose_forward"]):
        spacing[array_axis] = float(settings["spacing"][network_axis])
    return spacing[::-1] if settings["axes"] == "zyx" else spacing
