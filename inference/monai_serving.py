"""Serving an imported MONAI model-zoo bundle the way ``monai.bundle`` runs it, without torch.

A bundle with ``[preprocessing] kind = "monai"`` lists the bundle's pre-processing as
``[[monai.steps]]`` (orientation, spacing, intensity scaling, normalisation, foreground crop,
in the bundle's order; written by ``inference.importers.monai_bundle``) and its inferer and
post-processing in ``[monai.inferer]`` / ``[monai]``. :func:`predict` replays them on MONAI's
axis order (``[C, x, y, z]``, what its image readers return), runs the sliding window on the
raw network output, applies softmax before or after inverting the spatial steps as the bundle's
``Activationsd``/``Invertd`` order says, and returns probabilities on the input grid.

The arithmetic follows MONAI's transforms: ``Spacingd`` keeps voxel 0 fixed and samples voxel
centres at ``j * pixdim / spacing`` with (tri)linear interpolation in float64 and border
padding; ``Invertd`` resamples back the same way (or by nearest neighbour); a cropped-off border
comes back as zeros.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from inference.orientation import Reorientation, check_codes, plan_reorientation
from inference.settings_table import (
    SettingsError,
    boolean,
    choice,
    integers,
    number,
    numbers,
    positive_int,
    triple,
)
from inference.sliding_window import Progress, sliding_window_predict

if TYPE_CHECKING:  # serving modules stay free of onnxruntime until a session is made
    from inference.runtime import Session

__all__ = ["MonaiSettings", "Step", "parse_settings", "predict"]

FloatArray = npt.NDArray[np.float32]
OPS = ("orientation", "spacing", "scale_intensity_range", "scale_intensity",
       "normalize_intensity", "crop_foreground")
INTERPOLATION = ("bilinear", "nearest")
PADDING = ("border", "zeros")
AFFINE_TOL = 1e-3  # MONAI's tolerance for "the resampling would change nothing"
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class Step:
    """One pre-processing transform: ``op`` and its arguments (validated per op)."""

    op: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MonaiSettings:
    """The bundle's pre-processing, inferer and post-processing, as serving replays them."""

    steps: tuple[Step, ...]
    num_classes: int
    roi_size: tuple[int, int, int]  # MONAI axis order (x, y, z)
    overlap: float = 0.25
    blend: str = "constant"
    sigma_scale: float = 0.125
    cval: float = 0.0
    sw_batch_size: int = 1
    softmax: bool = True
    softmax_before_invert: bool = True
    invert_nearest: bool = False


# ---------------------------------------------------------------------------------- settings


def parse_settings(table: Mapping[str, Any]) -> MonaiSettings:
    """Validate the ``[monai]`` table of a bundle; ``SettingsError`` names the bad key."""
    raw_steps = table.get("steps", [])
    if not isinstance(raw_steps, list):
        raise SettingsError("steps", "must be an array of tables")
    inferer = table.get("inferer", {})
    if not isinstance(inferer, Mapping):
        raise SettingsError("inferer", f"must be a table, got {inferer!r}")
    overlap = number(inferer, "overlap", 0.25, prefix="inferer")
    if not 0.0 <= overlap < 1.0:
        raise SettingsError("inferer.overlap", f"must be in [0, 1), got {overlap}")
    return MonaiSettings(
        steps=tuple(_step(s, i) for i, s in enumerate(raw_steps)),
        num_classes=positive_int(table, "num_classes"),
        roi_size=triple(inferer, "roi_size", int, prefix="inferer"),
        overlap=overlap,
        blend=choice(inferer, "mode", ("constant", "gaussian"), "constant", prefix="inferer"),
        sigma_scale=number(inferer, "sigma_scale", 0.125, prefix="inferer"),
        cval=number(inferer, "cval", 0.0, prefix="inferer"),
        sw_batch_size=positive_int(inferer, "sw_batch_size", prefix="inferer")
        if "sw_batch_size" in inferer else 1,
        softmax=boolean(table, "softmax", True),
        softmax_before_invert=boolean(table, "softmax_before_invert", True),
        invert_nearest=boolean(table, "invert_nearest", False))


def _step(value: object, index: int) -> Step:
    key = f"steps[{index}]"
    if not isinstance(value, Mapping):
        raise SettingsError(key, f"must be a table, got {value!r}")
    op = choice(value, "op", OPS, "", prefix=key)
    args: dict[str, Any] = {}
    if op == "orientation":
        codes = value.get("axcodes")
        try:
            args["axcodes"] = check_codes(str(codes))
        except ValueError as exc:
            raise SettingsError(f"{key}.axcodes", str(exc)) from None
    elif op == "spacing":
        args["pixdim"] = triple(value, "pixdim", float, prefix=key)
        args["mode"] = choice(value, "mode", INTERPOLATION, "bilinear", prefix=key)
        args["padding_mode"] = choice(value, "padding_mode", PADDING, "border", prefix=key)
    elif op == "scale_intensity_range":
        args["a_min"] = number(value, "a_min", None, prefix=key)
        args["a_max"] = number(value, "a_max", None, prefix=key)
        for name in ("b_min", "b_max"):
            args[name] = number(value, name, None, prefix=key) if name in value else None
        args["clip"] = boolean(value, "clip", False, prefix=key)
    elif op == "scale_intensity":
        args["minv"] = number(value, "minv", 0.0, prefix=key)
        args["maxv"] = number(value, "maxv", 1.0, prefix=key)
        args["channel_wise"] = boolean(value, "channel_wise", False, prefix=key)
    elif op == "normalize_intensity":
        args["nonzero"] = boolean(value, "nonzero", False, prefix=key)
        args["channel_wise"] = boolean(value, "channel_wise", False, prefix=key)
        for name in ("subtrahend", "divisor"):
            if name in value:
                raw = value[name]
                args[name] = numbers(value, name, len(raw) if isinstance(raw, list) else 1,
                                     prefix=key) if isinstance(raw, list) else (
                    number(value, name, None, prefix=key),)
    elif op == "crop_foreground":
        args["margin"] = tuple(integers(value, "margin", [0, 0, 0], prefix=key))
        args["k_divisible"] = tuple(integers(value, "k_divisible", [1, 1, 1], prefix=key))
        args["allow_smaller"] = boolean(value, "allow_smaller", False, prefix=key)
        for name in ("margin", "k_divisible"):
            if len(args[name]) != 3 or min(args[name]) < 0:
                raise SettingsError(f"{key}.{name}", f"must be 3 non-negative integers, "
                                                     f"got {list(args[name])}")
    return Step(op, args)


# ---------------------------------------------------------------------------------- serving


@dataclass
class _Grid:
    """Geometry of the working array ``[C, x, y, z]`` and what was done to it, for inverting."""

    spacing: list[float]
    direction: tuple[float, ...]
    undo: list[tuple[str, Any]] = field(default_factory=list)


def predict(settings: MonaiSettings, session: Session, channels: npt.NDArray[np.floating],
            spacing_xyz: Sequence[float], direction: Sequence[float] | None = None,
            progress: Progress | None = None) -> FloatArray:
    """Class probabilities ``[K, z, y, x]`` on the input grid for ``[C, z, y, x]`` input.

    ``direction`` (row-major 3x3, LPS) is needed only by an orientation step.
    """
    data = np.ascontiguousarray(np.asarray(channels, dtype=np.float32).transpose(0, 3, 2, 1))
    grid = _Grid([float(s) for s in spacing_xyz],
                 tuple(float(d) for d in direction) if direction is not None else ())
    for step in settings.steps:
        data = _apply(step, data, grid)
    logits = sliding_window_predict(
        data, lambda tiles: session.run(tiles), settings.roi_size, overlap=settings.overlap,
        batch_size=settings.sw_batch_size, blend=settings.blend, progress=progress,
        sigma_scale=settings.sigma_scale, pad_value=settings.cval)
    out = logits
    if settings.softmax and settings.softmax_before_invert:
        out = _softmax(out)
    for kind, record in reversed(grid.undo):
        out = _invert(kind, record, out, settings.invert_nearest)
    if settings.softmax and not settings.softmax_before_invert:
        out = _softmax(out)
    return np.ascontiguousarray(out.transpose(0, 3, 2, 1), dtype=np.float32)


def _apply(step: Step, data: FloatArray, grid: _Grid) -> FloatArray:
    args = step.args
    if step.op == "orientation":
        if not grid.direction:
            raise ValueError("an Orientationd step needs the volume's direction")
        plan = plan_reorientation(grid.direction, args["axcodes"])
        grid.undo.append(("orientation", plan))
        grid.spacing = list(plan.spacing(grid.spacing))
        grid.direction = _reoriented_direction(grid.direction, plan)
        return _orient(data, plan)
    if step.op == "spacing":
        shape, ratio = _spacing_grid(data.shape[1:], grid.spacing, args["pixdim"])
        if shape == tuple(data.shape[1:]) and all(abs(r - 1.0) <= AFFINE_TOL for r in ratio):
            return data
        grid.undo.append(("spacing", (tuple(data.shape[1:]), ratio, args)))
        grid.spacing = [float(p) for p in args["pixdim"]]
        return _resample(data, shape, ratio, args["mode"], args["padding_mode"])
    if step.op == "crop_foreground":
        box = _foreground_box(data, args)
        grid.undo.append(("crop", (tuple(data.shape[1:]), box)))
        return _crop(data, box)
    return _intensity(step, data)


def _orient(data: FloatArray, plan: Reorientation) -> FloatArray:
    """Reorient a ``[C, x, y, z]`` array (``Reorientation`` works on ``[..., z, y, x]``)."""
    return np.ascontiguousarray(plan.forward(data.transpose(0, 3, 2, 1)).transpose(0, 3, 2, 1))


def _reoriented_direction(direction: Sequence[float], plan: Reorientation
                          ) -> tuple[float, ...]:
    matrix = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    columns = [matrix[:, plan.order_xyz[n]] * (-1.0 if plan.flip_xyz[n] else 1.0)
               for n in range(3)]
    return tuple(float(v) for v in np.stack(columns, axis=1).ravel())


def _spacing_grid(shape: Sequence[int], spacing: Sequence[float], pixdim: Sequence[float]
                  ) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Output shape and per-axis step (input voxels per output voxel) of ``Spacingd``: voxel
    0 stays where it is and the extent of voxel centres is kept."""
    ratio = tuple(float(p) / float(s) for p, s in zip(pixdim, spacing, strict=True))
    out = tuple(int(np.round((n - 1) / r + 1.0)) for n, r in zip(shape, ratio, strict=True))
    return out, ratio


def _resample(data: npt.NDArray[np.floating], shape: Sequence[int], ratio: Sequence[float],
              mode: str, padding: str) -> FloatArray:
    """Sample output voxel ``j`` at input position ``j * ratio`` on each axis, separably (as
    trilinear interpolation is), in float64 like MONAI's resampler; float32 out."""
    out = np.asarray(data, dtype=np.float64)
    for axis in range(3):
        coords = np.arange(shape[axis], dtype=np.float64) * ratio[axis]
        out = _sample_axis(out, axis + 1, coords, mode, padding)
    return out.astype(np.float32)


def _sample_axis(data: npt.NDArray[np.float64], axis: int, coords: npt.NDArray[np.float64],
                 mode: str, padding: str) -> npt.NDArray[np.float64]:
    size = data.shape[axis]
    moved = np.moveaxis(data, axis, 0)
    if padding == "border":
        coords = np.clip(coords, 0.0, size - 1.0)
    if mode == "nearest":
        index = np.rint(coords).astype(np.int64)  # round half to even, as torch's nearbyint
        valid = (index >= 0) & (index < size)
        picked = moved[np.clip(index, 0, size - 1)]
        picked[~valid] = 0.0
        return np.moveaxis(picked, 0, axis)
    low = np.floor(coords).astype(np.int64)
    weight_high = coords - low
    result = np.zeros((coords.size, *moved.shape[1:]), dtype=np.float64)
    for index, weight in ((low, 1.0 - weight_high), (low + 1, weight_high)):
        valid = (index >= 0) & (index < size)
        values = moved[np.clip(index, 0, size - 1)]
        shape = (-1,) + (1,) * (moved.ndim - 1)
        result += np.where(valid.reshape(shape), values * weight.reshape(shape), 0.0)
    return np.moveaxis(result, 0, axis)


def _foreground_box(data: FloatArray, args: Mapping[str, Any]) -> list[tuple[int, int]]:
    """``CropForegroundd``'s box: voxels > 0 in any channel, plus margin, then grown evenly
    to a multiple of ``k_divisible``; may reach outside the image (it is then zero-padded)."""
    mask = np.any(data > 0, axis=0)
    if not mask.any():
        raise ValueError("CropForegroundd: the image has no foreground (no voxel > 0)")
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.nonzero(np.any(mask, axis=other))[0]
        start = int(hits[0]) - args["margin"][axis]
        end = int(hits[-1]) + args["margin"][axis] + 1
        if args["allow_smaller"]:
            start, end = max(start, 0), min(end, mask.shape[axis])
        k = args["k_divisible"][axis]
        size = end - start
        grown = int(np.ceil(size / k) * k) if k > 0 else size
        start -= (grown - size) // 2
        box.append((start, start + grown))
    return box


def _crop(data: npt.NDArray[np.floating], box: Sequence[tuple[int, int]]
          ) -> npt.NDArray[np.floating]:
    """The box of ``data``, zero where it reaches outside."""
    out = np.zeros((data.shape[0], *(e - s for s, e in box)), dtype=data.dtype)
    source, target = _overlap(data.shape[1:], box)
    out[(slice(None), *target)] = data[(slice(None), *source)]
    return out


def _uncrop(data: npt.NDArray[np.floating], shape: Sequence[int],
            box: Sequence[tuple[int, int]]) -> npt.NDArray[np.floating]:
    """Put a cropped result back on the uncropped grid, zero elsewhere (``Invertd``)."""
    out = np.zeros((data.shape[0], *shape), dtype=data.dtype)
    source, target = _overlap(shape, box)
    out[(slice(None), *source)] = data[(slice(None), *target)]
    return out


def _overlap(shape: Sequence[int], box: Sequence[tuple[int, int]]
             ) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Slices of the image and of the box that cover their common voxels."""
    source = tuple(slice(max(s, 0), min(e, n)) for (s, e), n in zip(box, shape, strict=True))
    target = tuple(slice(max(s, 0) - s, min(e, n) - s) for (s, e), n in zip(box, shape,
                                                                           strict=True))
    return source, target


def _intensity(step: Step, data: FloatArray) -> FloatArray:
    args = step.args
    if step.op == "scale_intensity_range":
        if args["a_max"] - args["a_min"] == 0.0:
            out = data - np.float32(args["a_min"])
            return out if args["b_min"] is None else out + np.float32(args["b_min"])
        out = (data - args["a_min"]) / (args["a_max"] - args["a_min"])
        if args["b_min"] is not None and args["b_max"] is not None:
            out = out * (args["b_max"] - args["b_min"]) + args["b_min"]
        if args["clip"]:
            out = np.clip(out, args["b_min"], args["b_max"])
        return np.asarray(out, dtype=np.float32)
    if step.op == "scale_intensity":
        parts = list(data) if args["channel_wise"] else [data]
        scaled = [_rescale(p, args["minv"], args["maxv"]) for p in parts]
        return np.asarray(np.stack(scaled) if args["channel_wise"] else scaled[0],
                          dtype=np.float32)
    return _normalise(data, args)


def _rescale(values: FloatArray, low: float, high: float) -> FloatArray:
    lowest, highest = values.min(), values.max()
    if lowest == highest:
        return np.asarray(values * low, dtype=np.float32)
    norm = (values - lowest) / (highest - lowest)
    return np.asarray(norm * (high - low) + low, dtype=np.float32)


def _normalise(data: FloatArray, args: Mapping[str, Any]) -> FloatArray:
    """``NormalizeIntensityd``: (x - mean) / std (population std), over the whole array or
    each channel, over all voxels or the non-zero ones; given constants replace the stats."""
    out = np.array(data, dtype=np.float32)
    parts = range(out.shape[0]) if args["channel_wise"] else [None]
    for index, part in enumerate(parts):
        view = out if part is None else out[part]
        mask = view != 0 if args["nonzero"] else np.ones(view.shape, dtype=bool)
        if not mask.any():
            continue
        values = view[mask]
        sub = args["subtrahend"][index] if "subtrahend" in args else float(values.mean())
        div = args["divisor"][index] if "divisor" in args else float(values.std())
        div = 1.0 if div == 0.0 else div
        view[mask] = (values - np.float32(sub)) / np.float32(div)
    return out


def _invert(kind: str, record: Any, data: FloatArray, nearest: bool) -> FloatArray:
    if kind == "crop":
        shape, box = record
        return np.asarray(_uncrop(data, shape, box), dtype=np.float32)
    if kind == "spacing":
        shape, ratio, args = record
        mode = "nearest" if nearest else args["mode"]
        return _resample(data, shape, tuple(1.0 / r for r in ratio), mode,
                         args["padding_mode"])
    plan: Reorientation = record
    return np.ascontiguousarray(plan.backward(data.transpose(0, 3, 2, 1)).transpose(0, 3, 2, 1))


def _softmax(logits: npt.NDArray[np.floating]) -> FloatArray:
    shifted = logits - logits.max(axis=0, keepdims=True)
    exp = np.exp(shifted)
    out: FloatArray = (exp / exp.sum(axis=0, keepdims=True)).astype(np.float32)
    return out
