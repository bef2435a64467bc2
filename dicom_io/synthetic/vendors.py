"""How four vendors name series and what private blocks they add (styles, not copies).

Series-selection rules meet these descriptions in the wild, so each style follows the
vendor's habits: Siemens lower-case protocol names (``t1_vibe_fs_tra_bh``), GE "Ax LAVA"
titles, Philips sequence acronyms (eTHRIVE, T2W_SPAIR), United Imaging's quick3d/fse.
Private blocks carry the b-value where each vendor is known to hide it (Siemens 0019,
GE 0043 with its 10⁹ offset, Philips 2001); the UIH block is an imitation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom.dataset import Dataset

VENDORS = ("siemens", "ge", "philips", "uih")


@dataclass(frozen=True)
class VendorStyle:
    """Equipment identity and series descriptions of one vendor's liver protocol."""

    manufacturer: str
    model: str
    software: str
    mr: dict[str, str]
    ct: dict[str, str]
    kernel: str
    extra: dict[str, str] = field(default_factory=dict)  # LOCALIZER, SUB, MPR


def _dwi(fmt: str) -> dict[str, str]:
    return {f"DWI_B{b}": fmt.format(b=b) for b in (50, 400, 800)}


STYLES: dict[str, VendorStyle] = {
    "siemens": VendorStyle(
        "SIEMENS", "MAGNETOM Aera", "syngo MR E11",
        {"PRE": "t1_vibe_fs_tra_bh_pre", "AP_EARLY": "t1_vibe_fs_tra_bh_early_art",
         "AP": "t1_vibe_fs_tra_bh_late_art", "PVP": "t1_vibe_fs_tra_bh_pv",
         "DP": "t1_vibe_fs_tra_bh_3min", "HBP": "t1_vibe_fs_tra_bh_20min_hbp",
         "T2": "t2_haste_fs_tra_mbh", "IN": "t1_fl2d_in-phase_tra_bh",
         "OPP": "t1_fl2d_opp-phase_tra_bh", **_dwi("ep2d_diff_tra_b{b}_TRACEW"),
         "ADC": "ep2d_diff_tra_ADC", "DYNAMIC": "t1_vibe_fs_tra_bh_dyn"},
        {"CT_NC": "Abdomen native 3.0 Br40", "CT_AP": "Arterial 3.0 Br40",
         "CT_PVP": "PV 3.0 Br40", "CT_DP": "Delayed 3.0 Br40"},
        "Br40", {"LOCALIZER": "localizer", "SUB": "t1_vibe_fs_tra_bh_art_SUB",
                 "MPR": "t1_vibe_fs_pv_cor_MPR", "CT_LOCALIZER": "Topogram 0.6 T20s"}),
    "ge": VendorStyle(
        "GE MEDICAL SYSTEMS", "SIGNA Artist", "29\\LX\\MR Software release:RX29.1",
        {"PRE": "Ax LAVA-Flex PRE", "AP_EARLY": "Ax LAVA EARLY ART",
         "AP": "Ax LAVA LATE ART", "PVP": "Ax LAVA PV", "DP": "Ax LAVA DELAY 3MIN",
         "HBP": "Ax LAVA HBP 20min", "T2": "Ax T2 FRFSE FS", "IN": "Ax DUAL ECHO IN PHASE",
         "OPP": "Ax DUAL ECHO OUT PHASE", **_dwi("Ax DWI b{b}"),
         "ADC": "Apparent Diffusion Coefficient (mm2/s)", "DYNAMIC": "Ax LAVA MP DYN"},
        {"CT_NC": "NON CON 2.5mm STND", "CT_AP": "ART 2.5mm STND",
         "CT_PVP": "PORTAL 2.5mm STND", "CT_DP": "DELAY 2.5mm STND"},
        "STANDARD", {"LOCALIZER": "3 Plane Loc", "SUB": "SUB LAVA ART",
                     "MPR": "COR LAVA PV REFORMAT", "CT_LOCALIZER": "Scout"}),
    "philips": VendorStyle(
        "Philips Medical Systems", "Ingenia", "5.7.1\\5.7.1.2",
        {"PRE": "eTHRIVE_pre", "AP_EARLY": "eTHRIVE_early_art", "AP": "eTHRIVE_art",
         "PVP": "eTHRIVE_pv", "DP": "eTHRIVE_3min", "HBP": "eTHRIVE_HBP_20min",
         "T2": "T2W_SPAIR", "IN": "T1W_FFE_INPHASE BH", "OPP": "T1W_FFE_OPPPHASE BH",
         **_dwi("DWI_b{b}"), "ADC": "DWI_ADC", "DYNAMIC": "eTHRIVE_DYN"},
        {"CT_NC": "Plain 3mm iDose", "CT_AP": "Arterial 3mm iDose",
         "CT_PVP": "Portal 3mm iDose", "CT_DP": "Delayed 3mm iDose"},
        "B", {"LOCALIZER": "SURVEY", "SUB": "SUB eTHRIVE_art", "MPR": "eTHRIVE_pv_COR",
              "CT_LOCALIZER": "Surview"}),
    "uih": VendorStyle(
        "UIH", "uMR 780", "R004",
        {"PRE": "t1_quick3d_tra_fs_bh_pre", "AP_EARLY": "t1_quick3d_tra_fs_bh_art_early",
         "AP": "t1_quick3d_tra_fs_bh_art", "PVP": "t1_quick3d_tra_fs_bh_pv",
         "DP": "t1_quick3d_tra_fs_bh_delay", "HBP": "t1_quick3d_tra_fs_bh_hbp",
         "T2": "t2_fse_tra_fs_rt", "IN": "t1_gre_dual_tra_in_phase",
         "OPP": "t1_gre_dual_tra_opp_phase", **_dwi("dwi_tra_b{b}"), "ADC": "dwi_tra_ADC",
         "DYNAMIC": "t1_quick3d_tra_fs_dyn"},
        {"CT_NC": "Plain 1.0 B_SOFT_B", "CT_AP": "Arterial 1.0 B_SOFT_B",
         "CT_PVP": "Venous 1.0 B_SOFT_B", "CT_DP": "Delay 1.0 B_SOFT_B"},
        "B_SOFT_B", {"LOCALIZER": "localizer", "SUB": "t1_quick3d_art_sub",
                     "MPR": "t1_quick3d_pv_cor_mpr", "CT_LOCALIZER": "Topo"}),
}


def style(vendor: str) -> VendorStyle:
    """A vendor's style by name; an unknown name raises with the known ones."""
    if vendor not in STYLES:
        raise ValueError(f"unknown vendor {vendor!r}; choose one of {VENDORS}")
    return STYLES[vendor]


def add_private(ds: Dataset, vendor: str, b_value: int | None) -> None:
    """The vendor's private habits (a creator element, then its elements)."""
    if vendor == "siemens":
        csa = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
        csa.add_new(0x08, "CS", "IMAGE NUM 4")
        csa.add_new(0x09, "LO", "20231015")
        if ds.Modality == "MR":
            mr = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
            mr.add_new(0x0B, "DS", "240")
            if b_value is not None:
                mr.add_new(0x0C, "IS", str(b_value))
    elif vendor == "ge":
        ds.private_block(0x0009, "GEMS_IDEN_01", create=True).add_new(0x01, "LO", "GE_GENESIS")
        if b_value is not None:  # GE stores b + 10⁹ in the first slop integer
            parm = ds.private_block(0x0043, "GEMS_PARM_01", create=True)
            parm.add_new(0x39, "IS", [str(1_000_000_000 + b_value), "8", "0", "0"])
    elif vendor == "philips":
        ds.private_block(0x2005, "Philips MR Imaging DD 001", create=True).add_new(
            0x0E, "FL", 1.0)
        if b_value is not None:
            ds.private_block(0x2001, "Philips Imaging DD 001", create=True).add_new(
                0x03, "FL", float(b_value))
    elif vendor == "uih":
        ds.private_block(0x0065, "Uih", create=True).add_new(0x02, "LO", "liver_protocol")
