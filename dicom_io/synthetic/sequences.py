"""Per-sequence acquisition facts: when it is acquired, its native grid, its header values.

A series-selection rule or a header-based QC check is only tested if the phantom writes
what scanners write, so each sequence carries the parameters of a typical 1.5 T liver
protocol (or a 120 kV CT), and an acquisition time that follows the real order: survey,
T2/dual echo/DWI before contrast, the dynamic series at their delays, HBP at 20 min.
"""

from __future__ import annotations

from dataclasses import dataclass

from dicom_io.synthetic import contrast


@dataclass(frozen=True)
class Sequence:
    """Acquisition of one series; ``minutes`` is relative to the contrast injection."""

    family: str  # dynamic | hbp | t2 | dual_echo | dwi | adc | ct
    minutes: float
    scanning: tuple[str, ...] = ("GR",)
    variant: tuple[str, ...] = ("SK", "SP", "OSP")
    options: tuple[str, ...] = ("FS",)
    acquisition: str = "3D"
    tr_ms: float = 3.9
    te_ms: float = 1.4
    flip: float = 10.0
    echo_train: int = 1
    b_value: int | None = None
    echo_number: int = 1


_DYNAMIC = {"PRE": -2.0, "AP_EARLY": 0.25, "AP": 0.42, "PVP": 1.17, "DP": 3.0}
SEQUENCES: dict[str, Sequence] = {
    **{name: Sequence("dynamic", minutes) for name, minutes in _DYNAMIC.items()},
    "HBP": Sequence("hbp", 20.0, flip=25.0),
    "T2": Sequence("t2", -10.0, ("SE",), ("SK", "SP"), ("FS", "PFP"), "2D", 4000.0, 85.0,
                   150.0, 20),
    "IN": Sequence("dual_echo", -12.0, ("GR",), ("SP",), (), "2D", 180.0, 4.6, 70.0,
                   echo_number=2),
    "OPP": Sequence("dual_echo", -12.0, ("GR",), ("SP",), (), "2D", 180.0, 2.3, 70.0),
    **{f"DWI_B{b}": Sequence("dwi", -7.0, ("SE", "EP"), ("SK", "SP"), ("FS",), "2D", 5000.0,
                             60.0, 90.0, 1, b) for b in (50, 400, 800)},
    "ADC": Sequence("adc", -7.0, ("SE", "EP"), ("SK", "SP"), ("FS",), "2D", 5000.0, 60.0,
                    90.0),
    "CT_NC": Sequence("ct", -3.0), "CT_AP": Sequence("ct", 0.58),
    "CT_PVP": Sequence("ct", 1.17), "CT_DP": Sequence("ct", 3.0),
}
MR_SEQUENCES = (*contrast.MR_PHASES[:1], "AP_EARLY", *contrast.MR_PHASES[1:], "HBP", "T2",
                "IN", "OPP", "DWI_B50", "DWI_B400", "DWI_B800", "ADC")
CT_SEQUENCES = (*contrast.CT_PHASES, "CT_DP")
DYNAMIC = tuple(_DYNAMIC)

# family → (pixel mm, slice mm, phase-encoding FOV fraction) when not co-registered;
# None keeps the arterial grid (the dynamic T1 series share it, as one acquisition does)
NATIVE: dict[str, tuple[float, float, float] | None] = {
    "dynamic": None, "hbp": None, "t2": (1.25, 6.0, 0.8), "dual_echo": (1.5, 6.0, 0.8),
    "dwi": (3.0, 6.0, 0.8), "adc": (3.0, 6.0, 0.8), "ct": None,
}


def sequence(name: str) -> Sequence:
    """The acquisition of a named series; unknown names raise with the known ones."""
    if name not in SEQUENCES:
        raise KeyError(f"unknown sequence {name!r}; known: {sorted(SEQUENCES)}")
    return SEQUENCES[name]


def post_contrast(name: str, gadoxetic: bool) -> bool:
    """Acquired after injection: T2 and DWI move into the gadoxetic 20-min wait."""
    seq = sequence(name)
    if gadoxetic and seq.family in ("t2", "dwi", "adc"):
        return True
    return seq.minutes > 0


def acquisition_minutes(name: str, gadoxetic: bool) -> float:
    """Minutes after injection at which the series starts (negative: before)."""
    seq = sequence(name)
    if gadoxetic and seq.family in ("t2", "dwi", "adc"):
        return {"t2": 6.0, "dwi": 9.0, "adc": 9.0}[seq.family]
    return seq.minutes
