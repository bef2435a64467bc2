"""A cohort of synthetic patients with planted, documented outcome effects (issue 3).

Each patient is drawn from a stream of its own (``[seed, index]``), so patient 7 is the
same in a 10- and a 500-patient cohort, and ``images=False`` writes the very same
cohort.csv fast, for the statistics tests. Effects and noise are data in
``cohort_effects.toml``; the phantom of each patient is built from the same row (tumour
number and size, PVTT, dilated arteries, margin, enhancement, necrosis …) so the images
carry the signal the row says they do.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from dicom_io.synthetic import timepoints
from dicom_io.synthetic.anatomy import PhantomSpec

SCENARIOS = ("immunotherapy", "conversion", "tace", "tki-pd1", "haic")
_SEQUENCES = {"haic": ("PRE", "AP", "PVP", "DP", "HBP", "T2", "IN", "OPP", "DWI_B800")}
_IMAGE_SIGNAL = 31  # stream purpose of the image-borne signals added for the deep models
_MONTHS = {"tace": [0.0, 1.5, 3.0]}  # after the 1st and 2nd TACE; systemic: 2 and 4 months
_VENDORS = ("siemens", "ge", "philips", "uih")
Row = dict[str, Any]


def load_effects(path: Path | None = None) -> dict[str, Any]:
    """The effects file (default: the shipped ``cohort_effects.toml``)."""
    if path is None:
        text = resources.files("dicom_io.synthetic").joinpath("cohort_effects.toml").read_text()
    else:
        text = Path(path).read_text()
    return tomllib.loads(text)


def simulate(patients: int, seed: int, scenario: str = "immunotherapy",
             effects: dict[str, Any] | None = None) -> list[Row]:
    """The cohort's rows (clinical, image findings and outcomes), no images."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {SCENARIOS}")
    cfg = effects or load_effects()
    return [_patient(i, np.random.default_rng([seed, i]), scenario, cfg,
                     np.random.default_rng([seed, i, _IMAGE_SIGNAL]))
            for i in range(patients)]


def _patient(index: int, rng: np.random.Generator, scenario: str, cfg: dict[str, Any],
             signal_rng: np.random.Generator) -> Row:
    row: Row = {"patient_id": f"HCC{index:05d}", "scenario": scenario}
    row.update(_clinical(rng, scenario))
    row.update(_findings(rng, cfg["scenario_mix"][scenario], cfg["image"], row))
    row.update(_image_signal(signal_rng, cfg.get("image_signal", {})))
    row.update(_staging(row))
    row.update(_outcomes(rng, scenario, cfg, row))
    return row


def _lognormal(rng: np.random.Generator, median: float, sd_log: float) -> float:
    return float(median * math.exp(rng.normal(0.0, sd_log)))


def _clinical(rng: np.random.Generator, scenario: str) -> Row:
    """Baseline laboratory and demographic values, with realistic ranges and units."""
    afp = _lognormal(rng, 150.0, 2.8)
    responded = afp >= 7 and rng.random() < 0.35
    ratio = rng.uniform(0.05, 0.38) if responded else rng.uniform(0.45, 1.8)
    bilirubin = _lognormal(rng, 15.0, 0.45)
    albumin = float(np.clip(rng.normal(38.0, 5.0), 22, 52))
    platelets = float(np.clip(rng.normal(160.0, 65.0), 30, 450))
    neut, lymph = float(np.clip(rng.normal(3.8, 1.3), 0.8, 12)), float(
        np.clip(rng.normal(1.4, 0.5), 0.3, 4))
    haic = scenario == "haic"
    return {
        "age": int(np.clip(rng.normal(55, 11), 25, 85)), "sex": "M" if rng.random() < 0.85
        else "F", "hbv": int(rng.random() < 0.8), "ecog": int(rng.choice(3, p=[0.6, 0.35, 0.05])),
        "afp": round(afp, 1), "afp_1m": round(afp * ratio, 1),
        "afp_response": "normal" if afp < 7 else ("response" if responded else "no_response"),
        "pivka_ii": round(_lognormal(rng, 300.0, 1.5), 1),
        "prothrombin_time_s": round(float(rng.normal(12.8, 1.3)), 1),
        "platelets": round(platelets, 0), "neutrophils": round(neut, 2),
        "lymphocytes": round(lymph, 2), "monocytes": round(float(rng.normal(0.45, 0.15)), 2),
        "nlr": round(neut / lymph, 2), "plr": round(platelets / lymph, 1),
        "bilirubin": round(bilirubin, 1), "albumin": round(albumin, 1),
        "albi": round(0.66 * math.log10(bilirubin) - 0.085 * albumin, 3),
        "ast": round(_lognormal(rng, 50.0, 0.5), 0), "alt": round(_lognormal(rng, 40.0, 0.5), 0),
        "alp": round(_lognormal(rng, 120.0, 0.4), 0), "ggt": round(_lognormal(rng, 110.0, 0.7), 0),
        "crp": round(_lognormal(rng, 6.0, 0.9), 1),
        "ascites": int(rng.random() < 0.12), "height_cm": round(float(rng.normal(168, 7)), 1),
        "prior_treatment": str(rng.choice(["none", "tace", "resection", "ablation"],
                                          p=[0.5, 0.3, 0.12, 0.08])),
        "haic_cycles": int(rng.integers(2, 7)) if haic else 0,
        "haic_regimen": "FOLFOX" if haic else "",
    }


def _findings(rng: np.random.Generator, mix: list[float], img: dict[str, Any], row: Row) -> Row:
    lo, hi = img["largest_tumour_range_mm"]
    largest = float(np.clip(_lognormal(rng, img["largest_tumour_median_mm"], 0.45), lo, hi))
    number = int(rng.choice(4, p=img["tumour_number_p"])) + 1
    pvtt_p, ehs_p = mix
    big = largest > 50
    regular = rng.random() < img["regular_margin_p"] - (0.15 if big else 0.0)
    return {
        "tumour_number": number, "largest_tumour_mm": round(largest, 1),
        "pvtt": int(rng.random() < pvtt_p), "extrahepatic_mets": int(rng.random() < ehs_p),
        "dilated_vasculature": int(rng.random() < img["dilated_vasculature_p"]
                                   + (0.15 if big else -0.1)),
        "regular_margin": int(regular),
        "peritumoral_enhancement": int(rng.random() < img["peritumoral_enhancement_p"]),
        "necrosis": int(rng.random() < img["necrosis_p"] + (0.2 if big else -0.1)),
        "arterial_enhancement": round(float(np.clip(rng.normal(1.0, 0.3), 0.3, 1.8)), 2),
        "washout": int(rng.random() < img["washout_p"]),
        "capsule": int(rng.random() < img["capsule_p"]),
        "cirrhosis": int(row["hbv"] and rng.random() < img["cirrhosis_given_hbv_p"]),
        "vendor": _VENDORS[int(rng.integers(len(_VENDORS)))],
    }


def _image_signal(rng: np.random.Generator, cfg: dict[str, Any]) -> Row:
    """Image-borne signals drawn from a stream of their own, so adding them left every
    earlier column of every cohort unchanged."""
    mean, sd = float(cfg.get("tumour_adc_mean", 1000.0)), float(cfg.get("tumour_adc_sd", 180.0))
    lo, hi = cfg.get("tumour_adc_range", [600.0, 1500.0])
    return {"tumour_adc": round(float(np.clip(rng.normal(mean, sd), lo, hi)), 0)}


# Terms a scenario may add to the response log-odds ([scenario_response.<scenario>]):
# each maps a row to the covariate its coefficient multiplies.
SCENARIO_TERMS: dict[str, Any] = {
    "intercept": lambda r: 1.0,
    "tumour_adc_per_100": lambda r: (float(r["tumour_adc"]) - 1000.0) / 100.0,
    "arterial_enhancement": lambda r: float(r["arterial_enhancement"]) - 1.0,
    "necrosis": lambda r: float(r["necrosis"]),
    "albi": lambda r: float(r["albi"]) + 2.6,
    "log2_ast": lambda r: math.log2(float(r["ast"]) / 50.0),
    "pvtt": lambda r: float(r["pvtt"]),
    "extrahepatic_mets": lambda r: float(r["extrahepatic_mets"]),
}


def scenario_terms(cfg: dict[str, Any], scenario: str, row: Row) -> float:
    """The scenario's extra response log-odds (0 when the effects file has none)."""
    table = cfg.get("scenario_response", {}).get(scenario, {})
    unknown = sorted(set(table) - set(SCENARIO_TERMS))
    if unknown:
        raise ValueError(f"scenario_response.{scenario}: unknown term(s) {unknown}; "
                         f"known: {sorted(SCENARIO_TERMS)}")
    return float(sum(beta * SCENARIO_TERMS[name](row) for name, beta in table.items()))


def _staging(row: Row) -> Row:
    """Child-Pugh (bilirubin, albumin, PT, ascites), ALBI grade, BCLC and CNLC stage."""
    points = (1 + (row["bilirubin"] > 34) + (row["bilirubin"] > 50)
              + 1 + (row["albumin"] < 35) + (row["albumin"] < 28)
              + 1 + (row["prothrombin_time_s"] > 15) + (row["prothrombin_time_s"] > 17)
              + 1 + 2 * row["ascites"] + 1)
    child = "A" if points <= 6 else "B" if points <= 9 else "C"
    n, size = row["tumour_number"], row["largest_tumour_mm"]
    if child == "C" or row["ecog"] > 2:
        bclc, cnlc = "D", "IV"
    elif row["pvtt"] or row["extrahepatic_mets"] or row["ecog"] > 0:
        bclc = "C"
        cnlc = "IIIb" if row["extrahepatic_mets"] else "IIIa" if row["pvtt"] else (
            "Ib" if n == 1 else "IIa" if n <= 3 else "IIb")
    else:
        bclc = "A" if n == 1 or (n <= 3 and size <= 30) else "B"
        cnlc = ("Ia" if n == 1 and size <= 50 else "Ib" if n == 1 or size <= 30 else
                "IIa" if n <= 3 else "IIb")
    return {"child_pugh": child, "child_pugh_score": int(points), "bclc": bclc, "cnlc": cnlc,
            "albi_grade": 1 if row["albi"] <= -2.60 else 2 if row["albi"] <= -1.39 else 3}


def _outcomes(rng: np.random.Generator, scenario: str, cfg: dict[str, Any], row: Row) -> Row:
    beta = cfg["response"]
    u = (cfg["intercept"][scenario] + float(rng.logistic())
         + beta["afp_response"] * (row["afp_response"] == "response")
         + beta["platelets_per_100"] * (row["platelets"] - 160) / 100
         + beta["dilated_vasculature"] * row["dilated_vasculature"]
         + beta["arterial_enhancement"] * (row["arterial_enhancement"] - 1.0)
         + beta["necrosis"] * row["necrosis"]
         + beta["peritumoral_enhancement"] * row["peritumoral_enhancement"]
         + beta["regular_margin"] * row["regular_margin"]
         + beta["pvtt"] * row["pvtt"] + beta["extrahepatic_mets"] * row["extrahepatic_mets"]
         + beta["log2_largest_tumour_per_cm"] * math.log2(row["largest_tumour_mm"] / 10)
         + scenario_terms(cfg, scenario, row))
    pd = u < -beta["pd_margin"]
    recist = "PD" if pd else "PR" if u > 0 else "SD"
    m = u + cfg["mrecist_bonus"][scenario]
    mrecist = "PD" if pd else "CR" if m > beta["cr_threshold"] else "PR" if m > 0 else "SD"
    out: Row = {"best_response_recist": recist, "best_response_mrecist": mrecist,
                "orr": int(recist in ("CR", "PR")), "pd": int(pd), "dcr": int(not pd)}
    out.update(_survival(rng, cfg["survival"], row, out, _MONTHS.get(scenario, [0, 2, 4])[1]))
    out["dcb"] = int(mrecist in ("CR", "PR") and out["pfs_months"] >= 6.0)
    return out


def _survival(rng: np.random.Generator, s: dict[str, Any], row: Row, resp: Row,
              first_visit: float) -> Row:
    common = (s["albi"] * (row["albi"] + 2.6) + s["pvtt"] * row["pvtt"]
              + s["extrahepatic_mets"] * row["extrahepatic_mets"] + s["ecog"] * row["ecog"]
              + s["log10_afp"] * (math.log10(max(row["afp"], 1.0)) - 2)
              + s["responder"] * resp["orr"])
    os_lp = common + s["progression"] * resp["pd"]
    pfs = (first_visit * float(rng.uniform(0.85, 1.0)) if resp["pd"] else first_visit
           + float(rng.exponential(1.0 / (s["pfs_base_per_month"] * math.exp(common)))))
    os = max(pfs + 0.5, float(rng.exponential(1.0 / (s["os_base_per_month"]
                                                       * math.exp(os_lp)))))
    follow = float(rng.uniform(*s["followup_months"]))
    cuts = s["risk_cuts"]
    risk = ["low", "low-medium", "medium-high", "high"][sum(os_lp > c for c in cuts)]
    return {"risk_class": risk, "os_months": round(min(os, follow), 2),
            "os_event": int(os <= follow), "pfs_months": round(min(pfs, follow), 2),
            "pfs_event": int(pfs <= follow)}


COLUMNS = (
    "patient_id", "scenario", "age", "sex", "hbv", "child_pugh", "child_pugh_score", "bclc",
    "cnlc", "ecog", "afp", "afp_1m", "afp_response", "pivka_ii", "platelets", "bilirubin",
    "albumin", "albi", "albi_grade", "ast", "alt", "alp", "ggt", "crp", "prothrombin_time_s",
    "neutrophils", "lymphocytes", "monocytes", "nlr", "plr", "ascites", "prior_treatment",
    "haic_cycles", "haic_regimen", "pvtt", "extrahepatic_mets", "tumour_number",
    "largest_tumour_mm", "dilated_vasculature", "regular_margin", "peritumoral_enhancement",
    "necrosis", "arterial_enhancement", "washout", "capsule", "cirrhosis", "tumour_adc", "vendor",
    "height_cm", "best_response_recist", "best_response_mrecist", "orr", "dcb", "pd", "dcr",
    "risk_class", "os_months", "os_event", "pfs_months", "pfs_event",
)


def write_cohort(out_dir: Path, patients: int, seed: int, scenario: str = "immunotherapy",
                 modality: str = "mr", timepoints_: int = 1, images: bool = True, *,
                 effects: Path | None = None, vendor: str | None = None) -> Path:
    """Write ``OUT_DIR/cohort.csv`` and, with ``images``, each patient's studies.

    Studies go to ``OUT_DIR/<patient_id>/tp<k>/{dicom,ground_truth}``; tp0 is the
    baseline, later ones follow the patient's planned best response.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = simulate(patients, seed, scenario, load_effects(effects))
    path = out_dir / "cohort.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    if images:
        for index, row in enumerate(rows):
            write_patient(out_dir / row["patient_id"], row, seed * 100_000 + index, modality,
                          timepoints_, vendor)
    return path


def patient_spec(row: Row, modality: str, vendor: str | None = None) -> PhantomSpec:
    """The phantom that shows this row's findings."""
    mod = modality.upper()
    rng = np.random.default_rng(int(row["patient_id"][3:]))
    largest = float(row["largest_tumour_mm"])
    others = [max(12.0, largest * float(rng.uniform(0.3, 0.7)))
              for _ in range(int(row["tumour_number"]) - 1)]
    sequences = _SEQUENCES.get(row["scenario"]) if mod == "MR" else None
    return PhantomSpec(
        modality=mod, sequences=sequences, vendor=vendor or row["vendor"],
        lesion_plan=(largest, *others), necrotic_fraction=0.4 if row["necrosis"] else 0.0,
        pvtt=bool(row["pvtt"]), feeding_arteries=bool(row["dilated_vasculature"]),
        margin="regular" if row["regular_margin"] else "infiltrative",
        satellites=0 if row["regular_margin"] else 2,
        peritumoral_enhancement=bool(row["peritumoral_enhancement"]),
        tumour_enhancement=float(row["arterial_enhancement"]), washout=bool(row["washout"]),
        capsule=bool(row["capsule"]), cirrhosis=bool(row["cirrhosis"]),
        tumour_adc=float(row["tumour_adc"]) if row.get("tumour_adc") not in (None, "")
        else None)


def write_patient(out_dir: Path, row: Row, seed: int, modality: str, count: int,
                  vendor: str | None = None) -> list[dict[str, Any]]:
    """One patient's baseline and ``count - 1`` follow-up studies."""
    spec = patient_spec(row, modality, vendor)
    months = _MONTHS.get(row["scenario"], [0.0, 2.0, 4.0])
    months = months + [months[-1] + 2.0 * k for k in range(1, max(0, count - len(months)) + 1)]
    courses = timepoints.plan_courses(row["best_response_recist"],
                                      row["best_response_mrecist"],
                                      len(spec.lesion_plan or ()), count - 1,
                                      lipiodol=row["scenario"] == "tace")
    day = dt.date(2024, 1, 8) + dt.timedelta(days=int(row["patient_id"][3:]) * 3 % 700)
    patient = {"PatientSex": row["sex"],
               "PatientBirthDate": f"{day.year - int(row['age'])}0101",
               "PatientName": f"SYNTH^{row['patient_id']}"}
    return timepoints.write_timepoints(out_dir, seed, spec, courses, months,
                                       baseline_date=day, patient_id=row["patient_id"],
                                       patient=patient)
