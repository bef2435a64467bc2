"""Heatmap backgrounds are windowed as a reader would: CT W400/L50, MR 1st–99th percentile."""

from __future__ import annotations

import numpy as np
import pytest

from export.sc import render_heatmap
from export.sc.render import window_background


def _ct_slice() -> np.ndarray:
    """Padding (−3024) in the corners, air, fat, liver (60 HU) and bone (1000 HU)."""
    hu = np.full((64, 64), -1000.0)
    hu[8:56, 8:56] = -100.0  # fat
    hu[20:44, 16:40] = 60.0  # liver
    hu[48:54, 28:36] = 1000.0  # bone
    hu[:4, :4] = -3024.0
    return hu


def test_ct_uses_the_abdominal_window() -> None:
    shown = window_background(_ct_slice(), "CT")
    assert shown[30, 30] == np.float64((60 - (50 - 200)) / 400)  # liver mid-grey (0.525)
    assert shown[10, 10] == np.float64((-100 - (50 - 200)) / 400)  # fat dark grey (0.125)
    assert shown[50, 30] == 1.0 and shown[0, 0] == 0.0 and shown[5, 5] == 0.0


def test_full_range_would_flatten_the_liver() -> None:
    """The old percentile window on CT put liver and fat 4 % of the grey scale apart."""
    windowed = window_background(_ct_slice(), "CT")
    assert windowed[30, 30] - windowed[10, 10] == pytest.approx(0.4)
    span = window_background(_ct_slice(), "MR")  # percentiles of a CT: what was drawn before
    assert span[30, 30] - span[10, 10] < 0.1


def test_mr_uses_the_1st_to_99th_percentile() -> None:
    rng = np.random.default_rng(0)
    mr = rng.uniform(0, 1000, (100, 100))
    mr[0, :50] = 50_000.0  # a few hot pixels (0.5 %) must not set the window
    shown = window_background(mr, "MR")
    low, high = np.percentile(mr, [1, 99])
    inside = (mr > low) & (mr < high)
    assert np.allclose(shown[inside], (mr[inside] - low) / (high - low))
    assert shown[0, 0] == 1.0
    assert np.median(shown) > 0.4  # the bulk of the tissue is not crushed to black


def test_rendered_ct_background_differs_from_the_percentile_one() -> None:
    probability = np.zeros((64, 64))
    ct = render_heatmap(_ct_slice(), probability, title="CT_PVP", caption_lines=[],
                        modality="CT")
    other = render_heatmap(_ct_slice(), probability, title="CT_PVP", caption_lines=[],
                           modality="")
    assert ct.shape == other.shape and ct.dtype == np.uint8
    assert not np.array_equal(ct, other)
