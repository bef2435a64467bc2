"""Import a MONAI model-zoo bundle as a Hepatica bundle (torch and monai needed).

A zoo bundle holds ``configs/inference.json`` (or ``.yaml``), ``configs/metadata.json`` and
``models/model.pt`` (weights of ``network_def``) or ``models/model.ts`` (TorchScript). The
config is read with ``monai.bundle.ConfigParser`` (references and expressions resolved, MONAI's
own defaults filled in from the installed transform classes), and each pre-processing transform
is translated into a ``[[monai.steps]]`` entry that ``inference.monai_serving`` replays without
torch. Only transforms whose arithmetic serving reproduces are carried over; any other is
refused by name (``ImportRefused``), rather than served differently from how it was validated.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inference.importers.common import ImportRefused, label_map, parse_labels, slug, write_bundle

__all__ = ["import_monai_bundle"]

log = logging.getLogger(__name__)

PASS_THROUGH = {"LoadImaged", "LoadImage", "EnsureChannelFirstd", "EnsureChannelFirst",
                "EnsureTyped", "EnsureType", "ToTensord", "ToTensor", "ToDeviced", "ToDevice",
                "AddChanneld", "AddChannel", "Identityd", "Identity"}
"""Transforms that do not change the image values or grid (loading, typing, devices)."""
POST_PASS_THROUGH = {"SaveImaged", "SaveImage", "EnsureTyped", "EnsureType", "ToTensord",
                     "ToTensor", "ToDeviced", "ToDevice", "Identityd", "Identity"}
CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")


def import_monai_bundle(bundle_dir: str | Path, out_dir: str | Path,
                        labels: str | Mapping[str, str | Sequence[str]] | None = None, *,
                        phases: Sequence[str] | None = None, name: str | None = None,
                        version: str | None = None) -> Path:
    """Write a Hepatica bundle for the MONAI bundle in ``bundle_dir`` into ``out_dir``.

    ``labels`` maps Hepatica's ``liver``/``tumour`` to the output channel names of the
    bundle's metadata (``channel_def``) or to channel numbers; ``phases`` names the Hepatica
    phase of each input channel (default ``PVP`` for one channel).
    """
    from monai.bundle.config_parser import ConfigParser

    source = Path(bundle_dir)
    config_file = next((source / "configs" / n for n in CONFIG_NAMES
                        if (source / "configs" / n).is_file()), None)
    if config_file is None:
        raise ImportRefused(f"{source}: no configs/inference.json (not a MONAI bundle?)")
    parser = ConfigParser()
    parser.read_config(str(config_file))
    meta_file = source / "configs" / "metadata.json"
    if meta_file.is_file():
        parser.read_meta(str(meta_file))
    parser["bundle_root"] = str(source)
    metadata = dict(parser.get("_meta_", {}) or {})

    image_key = _image_key(parser)
    steps = _preprocessing(parser, image_key)
    inferer = _inferer(parser)
    post = _postprocessing(parser)
    network = _network(parser, source)
    in_channels = _in_channels(parser, metadata)
    target = Path(out_dir)
    target.mkdir(parents=True, exist_ok=True)
    num_classes, max_diff = _export(network, in_channels, inferer["roi_size"],
                                    target / "model.onnx")
    model_labels = _channel_names(metadata, num_classes)
    mapping = label_map(model_labels, _labels_by_name(parse_labels(labels), model_labels),
                        str(source))
    channel_phases = _phases(phases, in_channels)
    pixdim = next((s["pixdim"] for s in steps if s["op"] == "spacing"), [1.0, 1.0, 1.0])
    bundle_name = str(metadata.get("name", source.name))
    document = {
        "name": name or f"monai-{slug(bundle_name)}",
        "version": version or str(metadata.get("version", "1.0.0")),
        "family": "segmentation",
        "intended_use": "Research use only: an imported MONAI bundle; validate it on local "
                        "data before relying on it. Not for diagnostic use.",
        "description": f"MONAI bundle {bundle_name} {metadata.get('version', '')}; imported "
                       "by hepatica models import monai-bundle".replace("  ", " "),
        "model_file": "model.onnx",
        "inputs": {"phases": channel_phases},
        "preprocessing": {"kind": "monai", "spacing_mm": [float(p) for p in pixdim],
                          "normalisation": "monai", "patch_size": inferer["roi_size"],
                          "orientation": "none"},
        "outputs": {"labels": model_labels, "output_activation": "logits",
                    "map": {k: list(v) for k, v in mapping.items()}},
        "training": {"data": str(metadata.get("data_source", metadata.get("description",
                                                                            bundle_name))),
                     "source": str(source), "framework": "MONAI bundle",
                     "license": str(metadata.get("license", "")),
                     "onnx_max_abs_diff": max_diff},
        "monai": {"num_classes": num_classes, **post, "inferer": inferer, "steps": steps},
    }
    return write_bundle(target, document)


# ----------------------------------------------------------------------------- config reading


def _class_name(target: object) -> str:
    if not isinstance(target, str):
        raise ImportRefused(f"transform target {target!r} is not a class name")
    return target.rsplit(".", 1)[-1]


def _arguments(parser: Any, base: str, item: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The transform's arguments as MONAI would call it: the installed class's defaults,
    overridden by the config's values with references and expressions resolved."""
    import monai.inferers
    import monai.transforms

    cls = getattr(monai.transforms, name, None) or getattr(monai.inferers, name, None)
    args: dict[str, Any] = {}
    if cls is not None:
        args = {k: p.default for k, p in inspect.signature(cls).parameters.items()
                if p.default is not inspect.Parameter.empty}
    for key in item:
        if not key.startswith("_"):
            args[key] = parser.get_parsed_content(f"{base}#{key}")
    return args


def _keys(args: Mapping[str, Any]) -> list[str]:
    keys = args.get("keys", [])
    return [keys] if isinstance(keys, str) else [str(k) for k in keys]


def _per_key(value: Any, keys: Sequence[str], key: str) -> Any:
    """A dictionary transform's per-key argument (a sequence with one entry per key)."""
    if isinstance(value, list | tuple) and len(value) == len(keys) and len(keys) > 1:
        return value[keys.index(key)]
    if isinstance(value, list | tuple) and len(value) == 1:
        return value[0]
    return value


def _transforms(parser: Any, section: str) -> list[tuple[str, str, Mapping[str, Any]]]:
    raw = parser.get(section)
    if raw is None:
        return []
    if not isinstance(raw, Mapping) or _class_name(raw.get("_target_")) != "Compose":
        raise ImportRefused(f"'{section}' is not a Compose of transforms")
    items = raw.get("transforms", [])
    return [(f"{section}#transforms#{i}", _class_name(t.get("_target_")), t)
            for i, t in enumerate(items)]


def _image_key(parser: Any) -> str:
    for base, name, item in _transforms(parser, "preprocessing"):
        if name in ("LoadImaged", "LoadImage"):
            keys = _keys(_arguments(parser, base, item, name))
            if len(keys) != 1:
                raise ImportRefused(f"LoadImaged loads {keys}; Hepatica imports bundles with "
                                    "one image key")
            return keys[0]
    return "image"


def _preprocessing(parser: Any, image_key: str) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    for base, name, item in _transforms(parser, "preprocessing"):
        args = _arguments(parser, base, item, name)
        keys = _keys(args)
        if name.endswith("d") and keys and image_key not in keys:
            continue  # does not touch the image
        step = _step(name, args, keys, image_key)
        if step is not None:
            steps.append(step)
    return steps


def _step(name: str, args: Mapping[str, Any], keys: Sequence[str],
          image_key: str) -> dict[str, Any] | None:
    """One transform as a serving step, None for a pass-through, or ``ImportRefused``."""
    if name in PASS_THROUGH:
        dtype = args.get("dtype")
        if name.startswith("LoadImage") and dtype not in (None, np.float32, "float32"):
            raise ImportRefused(f"{name}(dtype={dtype!r}): only float32 images are reproduced")
        return None
    if name in ("CastToTyped", "CastToType"):
        if str(_per_key(args.get("dtype"), keys, image_key)) not in (
                "float32", "<class 'numpy.float32'>", "torch.float32"):
            raise ImportRefused(f"{name} to {args.get('dtype')!r}: only float32 is reproduced")
        return None
    if name in ("Orientationd", "Orientation"):
        return _orientation(args)
    if name in ("Spacingd", "Spacing"):
        return _spacing(name, args, keys, image_key)
    if name in ("ScaleIntensityRanged", "ScaleIntensityRange"):
        _require_float32(name, args)
        return {"op": "scale_intensity_range", "a_min": float(args["a_min"]),
                "a_max": float(args["a_max"]),
                **{k: float(args[k]) for k in ("b_min", "b_max") if args.get(k) is not None},
                "clip": bool(args.get("clip", False))}
    if name in ("NormalizeIntensityd", "NormalizeIntensity"):
        return _normalize(name, args)
    if name in ("ScaleIntensityd", "ScaleIntensity"):
        _require_float32(name, args)
        if args.get("factor") is not None or args.get("minv") is None or args.get(
                "maxv") is None:
            raise ImportRefused(f"{name} with factor= (or without minv/maxv) is not reproduced")
        return {"op": "scale_intensity", "minv": float(args["minv"]),
                "maxv": float(args["maxv"]), "channel_wise": bool(args.get("channel_wise"))}
    if name in ("CropForegroundd", "CropForeground"):
        return _crop_foreground(name, args, image_key)
    raise ImportRefused(f"pre-processing transform {name} is not one Hepatica reproduces "
                        "(supported: Orientationd, Spacingd, ScaleIntensityRanged, "
                        "ScaleIntensityd, NormalizeIntensityd, CropForegroundd and the "
                        "loading/typing transforms)")


def _require_float32(name: str, args: Mapping[str, Any]) -> None:
    dtype = args.get("dtype", np.float32)
    if dtype not in (None, np.float32, "float32") and str(dtype) != "torch.float32":
        raise ImportRefused(f"{name}(dtype={dtype!r}): only float32 output is reproduced")


def _orientation(args: Mapping[str, Any]) -> dict[str, Any]:
    if args.get("labels") not in (None, (("L", "R"), ("P", "A"), ("I", "S"))):
        raise ImportRefused(f"Orientationd(labels={args['labels']!r}) is not reproduced")
    codes = "RAS" if args.get("as_closest_canonical") else args.get("axcodes")
    if not isinstance(codes, str) or len(codes) != 3:
        raise ImportRefused(f"Orientationd(axcodes={codes!r}): three axis codes needed")
    return {"op": "orientation", "axcodes": codes.upper()}


def _spacing(name: str, args: Mapping[str, Any], keys: Sequence[str],
             image_key: str) -> dict[str, Any]:
    unsupported = {"diagonal": True, "scale_extent": True, "recompute_affine": True,
                   "align_corners": True}
    for option, bad in unsupported.items():
        if bool(_per_key(args.get(option), keys, image_key)) == bad:
            raise ImportRefused(f"{name}({option}=True) is not reproduced")
    for option in ("min_pixdim", "max_pixdim"):
        if args.get(option) is not None:
            raise ImportRefused(f"{name}({option}=...) is not reproduced")
    mode = str(_per_key(args.get("mode", "bilinear"), keys, image_key))
    padding = str(_per_key(args.get("padding_mode", "border"), keys, image_key))
    if mode not in ("bilinear", "nearest"):
        raise ImportRefused(f"{name}(mode={mode!r}): only bilinear and nearest are reproduced")
    if padding not in ("border", "zeros"):
        raise ImportRefused(f"{name}(padding_mode={padding!r}): only border and zeros are "
                            "reproduced")
    pixdim = [float(p) for p in np.ravel(np.asarray(args["pixdim"], dtype=np.float64))]
    if len(pixdim) == 1:
        pixdim *= 3
    if len(pixdim) != 3 or min(pixdim) <= 0:
        raise ImportRefused(f"{name}(pixdim={args['pixdim']!r}): three positive spacings "
                            "needed")
    return {"op": "spacing", "pixdim": pixdim, "mode": mode, "padding_mode": padding}


def _normalize(name: str, args: Mapping[str, Any]) -> dict[str, Any]:
    _require_float32(name, args)
    step: dict[str, Any] = {"op": "normalize_intensity", "nonzero": bool(args.get("nonzero")),
                            "channel_wise": bool(args.get("channel_wise"))}
    for option in ("subtrahend", "divisor"):
        value = args.get(option)
        if value is None:
            continue
        values = [float(v) for v in np.ravel(np.asarray(value, dtype=np.float64))]
        if not step["channel_wise"] and len(values) != 1:
            raise ImportRefused(f"{name}({option}={value!r}) per voxel is not reproduced")
        step[option] = values
    return step


def _crop_foreground(name: str, args: Mapping[str, Any], image_key: str) -> dict[str, Any]:
    from monai.transforms.utils import is_positive

    if args.get("source_key", image_key) != image_key:
        raise ImportRefused(f"{name}(source_key={args['source_key']!r}): only cropping on the "
                            "image itself is reproduced")
    if args.get("select_fn", is_positive) is not is_positive:
        raise ImportRefused(f"{name}(select_fn=...): only the default (voxels > 0) is "
                            "reproduced")
    if args.get("channel_indices") is not None:
        raise ImportRefused(f"{name}(channel_indices=...) is not reproduced")
    if str(args.get("mode", "constant")) != "constant" or any(
            k not in ("value",) for k in args.get("pad_kwargs", {}) or {}):
        raise ImportRefused(f"{name}: only zero (constant) padding is reproduced")

    def triple(value: Any) -> list[int]:
        values = [int(v) for v in np.ravel(np.asarray(value))]
        return values * 3 if len(values) == 1 else values

    return {"op": "crop_foreground", "margin": triple(args.get("margin", 0)),
            "k_divisible": triple(args.get("k_divisible", 1)),
            "allow_smaller": bool(args.get("allow_smaller", False))}


def _inferer(parser: Any) -> dict[str, Any]:
    raw = parser.get("inferer")
    if not isinstance(raw, Mapping):
        raise ImportRefused("the config has no 'inferer'")
    name = _class_name(raw.get("_target_"))
    if name != "SlidingWindowInferer":
        raise ImportRefused(f"inferer {name} is not reproduced (only SlidingWindowInferer)")
    args = _arguments(parser, "inferer", raw, name)
    roi = [int(v) for v in np.ravel(np.asarray(args["roi_size"]))]
    if len(roi) != 3 or min(roi) < 1:
        raise ImportRefused(f"SlidingWindowInferer(roi_size={args['roi_size']!r}): three "
                            "positive sizes needed")
    if str(args.get("padding_mode", "constant")) != "constant":
        raise ImportRefused("SlidingWindowInferer: only constant padding is reproduced")
    for option in ("buffer_steps", "with_coord"):
        if args.get(option):
            raise ImportRefused(f"SlidingWindowInferer({option}=...) is not reproduced")
    overlap = args.get("overlap", 0.25)
    overlaps = set(np.ravel(np.asarray(overlap, dtype=np.float64)).tolist())
    if len(overlaps) != 1:
        raise ImportRefused(f"SlidingWindowInferer(overlap={overlap!r}) per axis is not "
                            "reproduced")
    sigma = set(np.ravel(np.asarray(args.get("sigma_scale", 0.125), dtype=np.float64)).tolist())
    if len(sigma) != 1:
        raise ImportRefused("SlidingWindowInferer: sigma_scale per axis is not reproduced")
    return {"roi_size": roi, "overlap": float(overlaps.pop()),
            "mode": str(args.get("mode", "constant")), "sigma_scale": float(sigma.pop()),
            "cval": float(args.get("cval", 0.0)),
            "sw_batch_size": int(args.get("sw_batch_size", 1))}


def _postprocessing(parser: Any) -> dict[str, Any]:
    """Where softmax comes (before or after ``Invertd``) and how ``Invertd`` interpolates."""
    softmax = False
    softmax_before_invert = True
    inverted = False
    nearest = False
    for base, name, item in _transforms(parser, "postprocessing"):
        args = _arguments(parser, base, item, name)
        if name in POST_PASS_THROUGH:
            continue
        if name == "Activationsd":
            if args.get("sigmoid") or args.get("other") is not None:
                raise ImportRefused("Activationsd with sigmoid/other is not reproduced "
                                    "(Hepatica serves softmax outputs)")
            if args.get("softmax"):
                softmax, softmax_before_invert = True, not inverted
        elif name == "Invertd":
            inverted, nearest = True, bool(args.get("nearest_interp", True))
        elif name == "AsDiscreted":
            if not args.get("argmax") or args.get("to_onehot") or args.get(
                    "threshold") is not None or args.get("rounding") is not None:
                raise ImportRefused("AsDiscreted other than argmax is not reproduced")
            if not inverted and _has_invert(parser):
                raise ImportRefused("AsDiscreted(argmax) before Invertd is not reproduced "
                                    "(Hepatica inverts probabilities, then takes the argmax)")
        else:
            raise ImportRefused(f"post-processing transform {name} is not reproduced "
                                "(supported: Activationsd(softmax), Invertd, "
                                "AsDiscreted(argmax), SaveImaged)")
    return {"softmax": True, "softmax_before_invert": softmax_before_invert if softmax
            else False, "invert_nearest": nearest}


def _has_invert(parser: Any) -> bool:
    return any(name == "Invertd" for _, name, _ in _transforms(parser, "postprocessing"))


# ---------------------------------------------------------------------------------- network


def _network(parser: Any, source: Path) -> Any:
    import torch

    weights = source / "models" / "model.pt"
    script = source / "models" / "model.ts"
    if parser.get("network_def") is not None and weights.is_file():
        network = parser.get_parsed_content("network_def")
        state = torch.load(weights, map_location="cpu", weights_only=True)
        if isinstance(state, Mapping) and "model" in state and isinstance(state["model"],
                                                                         Mapping):
            state = state["model"]
        network.load_state_dict(state)
        return network.eval()
    if script.is_file():
        return torch.jit.load(str(script), map_location="cpu").eval()
    raise ImportRefused(f"{source}: no models/model.pt (with network_def) or models/model.ts")


def _in_channels(parser: Any, metadata: Mapping[str, Any]) -> int:
    try:
        return int(metadata["network_data_format"]["inputs"]["image"]["num_channels"])
    except (KeyError, TypeError, ValueError):
        pass
    raw = parser.get("network_def")
    if isinstance(raw, Mapping) and "in_channels" in raw:
        return int(parser.get_parsed_content("network_def#in_channels"))
    return 1


def _channel_names(metadata: Mapping[str, Any], count: int) -> list[str]:
    try:
        table = metadata["network_data_format"]["outputs"]["pred"]["channel_def"]
        names = [str(table[str(i)]) for i in range(count)]
    except (KeyError, TypeError):
        return [str(i) for i in range(count)]
    if len(set(names)) != len(names):
        return [str(i) for i in range(count)]
    return names


def _labels_by_name(requested: Mapping[str, tuple[str, ...]],
                    names: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """``--labels`` may give channel numbers; turn them into the channel names."""
    def name_of(value: str) -> str:
        return names[int(value)] if value.isdigit() and int(value) < len(names) else value
    return {k: tuple(name_of(v) for v in vs) for k, vs in requested.items()}


def _phases(phases: Sequence[str] | None, channels: int) -> list[str]:
    if phases is None:
        if channels == 1:
            return ["PVP"]
        raise ImportRefused(f"the model reads {channels} channels; name the Hepatica phase of "
                            "each with --phases (e.g. AP,PVP)")
    chosen = [p.strip() for p in phases]
    if len(chosen) != channels:
        raise ImportRefused(f"--phases names {len(chosen)} phases for {channels} channels")
    return chosen


def _export(network: Any, in_channels: int, roi: Sequence[int], path: Path
            ) -> tuple[int, float]:
    """Export to ONNX; returns the number of output channels and the largest difference
    between ONNX Runtime and torch on a random patch."""
    import torch

    from inference.runtime import OnnxSession
    from inference.training.onnx_export import export_to_onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_to_onnx(network, in_channels, roi, path)
    sample = np.random.default_rng(0).normal(size=(2, in_channels, *roi)).astype(np.float32)
    with torch.no_grad():
        expected = np.asarray(network(torch.from_numpy(sample)).numpy())
    got = OnnxSession(path, ["CPUExecutionProvider"]).run(sample)
    diff = float(np.max(np.abs(got - expected)))
    log.info("exported %s: ONNX vs torch max |diff| %.3g", path, diff)
    if got.shape != expected.shape or not diff < 1e-3 * max(1.0, float(np.abs(expected).max())):
        raise ImportRefused(f"the exported ONNX model differs from torch by {diff:.3g}")
    return int(expected.shape[1]), diff
