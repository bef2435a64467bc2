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


# Opt-in sequences (issue 3). T2/IN/OPP/HBP at 1.5 T with gadoxetic acid for HBP; DWI is
# not tabulated: it is computed from its b0 image ("DWI_S0") and the tissue ADC
# (×10⁻⁶ mm²/s) as S(b) = S0·exp(−b·ADC), so the ADC map the writer derives is physical.
EXTRA_MR_PHASES = ("AP_EARLY", "HBP", "T2", "IN", "OPP", "DWI_B50", "DWI_B400", "DWI_B800",
                   "ADC")
EXTRA_CT_PHASES = ("CT_DP",)
#            air  fat  musc bone liver spl  kid  aorta port hv   ivc  tum  necr
_MR_EXTRA = {
    "AP_EARLY": (0.0, 93, 280, 305, 450, 600, 700, 1100, 300, 170, 190, 650, 212),
    "HBP": (0.0, 100, 300, 310, 820, 420, 520, 330, 330, 330, 330, 330, 230),
    "T2": (0.0, 60, 150, 200, 180, 420, 380, 40, 120, 120, 120, 360, 700),
    "IN": (0.0, 620, 260, 350, 460, 380, 360, 200, 200, 200, 200, 380, 250),
    "OPP": (0.0, 560, 240, 300, 440, 370, 350, 190, 190, 190, 190, 330, 240),
    "DWI_S0": (0.0, 40, 120, 150, 300, 520, 480, 30, 150, 150, 150, 520, 650),
    "ADC": (0.0, 400, 1400, 500, 1200, 850, 1900, 3000, 2500, 2500, 2500, 950, 2600),
}
_CT_EXTRA = {"CT_DP": (-1000, -100, 60, 470, 100, 105, 150, 130, 130, 130, 130, 75, 25)}

# Findings drawn only on request (lesions.py), per phase. Capsule: hypo on AP, hyper on
# PVP/DP. Mosaic: a second, less enhancing, fat-containing compartment (drops on OPP).
# Peritumoural: arterial-phase perfusion change that fades by PVP. Lipiodol: CT-dense.
FINDINGS = ("capsule", "mosaic", "pvtt", "feeding_artery", "peritumoral", "lipiodol")
_FINDINGS = {  # capsule mosaic pvtt artery peri lipiodol
    "PRE": (300, 360, 330, 160, 420, 220), "AP_EARLY": (340, 480, 600, 1100, 560, 215),
    "AP": (380, 620, 800, 1000, 720, 215), "PVP": (740, 470, 500, 640, 660, 225),
    "DP": (700, 420, 440, 520, 610, 240), "HBP": (340, 330, 330, 330, 700, 230),
    "T2": (260, 420, 360, 40, 190, 300), "IN": (350, 420, 380, 200, 460, 250),
    "OPP": (340, 280, 330, 190, 440, 240), "DWI_S0": (300, 480, 500, 30, 300, 400),
    "ADC": (1100, 1050, 1000, 3000, 1200, 1500),
    "CT_NC": (45, 42, 45, 40, 58, 650), "CT_AP": (80, 105, 120, 310, 105, 650),
    "CT_PVP": (125, 80, 85, 165, 112, 650), "CT_DP": (120, 70, 75, 130, 100, 650),
}


def intensities(phase: str) -> dict[str, float]:
    """Tissue → mean intensity for one phase (findings included for every phase)."""
    tables = {**_MR, **_CT, **_MR_EXTRA, **_CT_EXTRA}
    if phase not in tables:
        raise KeyError(f"unknown phase {phase!r}; known: {sorted(tables)}")
    values = {t: float(v) for t, v in zip(TISSUES, tables[phase], strict=True)}
    if phase in _FINDINGS:
        values.update({f: float(v) for f, v in zip(FINDINGS, _FINDINGS[phase], strict=True)})
    return values


def noise_sigma(modality: str) -> float:
    """Noise standard deviation: Rician-like for MR, Gaussian HU for CT."""
    return 18.0 if modality == "MR" else 10.0
