"""Sliding-window inference over a whole volume, in numpy (serving imports no torch).

A network trained on patches sees a volume as overlapping patches; their predictions are
blended with a Gaussian importance map because a patch's borders see little context and are
less reliable than its centre. Window placement, padding and weights follow MONAI's
``sliding_window_inference`` (same defaults: ``sigma_scale`` 0.125, constant zero padding,
last window flush with the far edge), so that a model validated with MONAI in training gives the
same output when served here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["Predictor", "Progress", "importance_map", "sliding_window_predict", "window_starts"]

FloatArray = npt.NDArray[np.float32]
Predictor = Callable[[FloatArray], npt.NDArray[np.floating]]
Progress = Callable[[int, int], None]
BLENDS = ("gaussian", "constant")


def sliding_window_predict(x: FloatArray, predict: Predictor, patch_size: Sequence[int],
                           overlap: float = 0.25, batch_size: int = 1, blend: str = "gaussian",
                           progress: Progress | None = None, sigma_scale: float = 0.125,
                           pad_value: float = 0.0) -> FloatArray:
    """Predict ``[K, z, y, x]`` for an input ``[C, z, y, x]`` by blending patch predictions.

    ``predict`` maps ``[B, C, pz, py, px]`` to ``[B, K, pz, py, px]``. Inputs smaller than the
    patch are padded (evenly, with ``pad_value``) and the padding is cropped off the result.
    Every voxel is covered by at least one window; ``progress(done, total)`` after each batch.
    """
    patch = _check_args(x, patch_size, overlap, batch_size, blend)
    padded, crop = _pad_to_patch(np.asarray(x, dtype=np.float32), patch, pad_value)
    spatial = padded.shape[1:]
    starts = window_starts(spatial, patch, overlap)
    weights = importance_map(patch, blend, sigma_scale)
    total: FloatArray | None = None
    norm = np.zeros(spatial, dtype=np.float32)
    for first in range(0, len(starts), batch_size):
        batch = starts[first:first + batch_size]
        tiles = np.stack([padded[(slice(None), *_window(s, patch))] for s in batch])
        preds = _checked(predict(tiles), len(batch), patch)
        if total is None:
            total = np.zeros((preds.shape[1], *spatial), dtype=np.float32)
        for pred, start in zip(preds, batch, strict=True):
            window = _window(start, patch)
            total[(slice(None), *window)] += pred * weights
            norm[window] += weights
        if progress is not None:
            progress(first + len(batch), len(starts))
    assert total is not None  # at least one window always exists
    total /= norm
    return total[(slice(None), *crop)]


def _check_args(x: FloatArray, patch_size: Sequence[int], overlap: float, batch_size: int,
                blend: str) -> tuple[int, int, int]:
    if x.ndim != 4:
        raise ValueError(f"input must be [C, z, y, x], got shape {x.shape}")
    if len(patch_size) != 3 or any(int(p) < 1 for p in patch_size):
        raise ValueError(f"patch_size must be 3 positive ints (z, y, x), got {patch_size}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {BLENDS}, got {blend!r}")
    return int(patch_size[0]), int(patch_size[1]), int(patch_size[2])


def _pad_to_patch(x: FloatArray, patch: tuple[int, int, int],
                  pad_value: float) -> tuple[FloatArray, tuple[slice, ...]]:
    """Pad each axis shorter than the patch evenly (extra voxel after), as MONAI does."""
    pads = []
    for size, want in zip(x.shape[1:], patch, strict=True):
        diff = max(want - size, 0)
        pads.append((diff // 2, diff - diff // 2))
    crop = tuple(slice(lo, lo + size) for (lo, _), size in zip(pads, x.shape[1:], strict=True))
    if not any(lo or hi for lo, hi in pads):
        return x, crop
    return np.pad(x, [(0, 0), *pads], constant_values=pad_value), crop


def window_starts(shape: Sequence[int], patch: Sequence[int],
                  overlap: float) -> list[tuple[int, ...]]:
    """Window origins: a step of ``int(patch * (1 - overlap))``, the last flush with the edge."""
    per_axis = []
    for size, length in zip(shape, patch, strict=True):
        step = length if size == length else max(int(length * (1.0 - overlap)), 1)
        per_axis.append([*range(0, size - length, step), size - length])
    grid = np.meshgrid(*per_axis, indexing="ij")
    return [tuple(int(v) for v in point) for point in zip(*(g.ravel() for g in grid), strict=True)]


def importance_map(patch: Sequence[int], blend: str = "gaussian",
                   sigma_scale: float = 0.125) -> FloatArray:
    """Per-voxel weight of a patch's prediction: a separable Gaussian (sigma = scale × size)
    centred on the patch, floored at its minimum (at least 1e-3) so no voxel gets weight 0."""
    if blend == "constant":
        return np.ones(tuple(patch), dtype=np.float32)
    weights = np.ones((), dtype=np.float32)
    for length in patch:
        offsets = np.arange(length, dtype=np.float32) - np.float32((length - 1) / 2.0)
        sigma = np.float32(length * sigma_scale)
        axis = np.exp(offsets**2 / (np.float32(-2.0) * sigma**2)).astype(np.float32)
        weights = np.multiply.outer(weights, axis)
    floor = max(float(weights.min()), 1e-3)
    return np.maximum(weights, np.float32(floor)).astype(np.float32)


def _window(start: Sequence[int], patch: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True))


def _checked(preds: npt.NDArray[np.floating], batch: int,
             patch: tuple[int, int, int]) -> FloatArray:
    out = np.asarray(preds, dtype=np.float32)
    if out.ndim != 5 or out.shape[0] != batch or out.shape[2:] != patch:
        raise ValueError(f"predictor returned shape {out.shape}, expected "
                         f"[{batch}, K, {patch[0]}, {patch[1]}, {patch[2]}]")
    return out
