"""inference.preprocess: the separable linear resampler gives scipy's zoom values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from inference.preprocess import resample, resample_to_shape, zoom_linear


@pytest.mark.parametrize("factors", [(1.7, 0.63, 1.21), (1.0, 0.75, 0.75), (0.5, 0.5, 0.5),
                                     (2.0, 1.0, 3.0), (1.0, 1.0, 1.0)])
def test_zoom_linear_equals_scipy(factors: tuple[float, float, float]) -> None:
    volume = np.random.default_rng(1).random((17, 41, 29), dtype=np.float32) * 1000
    expected = ndimage.zoom(volume, factors, order=1, mode="nearest", grid_mode=True)
    got = zoom_linear(volume, expected.shape)
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-3)


def test_channels_and_exact_shape() -> None:
    """A [C, z, y, x] stack resampled onto a grid (the way back to the source grid)."""
    stack = np.random.default_rng(2).random((3, 12, 30, 40), dtype=np.float32)
    expected = ndimage.zoom(stack, (1, 16 / 12, 41 / 30, 53 / 40), order=1, mode="nearest",
                            grid_mode=True)
    got = resample_to_shape(stack, (16, 41, 53))
    assert got.shape == (3, 16, 41, 53)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_window_of_the_mapping_equals_the_whole() -> None:
    """Part of the input and part of the output: the same values as the whole mapping."""
    volume = np.random.default_rng(3).random((37, 101, 77), dtype=np.float32)
    whole = zoom_linear(volume, (63, 64, 93))
    out_box = (slice(10, 40), slice(5, 50), slice(20, 80))
    part = (slice(4, 26), slice(5, 85), slice(13, 70))
    got = zoom_linear(volume[part], (63, 64, 93), out_box=out_box,
                      in_start=[p.start for p in part], full_in_shape=volume.shape)
    np.testing.assert_allclose(got, whole[out_box], atol=1e-6)


def test_resample_by_spacing_matches_scipy_grid() -> None:
    """Shapes round as scipy's zoom rounds them; order 0 (labels) still exact."""
    volume = np.random.default_rng(4).random((20, 50, 50), dtype=np.float32)
    got = resample(volume, (1.5, 1.5, 2.5), (2.0, 2.0, 3.0))
    expected = ndimage.zoom(volume, (2.5 / 3.0, 0.75, 0.75), order=1, mode="nearest",
                            grid_mode=True)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    labels = (volume > 0.5).astype(np.float32)
    nearest = resample(labels, (1.5, 1.5, 2.5), (2.0, 2.0, 3.0), order=0)
    assert set(np.unique(nearest)) <= {0.0, 1.0}
