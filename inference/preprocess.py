"""Intensity and grid preparation shared by training and serving.

Training (``inference.training``) and serving (``inference.segmentation``) call the very same
functions, so that a model never sees inputs prepared differently from what it learned on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy import ndimage

FloatArray = npt.NDArray[np.float32]


def robust_scale(array: npt.NDArray[np.floating], low_pct: float = 1.0,
                 high_pct: float = 99.5) -> FloatArray:
    """Map the [low, high] percentiles to [0, 1] and clip to [-0.5, 1.5].

    Percentiles make MR (arbitrary units, vendor scaling) and CT (HU) comparable without
    per-site calibration.
    """
    values = np.asarray(array, dtype=np.float32)
    lo, hi = (float(v) for v in np.percentile(_without_padding(values), [low_pct, high_pct]))
    span = hi - lo if hi > lo else 1.0
    scaled = (values - np.float32(lo)) / np.float32(span)
    out: FloatArray = np.clip(scaled, -0.5, 1.5).astype(np.float32)
    return out


PADDING_SHARE = 0.01
"""A minimum value filling at least this share of the volume may be padding …"""
PADDING_GAP = 0.25
"""… when it lies this far (share of the rest's 1st–99.5th percentile span) below the rest."""


def _without_padding(values: FloatArray) -> FloatArray:
    """The voxels that are not pixel padding.

    Real CTs fill the corners outside the reconstruction circle with one value far below air
    (e.g. −3024 HU for PixelPaddingValue −2000); as a fifth of the voxels it would be the 1st
    percentile and squeeze every tissue into a sliver of [0, 1]. Such a plateau at the
    minimum, well apart from everything else, is left out of the percentiles (it then clips
    to −0.5). Air clipped at −1024 or an MR background of zeros sits right at the bottom of
    the rest and stays.
    """
    flat = values.ravel()
    low = flat.min()
    padding = flat == low
    if padding.mean() < PADDING_SHARE or padding.all():
        return values
    rest: FloatArray = flat[~padding]
    floor, top = (float(v) for v in np.percentile(rest, [1.0, 99.5]))
    if floor - float(low) <= PADDING_GAP * max(top - floor, 1e-6):
        return values
    return rest


def zoom_factors(spacing_xyz: Sequence[float], target_xyz: Sequence[float]) -> tuple[float, ...]:
    """Per-axis zoom (z, y, x order) that brings ``spacing`` to ``target``."""
    return tuple(float(s) / float(t) for s, t in zip(spacing_xyz[::-1], target_xyz[::-1],
                                                       strict=True))


def resample(array: npt.NDArray[np.floating], spacing_xyz: Sequence[float],
             target_xyz: Sequence[float], order: int = 1) -> FloatArray:
    """Resample a ``[z, y, x]`` array from ``spacing`` to ``target`` spacing (mm).

    The grid is ``scipy.ndimage.zoom``'s (``grid_mode``: the volumes' outer edges stay put;
    each axis rounded to whole voxels); linear interpolation is :func:`zoom_linear`, the
    same values at a fraction of the time; ``order=0`` (label maps) stays with scipy.
    """
    factors = zoom_factors(spacing_xyz, target_xyz)
    if all(abs(f - 1.0) < 1e-6 for f in factors):
        return np.asarray(array, dtype=np.float32)
    src = np.asarray(array, dtype=np.float32)
    if order == 1:
        return zoom_linear(src, [round(n * f) for n, f in zip(src.shape, factors, strict=True)])
    out = ndimage.zoom(src, factors, order=order, mode="nearest", grid_mode=True)
    return np.asarray(out, dtype=np.float32)


def resample_to_shape(array: npt.NDArray[np.floating], shape: Sequence[int],
                      order: int = 1) -> FloatArray:
    """Resample a ``[c?, z, y, x]`` array back onto an exact grid shape (the source grid)."""
    src = np.asarray(array, dtype=np.float32)
    if order == 1:
        return zoom_linear(src, shape)
    spatial = src.shape[-3:]
    factors = [t / s for t, s in zip(shape, spatial, strict=True)]
    if src.ndim == 4:
        factors = [1.0, *factors]
    out = ndimage.zoom(src, factors, order=order, mode="nearest", grid_mode=True)
    # zoom may be off by one voxel from rounding: crop or pad to the exact shape
    return _fit_shape(np.asarray(out, dtype=np.float32), tuple(shape))


Box = tuple[slice, slice, slice]


def zoom_linear(array: npt.NDArray[np.floating], shape: Sequence[int], *,
                out_box: Box | None = None, in_start: Sequence[int] = (0, 0, 0),
                full_in_shape: Sequence[int] | None = None) -> FloatArray:
    """Linear interpolation of a ``[c?, z, y, x]`` array onto a grid of ``shape``, as
    ``scipy.ndimage.zoom(order=1, mode="nearest", grid_mode=True)`` computes it.

    Why not scipy: its spline machinery takes seconds for a probability volume; linear
    interpolation is separable, so here it is three 1-D passes of two gathers and a blend
    (``tests/inference/test_preprocess_resample.py`` holds the two to 1e-6).

    A window of the mapping: ``array`` may be the part of a ``full_in_shape`` grid that
    starts at ``in_start``, and only the output voxels in ``out_box`` are computed; the
    positions are those of the whole mapping, samples beyond the part clamp to its edge.
    """
    src = np.asarray(array, dtype=np.float32)
    lead = src.ndim - 3
    full_in = tuple(full_in_shape) if full_in_shape is not None else src.shape[lead:]
    box = out_box or tuple(slice(0, int(n)) for n in shape)
    out = src
    # shrink first: the later passes then work on fewer voxels
    for axis in sorted(range(3), key=lambda k: (box[k].stop - box[k].start) / src.shape[lead + k]):
        start, stop = box[axis].start, box[axis].stop
        n_in, n_out, offset = full_in[axis], int(shape[axis]), int(in_start[axis])
        if n_in == n_out and offset == start and out.shape[lead + axis] == stop - start:
            continue  # the identity on this axis
        low, high, weight = _axis_weights(n_in, n_out, start, stop, offset,
                                          out.shape[lead + axis])
        view = [1] * out.ndim
        view[lead + axis] = stop - start
        weight = weight.reshape(view)
        blended = np.take(out, low, axis=lead + axis)
        blended *= np.float32(1.0) - weight
        upper = np.take(out, high, axis=lead + axis)
        upper *= weight
        blended += upper
        out = blended
    result: FloatArray = np.ascontiguousarray(out, dtype=np.float32)
    return result


def _axis_weights(n_in: int, n_out: int, start: int, stop: int, offset: int, available: int
                  ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], FloatArray]:
    """Source voxels and weights for output positions ``start..stop`` of an ``n_in → n_out``
    grid-mode zoom: centres map as ``(o + 0.5) · n_in / n_out − 0.5``, clamped to the grid
    ("nearest"), then to the ``available`` voxels held from ``offset`` on."""
    position = (np.arange(start, stop, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    position = np.clip(position, 0.0, n_in - 1)
    low = np.floor(position).astype(np.intp)
    weight = (position - low).astype(np.float32)
    high = np.minimum(low + 1, n_in - 1)
    low = np.clip(low - offset, 0, available - 1)
    high = np.clip(high - offset, 0, available - 1)
    return low, high, weight


def _fit_shape(array: FloatArray, shape: tuple[int, ...]) -> FloatArray:
    spatial = array.shape[-3:]
    pads = [(0, max(0, t - s)) for t, s in zip(shape, spatial, strict=True)]
    lead = [(0, 0)] * (array.ndim - 3)
    padded = np.pad(array, [*lead, *pads], mode="edge")
    lead_axes = (slice(None),) * (array.ndim - 3)
    window = lead_axes + tuple(slice(0, t) for t in shape)
    out: FloatArray = padded[window]
    return out


def prepare_channels(channels: Sequence[npt.NDArray[np.floating]], spacing_xyz: Sequence[float],
                     target_xyz: Sequence[float]) -> FloatArray:
    """Stack co-registered phase volumes into a ``[C, z, y, x]`` model input."""
    prepared = [robust_scale(resample(ch, spacing_xyz, target_xyz)) for ch in channels]
    return np.stack(prepared, axis=0)
