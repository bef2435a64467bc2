"""Serving an imported nnU-Net v2 model the way ``nnUNetPredictor`` runs it, without torch.

A bundle with ``[preprocessing] kind = "nnunet"`` carries nnU-Net's own settings in its
``[nnunet]`` table (written by ``inference.importers.nnunet``): axis transpose, target spacing,
per-channel normalisation with the plans' foreground intensity properties, resampling orders,
patch size, sliding-window step, Gaussian blending, test-time mirroring and the folds stacked in
the ONNX output. :func:`predict` carries them out in nnU-Net's order (transpose → crop to the
non-zero box → normalise → resample → sliding window → resample back → softmax → uncrop →
transpose back) with numpy/scipy and the ONNX session, so a site serves the model it validated
with nnU-Net and gets the same probabilities.

nnU-Net accumulates the window predictions in half precision; ``logits_dtype = "float16"``
(what the importer writes) does the same, so that the served numbers match nnU-Net's and not
a more precise variant of them; ``"float32"`` is the precise variant.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from inference.nnunet_resampling import Resampling, compute_new_shape, resample_to_shape
from inference.settings_table import (
    SettingsError,
    boolean,
    choice,
    integer_in,
    integers,
    number,
    positive_int,
    triple,
)
from inference.sliding_window import Progress

if TYPE_CHECKING:  # serving modules stay free of onnxruntime until a session is made
    from inference.runtime import Session

__all__ = ["ChannelNormalisation", "NnunetSettings", "gaussian_weights", "parse_settings",
           "predict", "window_steps"]

FloatArray = npt.NDArray[np.float32]
SCHEMES = ("CTNormalization", "ZScoreNormalization", "NoNormalization",
           "RescaleTo01Normalization")
AXES = ("zyx", "xyz")
LOGITS_DTYPES = ("float16", "float32")
GAUSSIAN_SCALE = 10.0  # nnU-Net's value_scaling_factor for the importance map
DATA_RESAMPLING = Resampling(order=3, order_z=0)  # nnU-Net's defaults (images)
PROBABILITY_RESAMPLING = Resampling(order=1, order_z=0)  # (logits, back to the input grid)


@dataclass(frozen=True)
class ChannelNormalisation:
    """One input channel's nnU-Net normalisation and the plans' intensity properties."""

    scheme: str
    use_mask: bool = False
    mean: float = 0.0
    std: float = 1.0
    lower: float = 0.0  # percentile_00_5 of the foreground (CT)
    upper: float = 0.0  # percentile_99_5 of the foreground (CT)


@dataclass(frozen=True)
class NnunetSettings:
    """What ``nnUNetPredictor`` reads from plans, dataset.json and checkpoint, in one place.

    ``spacing`` and ``patch_size`` are in the network's axis order (after ``axes`` and
    ``transpose_forward``); ``folds`` is how many fold outputs the ONNX model stacks.
    """

    axes: str
    transpose_forward: tuple[int, int, int]
    transpose_backward: tuple[int, int, int]
    spacing: tuple[float, float, float]
    patch_size: tuple[int, int, int]
    channels: tuple[ChannelNormalisation, ...]
    num_classes: int
    resampling_data: Resampling = DATA_RESAMPLING
    resampling_probabilities: Resampling = PROBABILITY_RESAMPLING
    step_size: float = 0.5
    gaussian: bool = True
    mirror_axes: tuple[int, ...] = (0, 1, 2)
    folds: int = 1
    logits_dtype: str = "float16"


# ---------------------------------------------------------------------------------- settings


def parse_settings(table: Mapping[str, Any]) -> NnunetSettings:
    """Validate the ``[nnunet]`` table of a bundle; ``SettingsError`` names the bad key."""
    forward = _permutation(table, "transpose_forward")
    backward = _permutation(table, "transpose_backward")
    if tuple(forward[b] for b in backward) != (0, 1, 2):
        raise SettingsError("transpose_backward", f"must undo transpose_forward {list(forward)}")
    channels = table.get("channels")
    if not isinstance(channels, list) or not channels:
        raise SettingsError("channels", "must be a non-empty array of tables")
    mirror = integers(table, "mirror_axes", default=[])
    if any(a not in (0, 1, 2) for a in mirror) or len(set(mirror)) != len(mirror):
        raise SettingsError("mirror_axes", f"must be distinct axes among 0, 1, 2, got {mirror}")
    step = number(table, "step_size", 0.5)
    if not 0.0 < step <= 1.0:
        raise SettingsError("step_size", f"must be in (0, 1], got {step}")
    return NnunetSettings(
        axes=choice(table, "axes", AXES, "zyx"),
        transpose_forward=forward, transpose_backward=backward,
        spacing=triple(table, "spacing", float),
        patch_size=triple(table, "patch_size", int),
        channels=tuple(_channel(c, i) for i, c in enumerate(channels)),
        num_classes=positive_int(table, "num_classes"),
        resampling_data=_resampling(table, "resampling_data", 3),
        resampling_probabilities=_resampling(table, "resampling_probabilities", 1),
        step_size=step, gaussian=boolean(table, "gaussian", True),
        mirror_axes=tuple(mirror), folds=len(_folds(table)),
        logits_dtype=choice(table, "logits_dtype", LOGITS_DTYPES, "float16"))


def _channel(value: object, index: int) -> ChannelNormalisation:
    key = f"channels[{index}]"
    if not isinstance(value, Mapping):
        raise SettingsError(key, f"must be a table, got {value!r}")
    scheme = value.get("scheme")
    if scheme not in SCHEMES:
        raise SettingsError(f"{key}.scheme", f"must be one of {SCHEMES}, got {scheme!r}")
    stats = {name: number(value, name, 0.0, prefix=key)
             for name in ("mean", "std", "percentile_00_5", "percentile_99_5")}
    if scheme == "CTNormalization" and not all(name in value for name in stats):
        raise SettingsError(key, "CTNormalization needs mean, std, percentile_00_5 and "
                                 "percentile_99_5 (the plans' foreground intensity properties)")
    return ChannelNormalisation(scheme=str(scheme),
                                use_mask=boolean(value, "use_mask_for_norm", False, prefix=key),
                                mean=stats["mean"], std=stats["std"],
                                lower=stats["percentile_00_5"], upper=stats["percentile_99_5"])


def _folds(table: Mapping[str, Any]) -> list[str]:
    """The folds whose networks the ONNX model stacks (fold numbers, or "all")."""
    value = table.get("folds", [0])
    if not isinstance(value, list) or not value or not all(
            (isinstance(v, int) and not isinstance(v, bool)) or v == "all" for v in value):
        raise SettingsError("folds", f"must be a non-empty list of fold numbers or \"all\", "
                                     f"got {value!r}")
    return [str(v) for v in value]


def _resampling(table: Mapping[str, Any], key: str, default_order: int) -> Resampling:
    value = table.get(key, {})
    if not isinstance(value, Mapping):
        raise SettingsError(key, f"must be a table, got {value!r}")
    force = value.get("force_separate_z", "auto")
    if force not in ("auto", True, False):
        raise SettingsError(f"{key}.force_separate_z", f"must be true, false or \"auto\", "
                                                       f"got {force!r}")
    order = integer_in(value, "order", default_order, 0, 5, prefix=key)
    order_z = integer_in(value, "order_z", 0, 0, 5, prefix=key)
    threshold = number(value, "anisotropy_threshold", 3.0, prefix=key)
    return Resampling(order=order, order_z=order_z,
                      force_separate_z=None if force == "auto" else bool(force),
                      anisotropy_threshold=threshold)


def _permutation(table: Mapping[str, Any], key: str) -> tuple[int, int, int]:
    value = integers(table, key, default=[0, 1, 2])
    if sorted(value) != [0, 1, 2]:
        raise SettingsError(key, f"must be a permutation of [0, 1, 2], got {value}")
    return value[0], value[1], value[2]


# ---------------------------------------------------------------------------------- serving


def predict(settings: NnunetSettings, session: Session, channels: npt.NDArray[np.floating],
            spacing_xyz: Sequence[float], progress: Progress | None = None) -> FloatArray:
    """Class probabilities ``[K, z, y, x]`` on the input grid for ``[C, z, y, x]`` input."""
    if channels.shape[0] != len(settings.channels):
        raise ValueError(f"the model reads {len(settings.channels)} channels, got "
                         f"{channels.shape[0]}")
    data = np.asarray(channels, dtype=np.float32).copy()
    spacing = [float(s) for s in spacing_xyz[::-1]]  # z, y, x, as SimpleITK's reader gives
    if settings.axes == "xyz":  # nibabel's reader: the array is [x, y, z]
        data = np.ascontiguousarray(data.transpose(0, 3, 2, 1))
        spacing = spacing[::-1]
    forward = settings.transpose_forward
    data = np.ascontiguousarray(data.transpose([0, *(a + 1 for a in forward)]))
    spacing_t = [spacing[a] for a in forward]

    shape_before_crop = data.shape[1:]
    box, inside = _nonzero_box(data)
    data = np.ascontiguousarray(data[(slice(None), *box)])
    inside = inside[box]
    _normalise(data, inside, settings.channels)
    shape_after_crop = data.shape[1:]
    new_shape = compute_new_shape(shape_after_crop, spacing_t, settings.spacing)
    data = np.asarray(resample_to_shape(data, new_shape, spacing_t, settings.spacing,
                                        settings.resampling_data), dtype=np.float32)

    logits = _predict_logits(settings, session, data, progress)
    logits = resample_to_shape(logits, shape_after_crop, settings.spacing, spacing_t,
                               settings.resampling_probabilities)
    probabilities = _softmax(np.asarray(logits, dtype=np.float32))
    full = np.zeros((probabilities.shape[0], *shape_before_crop), dtype=np.float32)
    full[0] = 1.0  # outside the non-zero box: background, as nnU-Net reverts its crop
    full[(slice(None), *box)] = probabilities
    full = full.transpose([0, *(a + 1 for a in settings.transpose_backward)])
    if settings.axes == "xyz":
        full = full.transpose(0, 3, 2, 1)
    return np.ascontiguousarray(full, dtype=np.float32)


def _nonzero_box(data: FloatArray) -> tuple[tuple[slice, ...], npt.NDArray[np.bool_]]:
    """nnU-Net's crop: the bounding box of the hole-filled mask of voxels non-zero in any
    channel (the whole image when none is)."""
    mask = np.asarray(ndimage.binary_fill_holes(np.any(data != 0, axis=0)), dtype=bool)
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.nonzero(np.any(mask, axis=other))[0]
        box.append(slice(int(hits[0]), int(hits[-1]) + 1) if hits.size
                   else slice(0, mask.shape[axis]))
    return tuple(box), mask


def _normalise(data: FloatArray, inside: npt.NDArray[np.bool_],
               channels: Sequence[ChannelNormalisation]) -> None:
    """nnU-Net's per-channel normalisation, in place, in float32 as nnU-Net computes it."""
    for index, norm in enumerate(channels):
        image = data[index]
        if norm.scheme == "CTNormalization":
            np.clip(image, norm.lower, norm.upper, out=image)
            image -= norm.mean
            image /= max(norm.std, 1e-8)
        elif norm.scheme == "ZScoreNormalization":
            if norm.use_mask:
                values = image[inside]
                mean, std = values.mean(), values.std()
                image[inside] = (values - mean) / max(std, 1e-8)
            else:
                mean, std = image.mean(), image.std()
                image -= mean
                image /= max(std, 1e-8)
        elif norm.scheme == "RescaleTo01Normalization":
            image -= image.min()
            image /= np.clip(image.max(), a_min=1e-8, a_max=None)


def _softmax(logits: FloatArray) -> FloatArray:
    shifted = logits - logits.max(axis=0, keepdims=True)
    exp = np.exp(shifted)
    out: FloatArray = (exp / exp.sum(axis=0, keepdims=True)).astype(np.float32)
    return out


def window_steps(image_size: Sequence[int], tile: Sequence[int],
                 step_size: float) -> list[list[int]]:
    """nnU-Net's window origins per axis: as few steps as ``step_size`` allows, spread evenly
    (so the last window is flush with the far edge)."""
    steps = []
    for size, length in zip(image_size, tile, strict=True):
        count = int(np.ceil((size - length) / (length * step_size))) + 1
        stride = (size - length) / (count - 1) if count > 1 else 0.0
        steps.append([int(np.round(stride * i)) for i in range(count)])
    return steps


def gaussian_weights(tile: Sequence[int]) -> npt.NDArray[np.float16]:
    """nnU-Net's importance map: a Gaussian (sigma = tile / 8) peaking at 10, in half
    precision, zeros replaced by the smallest non-zero weight."""
    impulse = np.zeros(tuple(tile), dtype=np.float64)
    impulse[tuple(t // 2 for t in tile)] = 1.0
    smooth = ndimage.gaussian_filter(impulse, [t / 8.0 for t in tile], 0, mode="constant",
                                     cval=0)
    smooth /= np.max(smooth) / GAUSSIAN_SCALE
    weights: npt.NDArray[np.float16] = smooth.astype(np.float32).astype(np.float16)
    zero = weights == 0
    if zero.any():
        weights[zero] = weights[~zero].min()
    return weights


def _predict_logits(settings: NnunetSettings, session: Session, data: FloatArray,
                    progress: Progress | None) -> npt.NDArray[np.floating]:
    """Blended window logits ``[K, ...]`` on the network grid, folds averaged as nnU-Net does."""
    patch = settings.patch_size
    padded, unpad = _pad_to_patch(data, patch)
    spatial = padded.shape[1:]
    steps = window_steps(spatial, patch, settings.step_size)
    windows = list(itertools.product(*steps))
    dtype = np.float16 if settings.logits_dtype == "float16" else np.float32
    channels = settings.folds * settings.num_classes
    total = np.zeros((channels, *spatial), dtype=dtype)
    count = np.zeros(spatial, dtype=dtype)
    weights = gaussian_weights(patch) if settings.gaussian else None
    flips = _mirror_combinations(settings.mirror_axes)
    for done, start in enumerate(windows, start=1):
        window = tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True))
        tile = padded[(slice(None), *window)]
        prediction = _mirrored_prediction(session, tile, flips, channels)
        if weights is not None:
            prediction *= weights.astype(np.float32)
            total[(slice(None), *window)] += prediction
            count[window] += weights.astype(dtype)
        else:
            total[(slice(None), *window)] += prediction
            count[window] += dtype(1)
        if progress is not None:
            progress(done, len(windows))
    np.divide(total, count, out=total)
    total = total[(slice(None), *unpad)]
    folds = total.reshape(settings.folds, settings.num_classes, *total.shape[1:])
    combined: npt.NDArray[np.floating] = folds[0].copy()
    for fold in folds[1:]:
        combined += fold
    if settings.folds > 1:
        combined /= settings.folds
    return combined


def _mirror_combinations(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """The identity, then every non-empty combination of mirror axes, in nnU-Net's order."""
    return [(), *(c for n in range(len(axes)) for c in itertools.combinations(axes, n + 1))]


def _mirrored_prediction(session: Session, tile: FloatArray, flips: list[tuple[int, ...]],
                         channels: int) -> FloatArray:
    """Network output for a tile averaged over its mirrored copies (one batched run)."""
    batch = np.stack([np.flip(tile, axis=tuple(a + 1 for a in f)) if f else tile
                      for f in flips])
    out = np.asarray(session.run(np.ascontiguousarray(batch, dtype=np.float32)),
                     dtype=np.float32)
    if out.shape[0] != len(flips) or out.shape[1] != channels or out.shape[2:] != tile.shape[1:]:
        raise ValueError(f"model returned shape {out.shape}, expected "
                         f"[{len(flips)}, {channels}, *{list(tile.shape[1:])}]")
    prediction: FloatArray = out[0].copy()
    for index in range(1, len(flips)):
        prediction += np.flip(out[index], axis=tuple(a + 1 for a in flips[index]))
    if len(flips) > 1:
        prediction /= np.float32(len(flips))
    return prediction


def _pad_to_patch(data: FloatArray,
                  patch: Sequence[int]) -> tuple[FloatArray, tuple[slice, ...]]:
    """Zero-pad axes shorter than the patch, evenly (the extra voxel after), as nnU-Net does."""
    pads = [(max(p - s, 0) // 2, max(p - s, 0) - max(p - s, 0) // 2)
            for s, p in zip(data.shape[1:], patch, strict=True)]
    unpad = tuple(slice(lo, lo + s) for (lo, _), s in zip(pads, data.shape[1:], strict=True))
    if not any(lo or hi for lo, hi in pads):
        return data, unpad
    return np.pad(data, [(0, 0), *pads], mode="constant", constant_values=0), unpad
