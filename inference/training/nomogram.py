"""Seed 001's integrated model: logistic regression over model scores and clinical predictors.

The fitted pipeline (scaler + logistic regression) is what ONNX serves; the coefficients on
the predictors' own scale (per unit of platelets, per log-odds of radiomics score) are what a
clinician reads, so they are written to the bundle and drawn as a nomogram: each predictor
gets a points axis, the points add up, and the total maps to a probability.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

__all__ = ["nomogram_pipeline", "plot_nomogram", "raw_coefficients"]


def nomogram_pipeline() -> Pipeline:
    """Scaled, nearly unpenalised logistic regression (a nomogram reports plain coefficients;
    the scaler only helps the optimiser and is folded back in ``raw_coefficients``)."""
    return Pipeline([("scale", StandardScaler()),
                     ("model", LogisticRegression(C=1e4, max_iter=5000))])


def raw_coefficients(pipeline: Pipeline, names: Sequence[str]) -> dict[str, float]:
    """Intercept and coefficients per unit of each predictor."""
    scale, model = pipeline.named_steps["scale"], pipeline.named_steps["model"]
    coef = model.coef_[0] / scale.scale_
    intercept = float(model.intercept_[0] - np.sum(coef * scale.mean_))
    return {"intercept": round(intercept, 6),
            **{n: round(float(c), 6) for n, c in zip(names, coef, strict=True)}}


def _axis_points(coef: float, low: float, high: float, unit: float) -> tuple[float, float]:
    """Points at ``low`` and ``high``: the less favourable end of each axis scores 0."""
    a, b = coef * low, coef * high
    base = min(a, b)
    return (a - base) / unit * 100, (b - base) / unit * 100


def plot_nomogram(coefficients: dict[str, float], ranges: dict[str, tuple[float, float]],
                  path: Path, title: str) -> Path:
    """A classic points nomogram as PNG (small: 100 dpi, greyscale)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in coefficients if n != "intercept"]
    spans = {n: abs(coefficients[n]) * (ranges[n][1] - ranges[n][0]) for n in names}
    unit = max(spans.values()) or 1.0
    rows = len(names) + 3
    fig, ax = plt.subplots(figsize=(7.5, 0.55 * rows + 0.8), dpi=100)
    _draw_axis(ax, rows - 1, "Points", 0, 100, 0, 100, ticks=11)
    for i, name in enumerate(names, start=2):
        lo, hi = ranges[name]
        p_lo, p_hi = _axis_points(coefficients[name], lo, hi, unit)
        _draw_axis(ax, rows - i, name, p_lo, p_hi, lo, hi, ticks=2 if hi - lo == 1 else 5)
    total_max = sum(spans.values()) / unit * 100
    _draw_axis(ax, 1, "Total points", 0, 100, 0, total_max, ticks=6)
    _probability_axis(ax, coefficients, ranges, unit, total_max)
    ax.set_xlim(-45, 105)
    ax.set_ylim(-0.8, rows - 0.3)
    ax.axis("off")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _draw_axis(ax: object, y: float, label: str, x0: float, x1: float, v0: float, v1: float,
               ticks: int) -> None:
    ax.plot([x0, x1], [y, y], color="black", lw=1)  # type: ignore[attr-defined]
    ax.text(-44, y, label, va="center", fontsize=8)  # type: ignore[attr-defined]
    if abs(x1 - x0) < 12:  # a short axis: its end values only, or the labels collide
        ticks = 2
    for k in range(ticks):
        f = k / (ticks - 1)
        x = x0 + f * (x1 - x0)
        ax.plot([x, x], [y, y + 0.12], color="black", lw=1)  # type: ignore[attr-defined]
        ax.text(x, y + 0.18, f"{v0 + f * (v1 - v0):.3g}", ha="center",  # type: ignore[attr-defined]
                fontsize=6)


def _probability_axis(ax: object, coefficients: dict[str, float],
                      ranges: dict[str, tuple[float, float]], unit: float,
                      total_max: float) -> None:
    """Probability as a function of total points (rescaled to the 0-100 drawing width)."""
    base = coefficients["intercept"] + sum(
        min(coefficients[n] * lo, coefficients[n] * hi) for n, (lo, hi) in ranges.items())
    ax.text(-44, 0, "Probability", va="center", fontsize=8)  # type: ignore[attr-defined]
    for p in (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95):
        total = (math.log(p / (1 - p)) - base) / unit * 100
        x = total / total_max * 100 if total_max else 0.0
        if 0 <= x <= 100:
            ax.plot([x, x], [0, 0.12], color="black", lw=1)  # type: ignore[attr-defined]
            ax.text(x, 0.18, f"{p:g}", ha="center", fontsize=6)  # type: ignore[attr-defined]
    ax.plot([0, 100], [0, 0], color="black", lw=1)  # type: ignore[attr-defined]
