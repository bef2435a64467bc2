"""segment(): bundle-driven pre-processing, sliding window, resampling back, post-processing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from inference.bundle import BundleError, load_bundle
from inference.measurements import LIVER, TUMOUR
from inference.runtime import CPU, create_session
from inference.segmentation import postprocess, segment, softmax

SPACING = (1.5, 1.5, 2.5)  # x, y, z of the synthetic input grid
SHAPE = (20, 48, 56)


def phantom() -> tuple[list[npt.NDArray[np.float32]], npt.NDArray[np.uint8]]:
    """Two phases: liver 100, tumour 200 (arterial) on background 0, with truth labels."""
    z, y, x = np.indices(SHAPE, dtype=float)
    zm, ym, xm = z * SPACING[2], y * SPACING[1], x * SPACING[0]
    liver = ((zm - 25) / 20) ** 2 + ((ym - 36) / 30) ** 2 + ((xm - 42) / 36) ** 2 <= 1
    tumour = (zm - 25) ** 2 + (ym - 36) ** 2 + (xm - 50) ** 2 <= 11.0**2
    truth = np.zeros(SHAPE, dtype=np.uint8)
    truth[liver] = LIVER
    truth[tumour] = TUMOUR
    noise = np.random.default_rng(0).normal(0, 2, size=(2, *SHAPE))
    arterial = np.where(truth == TUMOUR, 200.0, np.where(truth == LIVER, 100.0, 0.0))
    portal = np.where(truth > 0, 120.0, 0.0)
    return [(arterial + noise[0]).astype(np.float32), (portal + noise[1]).astype(np.float32)], truth


class ThresholdSession:
    """A stand-in model: logits favour the class whose scaled arterial level is nearest."""

    providers = ("ThresholdSession",)

    def run(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        arterial = x[:, 0]
        levels = np.array([0.0, 0.5, 1.0], dtype=np.float32)[None, :, None, None, None]
        return (-20.0 * np.abs(arterial[:, None] - levels)).astype(np.float32)


def dice(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_segment_recovers_phantom_on_input_grid(make_bundle: object) -> None:
    bundle = load_bundle(make_bundle(spacing=(2.0, 2.0, 3.0), patch=(8, 16, 16)))  # type: ignore[operator]
    channels, truth = phantom()
    result = segment(bundle, ThresholdSession(), channels, SPACING, overlap=0.5, batch_size=4)
    assert result.labels.shape == SHAPE and result.labels.dtype == np.uint8
    assert result.tumour_probability.shape == SHAPE
    assert result.tumour_probability.dtype == np.float32
    assert dice(result.labels == TUMOUR, truth == TUMOUR) > 0.85
    assert dice(result.labels > 0, truth > 0) > 0.9
    assert set(result.timings) == {"prepare", "predict", "resample", "postprocess", "total"}
    assert result.providers == ("ThresholdSession",)
    by_name = segment(bundle, ThresholdSession(), {"PVP": channels[1], "AP": channels[0]},
                      SPACING)
    np.testing.assert_array_equal(by_name.labels, segment(bundle, ThresholdSession(),
                                                          channels, SPACING).labels)


def test_segment_with_exported_unet(toy_unet_bundle: tuple[Path, object]) -> None:
    bundle = load_bundle(toy_unet_bundle[0])
    session = create_session(bundle.model_file, providers=[CPU], threads=1)
    channels, _ = phantom()
    calls: list[int] = []
    result = segment(bundle, session, channels, SPACING, batch_size=2,
                     progress=lambda done, total: calls.append(done))
    assert result.labels.shape == SHAPE and set(np.unique(result.labels)) <= {0, 1, 2}
    total = result.tumour_probability + result.liver_probability
    assert float(result.tumour_probability.min()) >= 0.0 and float(total.max()) <= 1.0 + 1e-5
    assert result.providers == (CPU,) and calls


def test_channel_and_bundle_errors(make_bundle: object, tmp_path: Path) -> None:
    folder = make_bundle()  # type: ignore[operator]
    bundle = load_bundle(folder)
    channels, _ = phantom()
    with pytest.raises(ValueError, match="needs 2 channels"):
        segment(bundle, ThresholdSession(), channels[:1], SPACING)
    with pytest.raises(ValueError, match="missing \\['PVP'\\]"):
        segment(bundle, ThresholdSession(), {"AP": channels[0]}, SPACING)
    with pytest.raises(ValueError, match="on one grid"):
        segment(bundle, ThresholdSession(), [channels[0], channels[1][:-1]], SPACING)
    toml = folder / "bundle.toml"
    toml.write_text(toml.read_text().replace('"tumour"]', '"lesion"]'))
    with pytest.raises(BundleError, match="'liver' and 'tumour'"):
        segment(load_bundle(folder), ThresholdSession(), channels, SPACING)


def test_postprocess_rules() -> None:
    spacing = (1.0, 1.0, 1.0)  # 1 voxel = 0.001 ml
    raw = np.zeros((30, 30, 60), dtype=np.uint8)
    raw[5:25, 5:25, 5:30] = LIVER  # the organ
    raw[10:18, 10:18, 10:18] = TUMOUR  # 512 voxels = 0.512 ml: kept
    raw[20:23, 20:23, 20:23] = TUMOUR  # 27 voxels = 0.027 ml: becomes liver
    raw[10:18, 10:18, 32:40] = TUMOUR  # 3 mm outside the organ: kept whole (margin 5 mm)
    raw[10:18, 10:18, 50:58] = TUMOUR  # 20 mm away: removed
    raw[2:4, 2:4, 50:52] = LIVER  # stray liver island: removed
    out = postprocess(raw, spacing, min_lesion_ml=0.2, organ_margin_mm=5.0)
    assert (out[10:18, 10:18, 10:18] == TUMOUR).all()
    assert (out[20:23, 20:23, 20:23] == LIVER).all()
    assert (out[10:18, 10:18, 32:40] == TUMOUR).all()
    assert not out[:, :, 45:].any()
    assert postprocess(np.zeros((3, 3, 3), np.uint8), spacing).sum() == 0


def test_softmax_is_stable() -> None:
    logits = np.array([[1000.0, 0.0, -1000.0]], dtype=np.float32).reshape(1, 3, 1, 1, 1)
    probabilities = softmax(logits)
    assert np.isfinite(probabilities).all()
    assert probabilities[0, :, 0, 0, 0] == pytest.approx([1.0, 0.0, 0.0])
