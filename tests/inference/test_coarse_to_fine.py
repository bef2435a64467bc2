"""segment(): coarse-to-fine (locate the organ at half resolution, segment only its box)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from inference.bundle import load_bundle
from inference.measurements import LIVER, TUMOUR
from inference.segmentation import _grown, segment

SPACING = (2.0, 2.0, 3.0)  # the bundle's grid: the model sees the input as it is
SHAPE = (40, 96, 112)


class LevelSession:
    """A stand-in network: logits favour the class whose level is nearest the first
    channel (0 background, 0.5 liver, 1 tumour); it counts the windows it is asked for."""

    providers = ("LevelSession",)

    def __init__(self) -> None:
        self.windows = 0

    def run(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        self.windows += x.shape[0]
        levels = np.array([0.0, 0.5, 1.0], dtype=np.float32)[None, :, None, None, None]
        logits: npt.NDArray[np.float32] = (-20.0 * np.abs(x[:, 0][:, None] - levels)).astype(
            np.float32)
        return logits


def _study(centre_x: float = 40.0) -> tuple[list[npt.NDArray[np.float32]],
                                            npt.NDArray[np.uint8]]:
    """A small liver (with a tumour) in one corner of a large field of view."""
    z, y, x = np.indices(SHAPE, dtype=float)
    zm, ym, xm = z * SPACING[2], y * SPACING[1], x * SPACING[0]
    liver = ((zm - 60) / 30) ** 2 + ((ym - 50) / 30) ** 2 + ((xm - centre_x) / 30) ** 2 <= 1
    tumour = (zm - 60) ** 2 + (ym - 50) ** 2 + (xm - centre_x - 8) ** 2 <= 9.0**2
    truth = np.zeros(SHAPE, np.uint8)
    truth[liver], truth[tumour] = LIVER, TUMOUR
    level = np.where(truth == TUMOUR, 200.0, np.where(truth == LIVER, 100.0, 0.0))
    noise = np.random.default_rng(0).normal(0, 2, size=(2, *SHAPE))
    return [(level + noise[0]).astype(np.float32), (level + noise[1]).astype(np.float32)], truth


def _bundle(make_bundle: object) -> object:
    return load_bundle(make_bundle(spacing=SPACING, patch=(16, 32, 32)))  # type: ignore[operator]


def test_box_only_same_labels_fewer_windows(make_bundle: object) -> None:
    bundle = _bundle(make_bundle)
    channels, truth = _study()
    fine, whole = LevelSession(), LevelSession()
    result = segment(bundle, fine, channels, SPACING)  # type: ignore[arg-type]
    reference = segment(bundle, whole, channels, SPACING,  # type: ignore[arg-type]
                        coarse_to_fine=False)
    assert result.region_zyx is not None and reference.region_zyx is None
    assert fine.windows < whole.windows
    np.testing.assert_array_equal(result.labels, reference.labels)
    assert ((result.labels > 0) == (truth > 0)).mean() > 0.99
    box = tuple(slice(a, b) for a, b in result.region_zyx)
    outside = np.ones(SHAPE, bool)
    outside[box] = False
    assert not result.tumour_probability[outside].any()
    assert not result.liver_probability[outside].any()
    assert result.tumour_probability.shape == SHAPE


def test_nothing_found_segments_the_whole_volume(make_bundle: object) -> None:
    bundle = _bundle(make_bundle)
    empty = [np.zeros(SHAPE, np.float32), np.zeros(SHAPE, np.float32)]
    session = LevelSession()
    result = segment(bundle, session, empty, SPACING)  # type: ignore[arg-type]
    assert result.region_zyx is None and not result.labels.any()


def test_box_grows_where_the_organ_touches_it() -> None:
    organ = np.zeros((10, 20, 20), bool)
    organ[3:6, 0:4, 5:9] = True  # touches the box's first y face only
    box = (slice(10, 20), slice(30, 50), slice(0, 20))
    grown = _grown(box, organ, (64, 100, 20), reach=(2, 5, 5), patch=(8, 16, 16))
    assert grown == (slice(10, 20), slice(22, 50), slice(0, 20))  # y: max(5, 16 // 2) back
    inside = np.zeros((10, 20, 20), bool)
    inside[3:6, 5:9, 5:9] = True
    assert _grown(box, inside, (64, 100, 20), reach=(2, 5, 5), patch=(8, 16, 16)) == box


def test_thin_volume_runs_whole(make_bundle: object) -> None:
    """Fewer slices than the patch: padded and segmented whole, as before."""
    bundle = _bundle(make_bundle)
    channels, _ = _study()
    thin = [c[18:26] for c in channels]
    result = segment(bundle, LevelSession(), thin, SPACING)  # type: ignore[arg-type]
    assert result.region_zyx is None and result.labels.shape == (8, *SHAPE[1:])


def test_bundle_margin_setting_is_read(make_bundle: object, tmp_path: Path) -> None:
    """``thresholds.roi_margin_mm`` widens the box."""
    folder = make_bundle(spacing=SPACING, patch=(16, 32, 32))  # type: ignore[operator]
    channels, _ = _study()
    narrow = segment(load_bundle(folder), LevelSession(), channels, SPACING)  # type: ignore[arg-type]
    toml = folder / "bundle.toml"
    toml.write_text(toml.read_text().replace("[thresholds]", "[thresholds]\nroi_margin_mm = 40.0"))
    wide = segment(load_bundle(folder), LevelSession(), channels, SPACING)  # type: ignore[arg-type]
    assert narrow.region_zyx is not None and wide.region_zyx is not None
    assert all(w[0] <= n[0] and w[1] >= n[1] for w, n in
               zip(wide.region_zyx, narrow.region_zyx, strict=True))
    assert wide.region_zyx != narrow.region_zyx
