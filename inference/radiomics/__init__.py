"""Radiomics features for response models: pyradiomics on tumour and peritumoural ring.

``extract`` builds per-(phase, region) tasks and runs them in parallel with a per-study
``cache``; ``icc`` filters features by their reproducibility across perturbed masks.
"""

from inference.radiomics.cache import FeatureCache
from inference.radiomics.extract import (
    REGIONS,
    SETTINGS_DIR,
    extract_all,
    make_tasks,
    region_mask,
    ring_mask,
    settings_path,
)
from inference.radiomics.icc import PERTURBATIONS, icc_2_1, perturb, reproducible_features

__all__ = [
    "PERTURBATIONS",
    "REGIONS",
    "SETTINGS_DIR",
    "FeatureCache",
    "extract_all",
    "icc_2_1",
    "make_tasks",
    "perturb",
    "region_mask",
    "reproducible_features",
    "ring_mask",
    "settings_path",
]
