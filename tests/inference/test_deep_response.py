"""Image response bundles: crops, preparation, ONNX↔torch parity, served explanations.

Tiny models trained for one epoch on random tensors (never a shipped recipe)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inference.deep_response import (
    Zoom,
    image_spec,
    is_image_bundle,
    lesion_crop,
    open_graph,
    predict_image,
    prepare,
    to_reference_slice,
    upsample,
    zoom_to_lesion,
    zoomed_crop,
)
from tests.plugin.image_bundle_helpers import (
    DCR_CHANNELS,
    ORR_PHASES,
    tiny_dcr_bundle,
    tiny_orr_bundle,
)

torch = pytest.importorskip("torch")


def _ball(shape: tuple[int, int, int], centre: tuple[int, int, int], radius: float
          ) -> np.ndarray:
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return ((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2) <= radius**2


def test_crop_is_centred_on_the_largest_cross_section_and_normalised_by_the_liver() -> None:
    shape = (12, 40, 40)
    lesion = _ball(shape, (7, 20, 24), 5)
    organ = _ball(shape, (6, 20, 20), 15) | lesion
    volume = np.where(organ, 200.0, 10.0).astype(np.float32)
    volume[lesion] = 500.0
    crop = lesion_crop(lesion, (1.5, 1.5, 3.0), (3.0, 3.0, 3.0), (1, 8, 8))
    assert crop.centre == pytest.approx((7.0, 20.0, 24.0))
    assert crop.step == pytest.approx((1.0, 2.0, 2.0))
    image = prepare([volume], organ, crop)
    assert image.shape == (1, 1, 8, 8)
    assert image[0, 0, 3:5, 3:5] == pytest.approx(2.5)  # tumour / liver median
    assert crop.reference_slice(0) == 7


def test_map_on_the_crop_lands_on_its_reference_pixels() -> None:
    lesion = _ball((5, 30, 30), (2, 10, 18), 3)
    crop = lesion_crop(lesion, (1.0, 1.0, 3.0), (2.0, 2.0, 3.0), (1, 6, 6))
    drawn = to_reference_slice(np.ones((6, 6), np.float32), crop, 0, (5, 30, 30))
    ys, xs = np.nonzero(drawn > 0.5)
    assert ys.min() == pytest.approx(10 - 5, abs=1) and ys.max() == pytest.approx(10 + 5, abs=1)
    assert xs.min() == pytest.approx(18 - 5, abs=1) and xs.max() == pytest.approx(18 + 5, abs=1)
    assert drawn[0, 0] == 0.0


def test_zoom_scales_the_view_to_the_lesion_and_maps_back() -> None:
    zoom = Zoom(size=16, scale=2.0, min_mm=20.0, max_mm=100.0)
    assert zoom.fov_mm(5.0) == 20.0 and zoom.fov_mm(30.0) == 60.0 and zoom.fov_mm(80.0) == 100.0
    context = np.zeros((1, 1, 41, 41), np.float32)
    context[..., 15:26, 15:26] = 1.0  # 11 px of 2 mm: a 22 mm lesion at the centre
    zoomed = zoom_to_lesion(context, 2.0, 22.0, zoom)  # 44 mm over 16 px
    assert zoomed.shape == (1, 1, 16, 16)
    inside = zoomed[0, 0] > 0.5
    assert 7 <= inside.sum(axis=1).max() <= 9  # the lesion spans about half the view
    lesion = _ball((3, 60, 60), (1, 30, 30), 4)
    crop = lesion_crop(lesion, (2.0, 2.0, 3.0), (2.0, 2.0, 3.0), (1, 41, 41))
    grid = zoomed_crop(crop, 2.0, (2.0, 2.0, 3.0), 22.0, zoom)
    drawn = to_reference_slice(np.ones((16, 16), np.float32), grid, 0, (3, 60, 60))
    extent = np.flatnonzero(drawn[30] > 0.5)
    assert extent.max() - extent.min() + 1 == pytest.approx(44.0 / 2.0, abs=2)


def test_upsample_matches_torch_bilinear() -> None:
    values = np.random.default_rng(0).normal(size=(2, 4, 5)).astype(np.float32)
    reference = torch.nn.functional.interpolate(torch.from_numpy(values[None]), size=(16, 20),
                                                mode="bilinear", align_corners=False)[0]
    assert np.abs(upsample(values, (16, 20)) - reference.numpy()).max() < 1e-5


@pytest.fixture(scope="module")
def dcr(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return tiny_dcr_bundle(tmp_path_factory.mktemp("dcr") / "bundle")


def test_dcr_bundle_onnx_matches_torch_and_explains_every_sequence(dcr) -> None:  # type: ignore[no-untyped-def]
    assert is_image_bundle(dcr)
    spec = image_spec(dcr)
    assert spec.channels == DCR_CHANNELS and spec.method == "cam"
    rng = np.random.default_rng(1)
    image = rng.normal(1.0, 0.3, (len(DCR_CHANNELS), 1, 32, 32)).astype(np.float32)
    clinical = np.array([60.0, -2.4, 45.0, 1.0], np.float32)
    session = open_graph(dcr.model_file, ["CPUExecutionProvider"])
    out = session.run({"image": image[None], "clinical": clinical[None]})
    assert out["probability"].shape == (1, 2)
    assert out["explanation"].shape == (1, len(DCR_CHANNELS), 1, 32, 32)
    result = predict_image(spec, dcr.outputs, session, image, clinical)
    shown = [e.channel for e in result.explanations]
    assert shown and set(shown) <= set(DCR_CHANNELS)
    weights = [e.weight for e in result.explanations]
    assert weights == sorted(weights, reverse=True)
    assert len(shown) == 1 or min(weights) >= spec.min_share
    assert all(e.values.min() >= 0 for e in result.explanations)
    assert len(result.channel_log_odds) == len(DCR_CHANNELS)
    assert 0.0 <= result.positive_probability <= 1.0


def test_dcr_parity_with_the_framework_models(tmp_path: Path) -> None:
    from inference.training.deep_dcr import DcrConfig, export_dcr, fit_dcr, onnx_parity

    rng = np.random.default_rng(2)
    y = np.arange(20) % 2
    images = rng.normal(1, 0.2, (20, 3, 1, 24, 24)).astype(np.float32)
    clinical = rng.lognormal(2, 1, (20, 3)).astype(np.float32)
    model = fit_dcr(images, clinical, y, [0, 2], DcrConfig(width=2, features=4, epochs=1,
                                                           folds=2, margin=4, kernel="rbf"))
    path = export_dcr(model, (16, 16), tmp_path)
    parity = onnx_parity(model, path, np.ascontiguousarray(images[:5, ..., 4:-4, 4:-4]),
                         clinical[:5])
    assert parity["probability"] <= 1e-4 and parity["explanation"] <= 1e-4


def test_orr_parity_and_served_grad_cam_matches_autograd(tmp_path: Path) -> None:
    from inference.training.deep_orr import grad_cam_torch

    bundle, model = tiny_orr_bundle(tmp_path / "orr", train=True)
    spec = image_spec(bundle)
    assert spec.method == "grad-cam" and len(spec.instances) == len(ORR_PHASES) * 3
    image = np.random.default_rng(3).normal(1, 0.3, (4, 5, 16, 16)).astype(np.float32)
    session = open_graph(bundle.model_file, ["CPUExecutionProvider"])
    head = open_graph(spec.head_file, ["CPUExecutionProvider"])  # type: ignore[arg-type]
    with torch.no_grad():
        p_ref, att_ref, _, _ = model.explained(torch.from_numpy(image[None]))
    out = session.run({"image": image[None]})
    assert np.abs(out["probability"] - p_ref.numpy()).max() <= 1e-4
    assert np.abs(out["attention"] - att_ref.numpy()).max() <= 1e-4
    result = predict_image(spec, bundle.outputs, session, image, None, head, threshold=0.0)
    top = np.argsort(-out["attention"][0])[: spec.top_instances]
    reference = grad_cam_torch(model, image, top.tolist())
    for item, ref, n in zip(result.explanations, reference, top, strict=True):
        assert item.channel == spec.instances[n] and item.crop_z == spec.instance_slices[n]
        served = item.values
        expected = upsample(ref, served.shape)
        scale = max(float(expected.max()), 1e-6)
        assert np.abs(served - expected).max() / scale < 2e-2


def test_swin_risk_grad_cam_pp_in_the_graph_matches_autograd(tmp_path: Path) -> None:
    """Seed 002's network (partial): MONAI Swin-UNETR exports; ONNX equals torch; the
    in-graph Grad-CAM++ equals the autograd one."""
    pytest.importorskip("monai")
    from inference.training.deep_common import export_graph
    from inference.training.deep_risk import SwinRisk, SwinRiskExport, grad_cam_pp_torch

    torch.manual_seed(0)
    model = SwinRisk(timepoints=3, feature_size=12).eval()
    image = torch.rand(1, 3, 32, 32, 32)
    path = export_graph(SwinRiskExport(model), {"image": image},
                        ["probability", "risk", "explanation"], tmp_path / "swin.onnx")
    session = open_graph(path, ["CPUExecutionProvider"])
    out = session.run({"image": image.numpy()})
    with torch.no_grad():
        p, risk, maps = SwinRiskExport(model)(image)
    assert maps.shape == (1, 4, 32, 32, 32)
    assert np.abs(out["probability"] - p.numpy()).max() <= 1e-4
    assert np.abs(out["risk"] - risk.numpy()).max() <= 1e-4
    target = int(p.argmax())
    reference = grad_cam_pp_torch(model, image, target)
    assert model.activations(image).shape[2:] == reference.shape
    served_up = out["explanation"][0, target]
    expected_up = torch.nn.functional.interpolate(reference[None, None], size=(32, 32, 32),
                                                  mode="trilinear", align_corners=False)[0, 0]
    scale = max(float(expected_up.max()), 1e-8)
    assert np.abs(served_up - expected_up.numpy()).max() / scale < 1e-3
