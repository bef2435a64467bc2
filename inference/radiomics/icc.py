"""Reproducibility filter: intraclass correlation of each feature across perturbed masks.

Seed 003 kept features whose ICC between two readers' segmentations was at least 0.90. No
second reader exists here, so the mask is perturbed the way readers differ - one voxel
eroded, one voxel dilated, a noisy contour - and each perturbation is a "rater". ICC(2,1)
(two-way random effects, absolute agreement, single rater; Shrout & Fleiss 1979) asks that
the values agree, not merely correlate, which is what a feature served from a different
segmentation needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
from scipy import ndimage

__all__ = ["PERTURBATIONS", "icc_2_1", "perturb", "reproducible_features"]

PERTURBATIONS = ("erode", "dilate", "contour_noise")
Mask = npt.NDArray[np.bool_]


def perturb(mask: Mask, kind: str, seed: int = 0, flip_p: float = 0.3) -> Mask:
    """``mask`` as a second reader might have drawn it; never empty."""
    if kind == "erode":
        out = ndimage.binary_erosion(mask)
    elif kind == "dilate":
        out = ndimage.binary_dilation(mask)
    elif kind == "contour_noise":
        out = _contour_noise(mask, np.random.default_rng(seed), flip_p)
    else:
        raise ValueError(f"unknown perturbation {kind!r}; choose one of {PERTURBATIONS}")
    return np.asarray(out if out.any() else mask, dtype=bool)


def _contour_noise(mask: Mask, rng: np.random.Generator, flip_p: float) -> Mask:
    """Flip a random share of the voxels on either side of the contour."""
    inner = mask & ~ndimage.binary_erosion(mask)
    outer = ndimage.binary_dilation(mask) & ~mask
    out = mask.copy()
    out[inner & (rng.random(mask.shape) < flip_p)] = False
    out[outer & (rng.random(mask.shape) < flip_p)] = True
    return out


def icc_2_1(values: npt.NDArray[np.float64]) -> float:
    """ICC(2,1) of a subjects x raters matrix; 1.0 when every value is equal."""
    x = np.asarray(values, dtype=np.float64)
    n, k = x.shape
    grand = x.mean()
    ss_rows = k * ((x.mean(axis=1) - grand) ** 2).sum()
    ss_cols = n * ((x.mean(axis=0) - grand) ** 2).sum()
    ss_err = ((x - grand) ** 2).sum() - ss_rows - ss_cols
    msr, msc = ss_rows / (n - 1), ss_cols / (k - 1)
    mse = ss_err / ((n - 1) * (k - 1))
    denominator = msr + (k - 1) * mse + k * (msc - mse) / n
    if denominator <= 0 or not np.isfinite(denominator):
        return 1.0 if np.allclose(x, x[:, :1]) else 0.0
    return float((msr - mse) / denominator)


def reproducible_features(ratings: Mapping[str, Sequence[Mapping[str, float]]],
                          threshold: float = 0.90) -> dict[str, float]:
    """ICC per feature over subjects; ``ratings[subject]`` lists one feature dict per rater.

    Returns the features with ICC >= ``threshold`` and their ICC. A feature missing for any
    subject or rater, or non-finite, is dropped: it could not be served reliably either.
    """
    subjects = list(ratings.values())
    names = set.intersection(*(set(r) for raters in subjects for r in raters))
    kept: dict[str, float] = {}
    for name in sorted(names):
        matrix = np.array([[r[name] for r in raters] for raters in subjects], dtype=np.float64)
        if not np.isfinite(matrix).all():
            continue
        value = icc_2_1(matrix)
        if value >= threshold:
            kept[name] = value
    return kept
