"""Figures for the report, drawn with matplotlib's object API and returned as PNG bytes.

The Agg canvas is used directly (no pyplot), so no global backend or state is changed.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

from inference.evaluation.calibration import CalibrationBin
from inference.evaluation.decision_curve import DecisionCurve
from inference.evaluation.discrimination import RocCurve
from inference.evaluation.survival import CoxTerm, KaplanMeierCurve

__all__ = ["calibration_png", "decision_curve_png", "forest_png", "km_png", "roc_png"]

DPI = 100


def _new(width: float = 5.2, height: float = 4.4) -> tuple[Figure, Axes]:
    """A figure with one axes, attached to an Agg canvas."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _png(fig: Figure) -> bytes:
    """Encode the figure as PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def roc_png(curves: Sequence[tuple[str, RocCurve, float]]) -> bytes:
    """ROC curves of several models (or classes) with the chance diagonal."""
    fig, ax = _new()
    for name, curve, auc in curves:
        ax.step(curve.fpr, curve.tpr, where="post", label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="chance")
    ax.set(xlabel="1 − specificity (false-positive rate)", ylabel="Sensitivity",
           xlim=(0, 1), ylim=(0, 1.01), title="ROC curve")
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def calibration_png(bins: Sequence[CalibrationBin]) -> bytes:
    """Observed event rate per risk group, with exact CIs, against the ideal diagonal."""
    fig, ax = _new()
    x = [b.mean_predicted for b in bins]
    y = [b.observed for b in bins]
    err = [[b.observed - b.ci_low for b in bins], [b.ci_high - b.observed for b in bins]]
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="ideal")
    ax.errorbar(x, y, yerr=err, fmt="o-", capsize=3, label="risk groups (95 % CI)")
    ax.set(xlabel="Predicted probability", ylabel="Observed proportion",
           xlim=(0, 1), ylim=(0, 1), title="Calibration")
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig)


def decision_curve_png(curves: Sequence[tuple[str, DecisionCurve]]) -> bytes:
    """Net benefit of each model against treat-all and treat-none."""
    fig, ax = _new(5.8, 4.4)
    first = curves[0][1]
    for name, curve in curves:
        ax.plot(curve.thresholds, curve.model, label=name)
    ax.plot(first.thresholds, first.treat_all, color="grey", label="treat all")
    ax.plot(first.thresholds, first.treat_none, color="black", linestyle="--", label="treat none")
    top = max(max(max(c.model) for _, c in curves), max(first.treat_all), 0.05)
    ax.set(xlabel="Threshold probability", ylabel="Net benefit", xlim=(0, 1),
           ylim=(-0.05, top * 1.1), title="Decision curve")
    ax.legend(loc="upper right", fontsize=8)
    return _png(fig)


def km_png(curves: Sequence[KaplanMeierCurve], title: str, p_value: float | None) -> bytes:
    """Kaplan–Meier curves with 95 % bands and the log-rank p in the corner."""
    fig, ax = _new(6.0, 4.4)
    for c in curves:
        line = ax.step(c.timeline, c.survival, where="post", label=f"{c.group} (n={c.n})")
        ax.fill_between(c.timeline, c.ci_low, c.ci_high, step="post", alpha=0.15,
                        color=line[0].get_color())
    if p_value is not None:
        ax.text(0.02, 0.04, f"log-rank p = {p_value:.3g}", transform=ax.transAxes)
    ax.set(xlabel="Months", ylabel="Survival probability", ylim=(0, 1.02), title=title)
    ax.legend(loc="upper right", fontsize=8)
    return _png(fig)


def forest_png(terms: Sequence[CoxTerm], title: str) -> bytes:
    """Hazard ratios with 95 % CIs on a log axis; 1 (no effect) marked."""
    fig, ax = _new(6.0, 0.9 + 0.45 * len(terms))
    y = np.arange(len(terms))[::-1]
    hr = np.array([t.hazard_ratio for t in terms])
    low = hr - np.array([t.hr_ci_low for t in terms])
    high = np.array([t.hr_ci_high for t in terms]) - hr
    ax.errorbar(hr, y, xerr=[low, high], fmt="s", capsize=3, color="black")
    ax.axvline(1.0, color="grey", linestyle=":")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yticks(y, [t.name for t in terms])
    ax.set(xlabel="Hazard ratio (95 % CI, log scale)", title=title)
    return _png(fig)
