"""Train the liver + tumour segmentation network (MONAI 3-D UNet) and export it to ONNX.

The cases come from the caller (``hepatica train segmentation`` feeds phantoms; a site feeds
its own labelled studies), already as co-registered phase arrays, so this module knows
nothing of DICOM. Inputs are prepared by ``inference.preprocess`` — the very code that
serving uses — and the run is seeded end to end so that the shipped weights can be rebuilt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch
from monai.losses.dice import DiceCELoss
from monai.networks.nets.unet import UNet

from inference.preprocess import prepare_channels, resample

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingCase:
    """One labelled study: phase arrays ``[z, y, x]`` in bundle order, labels 0/1/2."""

    channels: Sequence[npt.NDArray[np.float32]]
    labels: npt.NDArray[np.uint8]
    spacing_xyz: tuple[float, float, float]


@dataclass(frozen=True)
class SegmentationTrainingConfig:
    """Everything that decides the weights; written into the bundle for reproducibility."""

    spacing_xyz: tuple[float, float, float] = (2.0, 2.0, 3.0)
    patch_zyx: tuple[int, int, int] = (32, 96, 96)
    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 1
    steps: int = 1200
    batch_size: int = 2
    learning_rate: float = 2e-3
    tumour_patch_fraction: float = 0.6
    seed: int = 0
    threads: int = 2
    classes: tuple[str, ...] = field(default=("background", "liver", "tumour"))


def build_network(in_channels: int, config: SegmentationTrainingConfig) -> UNet:
    """The MONAI 3-D UNet the bundle ships."""
    return UNet(spatial_dims=3, in_channels=in_channels, out_channels=len(config.classes),
                channels=config.channels, strides=config.strides,
                num_res_units=config.num_res_units)


@dataclass
class _Prepared:
    image: npt.NDArray[np.float32]  # [C, z, y, x]
    labels: npt.NDArray[np.int64]  # [z, y, x]
    tumour_voxels: npt.NDArray[np.int64]
    body_voxels: npt.NDArray[np.int64]


def _prepare(case: TrainingCase, config: SegmentationTrainingConfig) -> _Prepared:
    image = prepare_channels(case.channels, case.spacing_xyz, config.spacing_xyz)
    labels = resample(case.labels.astype(np.float32), case.spacing_xyz, config.spacing_xyz, order=0)
    labels_i = np.rint(labels).astype(np.int64)
    image, labels_i = _pad_to_patch(image, labels_i, config.patch_zyx)
    return _Prepared(image, labels_i, np.argwhere(labels_i == 2),
                     np.argwhere(image[0] > 0.1)[::50])


def _pad_to_patch(image: npt.NDArray[np.float32], labels: npt.NDArray[np.int64],
                  patch: tuple[int, int, int]) -> tuple[npt.NDArray[np.float32],
                                                        npt.NDArray[np.int64]]:
    pads = [(0, max(0, p - s)) for p, s in zip(patch, labels.shape, strict=True)]
    return (np.pad(image, [(0, 0), *pads], constant_values=image.min()),
            np.pad(labels, pads))


def _crop(prepared: _Prepared, patch: tuple[int, int, int], rng: np.random.Generator,
          tumour_fraction: float) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    pool = prepared.tumour_voxels
    if len(pool) == 0 or rng.random() > tumour_fraction:
        pool = prepared.body_voxels
    centre = pool[rng.integers(len(pool))]
    shape = prepared.labels.shape
    start = [int(np.clip(c - p // 2 + rng.integers(-p // 4, p // 4 + 1), 0, s - p))
             for c, p, s in zip(centre, patch, shape, strict=True)]
    window = tuple(slice(b, b + p) for b, p in zip(start, patch, strict=True))
    return prepared.image[(slice(None), *window)], prepared.labels[window]


def _augment(image: npt.NDArray[np.float32], rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """Per-channel contrast and brightness jitter: sites differ in scanners and timing."""
    scale = rng.uniform(0.85, 1.15, (image.shape[0], 1, 1, 1)).astype(np.float32)
    shift = rng.uniform(-0.08, 0.08, (image.shape[0], 1, 1, 1)).astype(np.float32)
    noise = rng.normal(0, rng.uniform(0, 0.03), image.shape).astype(np.float32)
    return image * scale + shift + noise


def train_segmentation(cases: Iterable[TrainingCase], config: SegmentationTrainingConfig,
                       progress: Callable[[int, int, float], None] | None = None
                       ) -> tuple[UNet, dict[str, float]]:
    """Fit the network on random patches; returns the model and a training summary."""
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    prepared = [_prepare(c, config) for c in cases]
    if not prepared:
        raise ValueError("no training cases given")
    model = build_network(prepared[0].image.shape[0], config)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=config.steps)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    started, recent = time.perf_counter(), list[float]()
    model.train()
    for step in range(1, config.steps + 1):
        x, y = _batch(prepared, config, rng)
        optimiser.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimiser.step()
        schedule.step()
        recent = [*recent[-49:], float(loss.detach())]
        if progress:
            progress(step, config.steps, float(np.mean(recent)))
    model.eval()
    summary = {"final_loss": float(np.mean(recent)), "steps": float(config.steps),
               "train_seconds": time.perf_counter() - started, "cases": float(len(prepared))}
    return model, summary


def _batch(prepared: list[_Prepared], config: SegmentationTrainingConfig,
           rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for _ in range(config.batch_size):
        case = prepared[rng.integers(len(prepared))]
        x, y = _crop(case, config.patch_zyx, rng, config.tumour_patch_fraction)
        xs.append(_augment(x, rng))
        ys.append(y[None])
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))
