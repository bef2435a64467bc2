"""inference.radiomics and training: ring, ICC, extraction cache, ONNX parity per family."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inference.radiomics import (
    FeatureCache,
    extract_all,
    icc_2_1,
    make_tasks,
    perturb,
    reproducible_features,
    ring_mask,
    settings_path,
)


def _sphere(shape: tuple[int, int, int], centre: tuple[float, float, float],
            radius: float) -> np.ndarray:
    z, y, x = np.indices(shape)
    return ((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2) <= radius ** 2


def test_ring_is_a_shell_of_the_width_in_mm() -> None:
    lesion = _sphere((24, 40, 40), (12, 20, 20), 6)
    ring = ring_mask(lesion, (1.0, 1.0, 2.0), 4.0)
    assert not (ring & lesion).any()
    z, y, x = np.nonzero(ring)
    distance = np.sqrt(((z - 12) * 2.0) ** 2 + (y - 20) ** 2 + (x - 20) ** 2)
    assert distance.max() <= 12 * 1.0 + 4.0 + 1.0  # radius 6 voxels in x, 12 mm in z
    liver = np.zeros_like(lesion)
    liver[:, :, :20] = True
    assert not (ring_mask(lesion, (1.0, 1.0, 2.0), 4.0, within=liver)[:, :, 20:]).any()


def test_icc_agrees_and_filters() -> None:
    rng = np.random.default_rng(0)
    subject = rng.normal(0, 1, (30, 1))
    assert icc_2_1(np.repeat(subject, 4, axis=1)) == pytest.approx(1.0)
    noisy = subject + rng.normal(0, 1.0, (30, 4))
    assert icc_2_1(noisy) < 0.7
    ratings = {f"p{i}": [{"stable": float(subject[i, 0]), "noisy": float(noisy[i, k])}
                         for k in range(4)] for i in range(30)}
    assert list(reproducible_features(ratings, 0.9)) == ["stable"]


def test_perturbations_change_the_mask_but_never_empty_it() -> None:
    lesion = _sphere((16, 16, 16), (8, 8, 8), 4)
    for kind in ("erode", "dilate", "contour_noise"):
        out = perturb(lesion, kind, seed=1)
        assert out.any() and (out != lesion).any()
    dot = np.zeros((5, 5, 5), bool)
    dot[2, 2, 2] = True
    assert perturb(dot, "erode").sum() == 1


def test_extraction_is_cached_per_study_roi_and_settings(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    lesion = _sphere((20, 32, 32), (10, 16, 16), 5)
    image = (rng.normal(100, 10, lesion.shape) + 60 * lesion).astype(np.float32)
    settings = settings_path("ct_original")
    tasks = make_tasks({"AP": image}, lesion, (1.5, 1.5, 3.0), ("tumour", "ring"), 3.0,
                       settings, "study-1")
    cache = FeatureCache(tmp_path)
    first = extract_all(tasks, cache, workers=1)
    assert (cache.hits, cache.misses) == (0, 2)
    assert first["AP_tumour_original_firstorder_Mean"] > first["AP_ring_original_firstorder_Mean"]
    again = extract_all(tasks, FeatureCache(tmp_path), workers=1)  # a new node process
    assert again == first
    moved = make_tasks({"AP": image}, np.roll(lesion, 1, axis=2), (1.5, 1.5, 3.0), ("tumour",),
                       3.0, settings, "study-1")
    assert moved[0].key != tasks[0].key


def test_every_classifier_family_has_onnx_parity(tmp_path: Path) -> None:
    """ONNX Runtime and scikit-learn/XGBoost agree within 1e-5 on held-out rows, per family."""
    pytest.importorskip("skl2onnx")
    from sklearn.datasets import make_classification

    from inference.training.radiomics import (
        FAMILIES,
        export_onnx,
        make_pipeline,
        onnx_probabilities,
    )
    x, y = make_classification(160, 8, n_informative=4, random_state=0)
    x = x.astype(np.float32)
    worst = {}
    for family in FAMILIES:
        pipeline = make_pipeline(family, seed=0).fit(x[:120], y[:120])
        path = export_onnx(pipeline, 8, tmp_path / f"{family}.onnx")
        reference = pipeline.predict_proba(x[120:])[:, 1]
        worst[family] = float(np.max(np.abs(onnx_probabilities(path, x[120:]) - reference)))
    assert len(worst) == 11
    assert max(worst.values()) < 1e-5, worst
