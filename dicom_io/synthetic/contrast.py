"""Tissue intensities per phase: the enhancement physics of the phantom, as data.

MR values are arbitrary units of a fat-suppressed T1 gradient echo (VIBE/LAVA/THRIVE);
CT values are Hounsfield units. HCC: arterial hyper-enhancement then wash-out below the
liver in portal/delayed phases; necrosis never enhances. Add a tissue or phase here and the
generator picks it up.
"""

from __future__ import annotations

TISSUES = ("air", "fat", "muscle", "bone", "liver", "spleen", "kidney", "aorta", "portal",
           "hepatic_vein", "ivc", "tumour", "necrosis")

MR_PHASES = ("PRE", "AP", "PVP", "DP")
CT_PHASES = ("CT_NC", "CT_AP", "CT_PVP")

#            air  fat  musc bone liver spl  kid  aorta port hv   ivc  tum  necr
_MR = {
    "PRE": (0.0, 90, 260, 300, 420, 330, 310, 160, 160, 160, 160, 330, 210),
    "AP": (0.0, 95, 290, 310, 500, 720, 820, 1000, 520, 260, 300, 860, 215),
    "PVP": (0.0, 100, 320, 320, 660, 620, 720, 640, 760, 720, 700, 520, 225),
    "DP": (0.0, 100, 320, 320, 610, 560, 640, 520, 560, 560, 560, 450, 240),
}
_CT = {
    "CT_NC": (-1000, -100, 50, 450, 58, 46, 32, 40, 40, 40, 40, 45, 15),
    "CT_AP": (-1000, -100, 55, 460, 78, 115, 190, 310, 150, 70, 90, 135, 18),
    "CT_PVP": (-1000, -100, 60, 470, 112, 120, 170, 165, 185, 175, 165, 82, 22),
}


def intensities(phase: str) -> dict[str, float]:
    """Tissue → mean intensity for one phase."""
    table = _MR if phase in _MR else _CT
    if phase not in table:
        raise KeyError(f"unknown phase {phase!r}; known: {sorted({*_MR, *_CT})}")
    return {t: float(v) for t, v in zip(TISSUES, table[phase], strict=True)}


def noise_sigma(modality: str) -> float:
    """Noise standard deviation: Rician-like for MR, Gaussian HU for CT."""
    return 18.0 if modality == "MR" else 10.0
