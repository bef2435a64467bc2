"""Domain randomisation (SynthSeg-style), the partial-label loss, ONNX warm start, and the
serving fixes for real inputs (CT pixel padding, studies thinner than the patch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from inference.preprocess import robust_scale
from inference.segmentation import pad_thin_volume
from inference.training import domain_randomisation as dr
from inference.training.segmentation import (
    PartialLabelLoss,
    SegmentationTrainingConfig,
    TrainingCase,
    build_network,
    train_segmentation,
)

SPACING = (4.0, 4.0, 6.0)
PATCH = (8, 24, 24)


def _tissue_volume() -> np.ndarray:
    """A small abdomen: body (fat), a muscle wall, a liver with a tumour, a spine."""
    z, y, x = np.mgrid[0:16, 0:64, 0:64]
    codes = np.zeros((16, 64, 64), np.uint8)
    body = ((y - 32) / 26.0) ** 2 + ((x - 32) / 30.0) ** 2 < 1
    codes[body] = dr.tissue_code("fat")
    codes[body & (((y - 32) / 24.0) ** 2 + ((x - 32) / 28.0) ** 2 > 1)] = dr.tissue_code("muscle")
    liver = ((y - 28) / 12.0) ** 2 + ((x - 20) / 12.0) ** 2 + ((z - 8) / 6.0) ** 2 < 1
    codes[liver] = dr.tissue_code("liver")
    codes[liver & (((y - 28) ** 2 + (x - 22) ** 2 + (z - 8) ** 2) < 16)] = dr.tissue_code("tumour")
    codes[((y - 50) ** 2 + (x - 32) ** 2) < 9] = dr.tissue_code("bone")
    return codes


def _table(**values: float) -> np.ndarray:
    base = {"air": -1000.0, "fat": -100.0, "muscle": 50.0, "bone": 450.0, "liver": 60.0,
            "spleen": 50.0, "kidney": 40.0, "aorta": 40.0, "portal": 40.0, "hepatic_vein": 40.0,
            "ivc": 40.0, "tumour": 45.0, "necrosis": 15.0}
    return dr.table_vector({**base, **values})


def test_patches_are_seeded_and_labels_follow_the_tissues() -> None:
    tissues = _tissue_volume()
    pools = (np.argwhere(tissues == dr.tissue_code("tumour")),
             np.argwhere(tissues == dr.tissue_code("liver")), np.argwhere(tissues > 0))
    counts = np.bincount(tissues.ravel(), minlength=len(dr.TISSUES))
    config = dr.RandomisationConfig()

    def draw(seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        codes, coords = dr.sample_tissue_patch(tissues, pools, (1, 1, 1), PATCH, SPACING,
                                               config, rng)
        image = dr.synthesise(codes, coords, _table(), "CT", counts, tissues.shape, SPACING,
                              config, rng)
        return codes, image

    codes_a, image_a = draw(3)
    codes_b, image_b = draw(3)
    _, image_c = draw(4)
    assert np.array_equal(codes_a, codes_b) and np.array_equal(image_a, image_b)
    assert not np.array_equal(image_a, image_c)
    assert image_a.shape == PATCH and image_a.dtype == np.float32
    assert image_a.min() >= -0.5 and image_a.max() <= 1.5
    labels = dr.LABEL_OF_TISSUE[codes_a]
    assert set(np.unique(labels)) <= {0, 1, 2} and (labels > 0).any()


def test_random_mode_gives_a_liver_of_any_brightness() -> None:
    """SynthSeg mode: the liver is not always brighter or darker than fat."""
    tissues = _tissue_volume()
    pools = (np.argwhere(tissues == dr.tissue_code("liver")),) * 3
    counts = np.bincount(tissues.ravel(), minlength=len(dr.TISSUES))
    config = dr.RandomisationConfig(noise=(0.0, 0.0), fov_circle_probability=0.0)
    rng = np.random.default_rng(0)
    order = []
    for _ in range(12):
        codes, coords = dr.sample_tissue_patch(tissues, pools, (1, 1, 1), PATCH, SPACING,
                                               config, rng)
        image = dr.synthesise(codes, coords, None, "MR", counts, tissues.shape, SPACING,
                              config, rng)
        liver, fat = codes == dr.tissue_code("liver"), codes == dr.tissue_code("fat")
        if liver.any() and fat.any():
            order.append(float(np.median(image[liver])) > float(np.median(image[fat])))
    assert True in order and False in order


def test_physical_ct_keeps_tissue_order_and_the_serving_scale() -> None:
    """Physical mode with no jitter: air at 0, bone at 1 as robust_scale maps them."""
    tissues = _tissue_volume()
    counts = np.bincount(tissues.ravel(), minlength=len(dr.TISSUES))
    quiet = dr.RandomisationConfig(mean_jitter=0.0, texture=(0, 0), tissue_sd=(0, 0),
                                   bias=(0, 0), blur_mm=(0, 0), slice_thickness_mm=(1, 1),
                                   pixel_mm=(1, 1), noise=(0, 0), gamma=(1, 1),
                                   window_probability=0.0, fov_circle_probability=0.0,
                                   contrast=(1, 1), brightness=0.0, scale=(1, 1),
                                   anisotropy=0.0, rotate_deg=(0, 0, 0), elastic_mm=0.0)
    coords = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in tissues.shape],
                                  indexing="ij"))
    image = dr.synthesise(tissues, coords, _table(), "CT", counts, tissues.shape, SPACING,
                          quiet, np.random.default_rng(0))
    values = _table()[tissues]
    low, high = np.percentile(values, [1.0, 99.5])
    served = np.clip((values - low) / (high - low), -0.5, 1.5)
    liver, fat = tissues == dr.tissue_code("liver"), tissues == dr.tissue_code("fat")
    assert image[liver].mean() > image[fat].mean()
    assert np.allclose(image, served, atol=0.02)


def test_thin_slab_repeats_one_to_two_slices() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((1, 8, 5, 5)).astype(np.float32)
    labels = rng.integers(0, 3, (8, 5, 5))
    slab, slab_labels = dr.thin_slab(image, labels, rng)
    distinct = {slab[0, k].tobytes() for k in range(8)}
    assert slab.shape == image.shape and 1 <= len(distinct) <= 2
    kept = {k for k in range(8) for j in range(8)
            if np.array_equal(slab[0, k], image[0, j]) and np.array_equal(slab_labels[k],
                                                                          labels[j])}
    assert kept == set(range(8))  # every slice is one of the input's, with its labels


def test_partial_labels_teach_only_what_was_drawn() -> None:
    """Code 3 (background or liver): liver and background predictions cost the same."""
    loss = PartialLabelLoss()
    target = torch.full((1, 1, 2, 4, 4), dr.NOT_TUMOUR)
    target[0, 0, 0, 0, 0] = 2

    def everywhere(logits: list[float]) -> torch.Tensor:
        out = torch.tensor(logits).view(1, 3, 1, 1, 1).repeat(1, 1, 2, 4, 4)
        out[0, :, 0, 0, 0] = torch.tensor([0.0, 0.0, 6.0])  # the drawn tumour voxel
        return out

    as_liver, as_background = everywhere([0.0, 6.0, 0.0]), everywhere([6.0, 0.0, 0.0])
    as_tumour = everywhere([0.0, 0.0, 6.0])
    assert float(loss(as_liver, target)) == pytest.approx(float(loss(as_background, target)))
    assert float(loss(as_tumour, target)) > float(loss(as_liver, target)) + 1.0


def test_training_on_tissue_maps_runs_and_is_seeded() -> None:
    tissues = _tissue_volume()
    case = TrainingCase((), dr.LABEL_OF_TISSUE[tissues].astype(np.uint8), SPACING, tissues,
                        ((_table(),), (_table(liver=110.0),)), "CT")
    config = SegmentationTrainingConfig(spacing_xyz=SPACING, patch_zyx=(8, 32, 32),
                                        channels=(4, 8), strides=(2,), steps=2,
                                        batch_size=1, randomisation=dr.RandomisationConfig(),
                                        in_channels=1)
    first, summary = train_segmentation([case], config)
    second, _ = train_segmentation([case], config)
    assert summary["steps"] == 2.0 and np.isfinite(summary["final_loss"])
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)


def test_warm_start_reproduces_the_shipped_onnx() -> None:
    from inference.training.onnx_export import export_to_onnx
    from inference.training.warm_start import unet_from_onnx

    config = SegmentationTrainingConfig(channels=(4, 8), strides=(2,), patch_zyx=(8, 16, 16))
    torch.manual_seed(0)
    model = build_network(2, config)
    path = Path(__file__).parent / "_warm.onnx"
    try:
        export_to_onnx(model, 2, config.patch_zyx, path)
        rebuilt = unet_from_onnx(path, config)
    finally:
        path.unlink(missing_ok=True)
    for (name, a), b in zip(model.state_dict().items(), rebuilt.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name


def test_robust_scale_leaves_ct_padding_out() -> None:
    """−3024 outside the reconstruction circle must not be the 1st percentile."""
    rng = np.random.default_rng(0)
    hu = rng.normal(40, 10, (4, 64, 64)).astype(np.float32)
    hu[:, :20] = -1000 + rng.normal(0, 10, (4, 20, 64))
    padded = hu.copy()
    padded[:, :, :12] = -3024
    inside = (slice(None), slice(None), slice(12, None))
    assert np.allclose(robust_scale(padded)[inside], robust_scale(hu[inside]), atol=0.02)
    assert (robust_scale(padded)[:, :, :12] == -0.5).all()


def test_thin_inputs_are_padded_with_their_end_slices() -> None:
    x = np.arange(3 * 2 * 2, dtype=np.float32).reshape(1, 3, 2, 2)
    padded, real = pad_thin_volume(x, 8)
    assert padded.shape == (1, 8, 2, 2)
    assert np.array_equal(padded[:, real], x)
    assert np.array_equal(padded[0, 0], x[0, 0]) and np.array_equal(padded[0, -1], x[0, -1])
    same, whole = pad_thin_volume(np.zeros((1, 9, 2, 2), np.float32), 8)
    assert same.shape == (1, 9, 2, 2) and whole == slice(0, 9)


def test_warm_start_sums_channels_for_a_single_series_network() -> None:
    """One image in one channel = that image in both channels of the source network."""
    from inference.training.onnx_export import export_to_onnx
    from inference.training.warm_start import unet_from_onnx

    config = SegmentationTrainingConfig(channels=(4, 8), strides=(2,), patch_zyx=(8, 16, 16))
    torch.manual_seed(1)
    model = build_network(2, config)
    path = Path(__file__).parent / "_warm2.onnx"
    try:
        export_to_onnx(model, 2, config.patch_zyx, path)
        single = unet_from_onnx(path, config, in_channels=1)  # checks parity itself
    finally:
        path.unlink(missing_ok=True)
    x = torch.rand(1, 1, *config.patch_zyx)
    model.eval()
    single.eval()
    with torch.no_grad():
        assert torch.allclose(single(x), model(x.repeat(1, 2, 1, 1, 1)), atol=1e-4)
