"""Tiny image response bundles for tests: real exported graphs, trained for seconds on
random tensors (never a shipped recipe)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from inference.bundle import Bundle, load_bundle
from inference.training.response_bundle import write_bundle_toml

DCR_CHANNELS = ("T2", "DWI", "AP", "PVP", "DP")
DCR_CLINICAL = ("age", "albi", "ast", "sex")
DCR_FEATURES = ("clinical:age", "clinical:albi", "clinical:ast", "clinical:sex=F")


def tiny_dcr_bundle(folder: Path, crop: int = 32, seed: int = 0) -> Bundle:
    """A seed-004 bundle (CNN + SVM, CAM) fitted for one epoch on random crops."""
    from inference.training.deep_dcr import DcrConfig, export_dcr, fit_dcr

    rng = np.random.default_rng(seed)
    n, margin = 24, 4
    y = np.arange(n) % 2
    images = rng.normal(1.0, 0.2, (n, len(DCR_CHANNELS), 1, crop + 2 * margin,
                                   crop + 2 * margin)).astype(np.float32)
    images[y == 1, 1, :, crop // 2:crop // 2 + 8, crop // 2:crop // 2 + 8] += 1.0
    clinical = np.column_stack([rng.normal(55, 10, n), rng.normal(-2.5, 0.4, n),
                                rng.lognormal(3.9, 0.5, n), rng.integers(0, 2, n)])
    config = DcrConfig(width=2, features=4, epochs=1, folds=2, margin=margin, seed=seed,
                       kernel="linear")
    model = fit_dcr(images, clinical.astype(np.float32), y, [2], config)
    export_dcr(model, (crop, crop), folder)
    write_bundle_toml(folder, {
        "name": "test-dcr-image", "version": "0.0.1", "family": "response",
        "intended_use": "RESEARCH USE ONLY - test bundle.",
        "model_file": "model.onnx",
        "inputs": {"kind": "image", "phases": list(DCR_CHANNELS),
                   "clinical": list(DCR_CLINICAL), "features": list(DCR_FEATURES)},
        "preprocessing": {"spacing_mm": [3.0, 3.0, 3.0], "normalisation": "liver_median",
                          "patch_size": [1, crop + 8, crop + 8]},
        "outputs": {"labels": ["progressive disease", "disease control"]},
        "thresholds": {"probability": 0.5},
        "explain": {"method": "cam"},
        "image": {"zoom_size": crop, "zoom_scale": 2.0, "zoom_min_mm": 48.0,
                  "zoom_max_mm": 120.0},
        "training": {"label": "dcr", "data": "random tensors (test)"},
    })
    return load_bundle(folder)


ORR_PHASES = ("PRE", "AP", "PVP", "DP")


def tiny_orr_bundle(folder: Path, crop: int = 16, slices: int = 3, seed: int = 0,
                    train: bool = True) -> tuple[Bundle, object]:
    """A seed-000 bundle (2.5-D ResNet + Transformer MIL, Grad-CAM) and its torch model."""
    import torch

    from inference.training.deep_models import ResNetMil
    from inference.training.deep_orr import (
        OrrConfig,
        OrrModel,
        export_orr,
        fit_orr,
        instance_layout,
    )

    z = slices + 2
    rng = np.random.default_rng(seed)
    if train:
        n, margin = 12, 2
        y = np.arange(n) % 2
        images = rng.normal(1.0, 0.2, (n, len(ORR_PHASES), z, crop + 2 * margin,
                                       crop + 2 * margin)).astype(np.float32)
        images[y == 1, 1] += 0.5
        config = OrrConfig(width=2, features=4, dim=8, epochs=1, batch=4, margin=margin,
                           seed=seed, patience=0)
        model = fit_orr(images, y, config)
    else:
        torch.manual_seed(seed)
        model = OrrModel(ResNetMil(len(ORR_PHASES), z, 2, 4, dim=8).eval())
    folder.mkdir(parents=True, exist_ok=True)
    export_orr(model, (z, crop, crop), len(ORR_PHASES), folder)
    names, zs = instance_layout(ORR_PHASES, z)
    write_bundle_toml(folder, {
        "name": "test-orr-image", "version": "0.0.1", "family": "response",
        "intended_use": "RESEARCH USE ONLY - test bundle.",
        "model_file": "model.onnx", "extra_files": ["head.onnx"],
        "inputs": {"kind": "image", "phases": list(ORR_PHASES)},
        "preprocessing": {"spacing_mm": [4.0, 4.0, 3.0], "normalisation": "liver_median",
                          "patch_size": [z, crop, crop]},
        "outputs": {"labels": ["no objective response", "objective response"]},
        "thresholds": {"probability": 0.5},
        "explain": {"method": "grad-cam"},
        "image": {"head_file": "head.onnx", "instances": names, "instance_slices": zs,
                  "top_instances": 2},
        "training": {"label": "orr", "data": "random tensors (test)"},
    })
    return load_bundle(folder), model.model
