"""Calibration and decision-curve statistics on examples small enough to work by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from inference.evaluation import calibration as cal
from inference.evaluation.decision_curve import net_benefit

P = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
Y = np.array([0, 0, 1, 0, 1, 0, 1, 1], dtype=bool)


def test_hosmer_lemeshow_by_hand() -> None:
    # four groups of two; (O − E)² / (E (1 − p̄)) per group:
    # {.1,.2}: O 0, E .3, p̄ .15 → .09/.255 ; {.3,.4}: O 1, E .7, p̄ .35 → .09/.455
    # {.5,.6}: O 1, E 1.1, p̄ .55 → .01/.495 ; {.7,.8}: O 2, E 1.5, p̄ .75 → .25/.375
    expected = 0.09 / 0.255 + 0.09 / 0.455 + 0.01 / 0.495 + 0.25 / 0.375
    hl = cal.hosmer_lemeshow(P, Y, n_groups=4)
    assert hl.statistic == pytest.approx(expected, rel=1e-12)
    assert hl.statistic == pytest.approx(1.237612, abs=1e-6)
    assert hl.df == 2
    assert hl.p_value == pytest.approx(math.exp(-expected / 2), rel=1e-12)  # χ²₂ survival
    assert [g.events for g in hl.groups] == [0, 1, 1, 2]


def test_brier_by_hand() -> None:
    # squared errors .01 .04 .49 .16 .25 .36 .09 .04 → 1.44 / 8
    assert cal.brier_score(P, Y) == pytest.approx(0.18, abs=1e-12)


def test_spiegelhalter_by_hand() -> None:
    # Σ(y−p)(1−2p) = −.12 ; Σ(1−2p)² p(1−p) = .2592
    z = -0.12 / math.sqrt(0.2592)
    result = cal.spiegelhalter_z(P, Y)
    assert result.z == pytest.approx(z, rel=1e-12)
    assert result.p_value == pytest.approx(math.erfc(abs(z) / math.sqrt(2)), rel=1e-12)


def test_calibration_curve_bins() -> None:
    bins = cal.calibration_curve(P, Y, n_bins=2)
    assert [(b.n, b.events) for b in bins] == [(4, 1), (4, 3)]
    assert bins[0].mean_predicted == pytest.approx(0.25)
    assert bins[1].observed == 0.75


def test_net_benefit_by_hand() -> None:
    p = np.array([0.1, 0.3, 0.6, 0.8])
    y = np.array([0, 1, 0, 1], dtype=bool)
    dc = net_benefit(p, y, np.array([0.2, 0.5]))
    # pt .2 (odds ¼): treat .3 .6 .8 → TP 2, FP 1 → 2/4 − ¼·¼ ; treat all: ½ − ½·¼
    # pt .5 (odds 1): treat .6 .8 → TP 1, FP 1 → ¼ − ¼ ; treat all: ½ − ½
    assert dc.model == pytest.approx((0.4375, 0.0))
    assert dc.treat_all == pytest.approx((0.375, 0.0))
    assert dc.treat_none == (0.0, 0.0)
