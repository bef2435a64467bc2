"""The discrimination a phantom cohort's planted effects allow: the ROC AUC of the noise-free
response log-odds (``dicom_io.synthetic.cohort``) against the drawn outcome.

A model is judged beside this bound: no model can separate better than the planted linear
predictor does (the logistic noise is the rest). ``image`` keeps only the terms the images
show (tumour findings, enhancement, necrosis, ADC), ``all`` adds the clinical ones.

    python -m plugin.research.planted_bounds COHORT_DIR --label dcr --last 60
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from dicom_io.synthetic.cohort import SCENARIO_TERMS, load_effects
from plugin.research.deep_cohort import typed_row
from plugin.research.radiomics_cohort import read_rows

__all__ = ["bounds", "linear_predictor"]

CLINICAL_TERMS = frozenset({"albi", "log2_ast", "intercept"})


def linear_predictor(row: Mapping[str, Any], effects: Mapping[str, Any], image_only: bool
                     ) -> float:
    """The planted response log-odds of a row without its noise (image terms or all)."""
    b = effects["response"]
    value = (b["arterial_enhancement"] * (row["arterial_enhancement"] - 1.0)
             + b["necrosis"] * row["necrosis"]
             + b["peritumoral_enhancement"] * row["peritumoral_enhancement"]
             + b["regular_margin"] * row["regular_margin"]
             + b["dilated_vasculature"] * row["dilated_vasculature"] + b["pvtt"] * row["pvtt"]
             + b["log2_largest_tumour_per_cm"] * math.log2(row["largest_tumour_mm"] / 10))
    extra = effects.get("scenario_response", {}).get(row["scenario"], {})
    for name, beta in extra.items():
        if image_only and name in CLINICAL_TERMS:
            continue
        value += beta * SCENARIO_TERMS[name](row)
    if image_only:
        return float(value)
    return float(value + b["afp_response"] * (row["afp_response"] == "response")
                 + b["platelets_per_100"] * (row["platelets"] - 160) / 100
                 + b["extrahepatic_mets"] * row["extrahepatic_mets"])


def bounds(rows: Sequence[Mapping[str, str]], label: str, effects_file: Path | None = None
           ) -> dict[str, float]:
    """AUC of the image-borne and of the full planted predictor for ``label``."""
    effects = load_effects(effects_file)
    typed = [typed_row(r) for r in rows]
    y = np.array([int(r[label]) for r in typed])
    out = {}
    for name, image_only in (("image", True), ("all", False)):
        score = np.array([linear_predictor(r, effects, image_only) for r in typed])
        sign = -1.0 if label == "pd" else 1.0
        out[name] = round(float(roc_auc_score(y, sign * score)), 4)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cohort", type=Path)
    parser.add_argument("--label", required=True)
    parser.add_argument("--last", type=int, default=0, help="only the last N patients")
    parser.add_argument("--effects", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = read_rows(args.cohort)
    if args.last:
        rows = rows[-args.last:]
    print(bounds(rows, args.label, args.effects))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
