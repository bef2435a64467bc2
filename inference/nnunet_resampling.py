"""nnU-Net v2's resampling, re-done with numpy/scipy (serving imports no torch).

nnU-Net resamples images with third-order splines in-plane and nearest neighbour across slices
when either spacing is anisotropic (ratio above 3), and its probabilities with linear
interpolation the same way. An imported model must see its input resampled exactly so, and its
output must be brought back exactly so, for Hepatica to serve what nnU-Net would: these
functions follow nnU-Net's ``resample_data_or_seg_to_shape`` step by step (including the
per-slice clipping that scikit-image's ``resize`` applies), built on ``scipy.ndimage`` calls
that give the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

__all__ = ["Resampling", "compute_new_shape", "resample_to_shape", "separate_z_axis"]

ANISOTROPY_THRESHOLD = 3.0


@dataclass(frozen=True)
class Resampling:
    """One of nnU-Net's resampling settings: spline orders and when to treat z separately.

    ``force_separate_z`` None means "decide from the spacings" (nnU-Net's default).
    """

    order: int = 3
    order_z: int = 0
    force_separate_z: bool | None = None
    anisotropy_threshold: float = ANISOTROPY_THRESHOLD


def compute_new_shape(shape: Sequence[int], spacing: Sequence[float],
                      target: Sequence[float]) -> tuple[int, ...]:
    """The grid shape at ``target`` spacing (Python's round, as nnU-Net uses)."""
    return tuple(round(s / t * n) for s, t, n in zip(spacing, target, shape, strict=True))


def _lowres_axes(spacing: Sequence[float]) -> list[int]:
    values = np.asarray(spacing, dtype=np.float64)
    return [int(a) for a in np.where(max(values) / values == 1)[0]]


def separate_z_axis(setting: Resampling, current: Sequence[float],
                    new: Sequence[float]) -> int | None:
    """The axis resampled on its own (nearest across slices), or None for plain 3-D splines."""
    def anisotropic(spacing: Sequence[float]) -> bool:
        return bool(max(spacing) / min(spacing) > setting.anisotropy_threshold)

    if setting.force_separate_z is not None:
        axes = _lowres_axes(current) if setting.force_separate_z else []
    elif anisotropic(current):
        axes = _lowres_axes(current)
    elif anisotropic(new):
        axes = _lowres_axes(new)
    else:
        axes = []
    return axes[0] if len(axes) == 1 else None


def _resize(image: npt.NDArray[np.float64], shape: Sequence[int],
            order: int) -> npt.NDArray[np.float64]:
    """scikit-image's ``resize(image, shape, order, mode='edge', anti_aliasing=False)``:
    a grid-mode zoom with edge extension, clipped to the input's range."""
    zoom = [1.0 / (i / o) for i, o in zip(image.shape, shape, strict=True)]
    out = np.asarray(ndimage.zoom(image, zoom, order=order, mode="nearest", grid_mode=True))
    np.clip(out, image.min(), image.max(), out=out)
    return out


def _along_axis(volume: npt.NDArray[np.float64], axis: int, size: int,
                order: int) -> npt.NDArray[np.float64]:
    """Interpolate one axis to ``size`` samples, half-voxel aligned, edge-extended.

    nnU-Net does this with ``map_coordinates`` on a full coordinate grid; for orders 0 and 1
    the same weights are taken from scipy on a 1-D problem and applied by gathering rows,
    which gives the same values without three volume-sized coordinate arrays.
    """
    length = volume.shape[axis]
    scale = float(length) / size
    coords = scale * (np.arange(size, dtype=np.float64) + 0.5) - 0.5
    if order > 1:  # splines prefilter the whole volume: only the full call gives nnU-Net's values
        axes = [coords if a == axis else np.arange(n, dtype=np.float64)
                for a, n in enumerate(volume.shape)]
        grids = np.asarray(np.meshgrid(*axes, indexing="ij"))
        return np.asarray(ndimage.map_coordinates(volume, grids, order=order, mode="nearest"))
    weights = np.stack([ndimage.map_coordinates(np.eye(length)[:, j], [coords], order=order,
                                                mode="nearest") for j in range(length)], axis=1)
    moved = np.moveaxis(volume, axis, 0)
    out = np.zeros((size, *moved.shape[1:]), dtype=np.float64)
    for row in range(size):
        for column in np.nonzero(weights[row])[0]:
            out[row] += weights[row, column] * moved[column]
    return np.moveaxis(out, 0, axis)


def resample_to_shape(data: npt.NDArray[np.floating], new_shape: Sequence[int],
                      current: Sequence[float], new: Sequence[float],
                      setting: Resampling) -> npt.NDArray[np.floating]:
    """Resample ``[c, a, b, c]`` data to ``new_shape`` the way nnU-Net does.

    The result keeps the input's dtype (nnU-Net keeps half-precision logits half) and the
    input is returned untouched when the shape does not change.
    """
    target = tuple(int(n) for n in new_shape)
    if tuple(data.shape[1:]) == target:
        return data
    axis = separate_z_axis(setting, current, new)
    work = data.astype(np.float64)
    out = np.zeros((data.shape[0], *target), dtype=data.dtype)
    for channel in range(data.shape[0]):
        if axis is None:
            out[channel] = _resize(work[channel], target, setting.order)
            continue
        in_plane = [n for a, n in enumerate(target) if a != axis]
        slices = np.moveaxis(work[channel], axis, 0)
        planes = np.stack([_resize(s, in_plane, setting.order) for s in slices])
        stacked = np.moveaxis(planes, 0, axis)
        if stacked.shape[axis] != target[axis]:
            stacked = _along_axis(stacked, axis, target[axis], setting.order_z)
        out[channel] = stacked
    return out
