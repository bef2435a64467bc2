"""The numpy sliding window against MONAI's ``sliding_window_inference`` (torch allowed here)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference

from inference.sliding_window import importance_map, sliding_window_predict, window_starts


def toy_predictor(tiles: np.ndarray) -> np.ndarray:  # type: ignore[type-arg]
    """Depends on the position inside the patch and on the whole patch, so blending matters."""
    pz, py, px = tiles.shape[2:]
    ramp = np.linspace(0.0, 1.0, pz * py * px, dtype=np.float32).reshape(pz, py, px)
    mean = tiles.mean(axis=(1, 2, 3, 4), keepdims=True)[:, 0]
    out = np.stack([tiles[:, 0] * ramp, tiles[:, 1] + mean, np.sin(tiles.sum(axis=1))], axis=1)
    return out.astype(np.float32)


def monai_predict(x: np.ndarray, patch: tuple[int, int, int], overlap: float,  # type: ignore[type-arg]
                  batch: int, blend: str) -> np.ndarray:  # type: ignore[type-arg]
    def network(t: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(toy_predictor(t.numpy()))
    with torch.no_grad():
        out = sliding_window_inference(torch.from_numpy(x[None]), patch, batch, network,
                                       overlap=overlap, mode=blend)
    assert isinstance(out, torch.Tensor)
    return out[0].numpy()


@pytest.mark.parametrize(("shape", "patch", "overlap", "batch", "blend"), [
    ((2, 20, 37, 29), (8, 16, 16), 0.25, 1, "gaussian"),
    ((2, 20, 37, 29), (8, 16, 16), 0.5, 3, "gaussian"),
    ((2, 20, 37, 29), (8, 16, 16), 0.25, 4, "constant"),
    ((2, 5, 12, 40), (8, 16, 16), 0.25, 2, "gaussian"),  # smaller than the patch on two axes
    ((2, 8, 16, 16), (8, 16, 16), 0.25, 1, "gaussian"),  # exactly one patch
])
def test_matches_monai(shape: tuple[int, ...], patch: tuple[int, int, int], overlap: float,
                       batch: int, blend: str, rng: np.random.Generator) -> None:
    x = rng.normal(size=shape).astype(np.float32)
    ours = sliding_window_predict(x, toy_predictor, patch, overlap=overlap, batch_size=batch,
                                  blend=blend)
    theirs = monai_predict(x, patch, overlap, batch, blend)
    assert ours.shape == (3, *shape[1:]) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


def test_identity_is_reproduced_exactly(rng: np.random.Generator) -> None:
    """Every voxel is covered and weights are normalised: a pointwise model passes through."""
    x = rng.normal(size=(2, 13, 30, 21)).astype(np.float32)
    out = sliding_window_predict(x, lambda t: t * 2.0, (8, 16, 16), overlap=0.5)
    np.testing.assert_allclose(out, 2.0 * x, rtol=1e-5, atol=1e-5)


def test_window_starts_cover_and_end_flush() -> None:
    starts = window_starts((20, 16, 5), (8, 16, 5), 0.25)
    assert sorted({s[0] for s in starts}) == [0, 6, 12]
    assert {s[1] for s in starts} == {0} and {s[2] for s in starts} == {0}


def test_importance_map_is_positive_and_peaks_in_the_centre() -> None:
    weights = importance_map((8, 16, 16))
    assert weights.min() > 0 and weights.shape == (8, 16, 16)
    assert weights[4, 8, 8] == pytest.approx(weights.max(), rel=0.2)
    assert weights[0, 0, 0] < weights[4, 8, 8]


def test_progress_and_bad_arguments(rng: np.random.Generator) -> None:
    calls: list[tuple[int, int]] = []
    x = rng.normal(size=(1, 10, 20, 20)).astype(np.float32)
    sliding_window_predict(x, lambda t: t, (8, 16, 16), batch_size=3,
                           progress=lambda done, total: calls.append((done, total)))
    assert calls[-1][0] == calls[-1][1] and len(calls) == -(-calls[-1][1] // 3)
    with pytest.raises(ValueError, match="overlap"):
        sliding_window_predict(x, lambda t: t, (8, 16, 16), overlap=1.0)
    with pytest.raises(ValueError, match="predictor returned shape"):
        sliding_window_predict(x, lambda t: t[:, :, :4], (8, 16, 16))
