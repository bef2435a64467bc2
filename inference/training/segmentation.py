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
from inference.training import domain_randomisation as dr

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingCase:
    """One labelled study: phase arrays ``[z, y, x]`` in bundle order, labels 0/1/2.

    Labels may be partial (a reader drew only the liver, or only the tumours): 3 means
    "background or liver", 4 "liver or tumour" (``domain_randomisation.NOT_TUMOUR``/``ORGAN``).
    A synthetic case may instead give ``tissues`` (a tissue-code map, see
    ``domain_randomisation.TISSUES``) and ``tables``: choices of one intensity vector per
    channel (e.g. one choice per contrast phase); each training patch is then drawn from the
    tissue map with one random choice, and ``channels`` may be empty.
    """

    channels: Sequence[npt.NDArray[np.float32]]
    labels: npt.NDArray[np.uint8]
    spacing_xyz: tuple[float, float, float]
    tissues: npt.NDArray[np.uint8] | None = None
    tables: tuple[tuple[npt.NDArray[np.float32], ...], ...] = ()
    modality: str = ""


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
    randomisation: dr.RandomisationConfig | None = None
    """None: the original recipe (patch crops, per-channel contrast jitter, Dice + CE).
    Set: domain-randomised patches and the partial-label loss (``PartialLabelLoss``)."""
    in_channels: int = 0  # 0: as many as the cases give (tissue cases: len of a table choice)
    patch_pools: tuple[float, float, float] = (0.55, 0.3, 0.15)  # tumour, liver, body centres
    tumour_weight: float = 2.0  # randomised recipe: the tumour Dice term's weight


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
    liver_voxels: npt.NDArray[np.int64] = field(
        default_factory=lambda: np.zeros((0, 3), np.int64))
    tissues: npt.NDArray[np.uint8] | None = None
    tables: tuple[tuple[npt.NDArray[np.float32], ...], ...] = ()
    modality: str = ""
    counts: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))


def _prepare(case: TrainingCase, config: SegmentationTrainingConfig) -> _Prepared:
    if config.randomisation is not None:
        return _prepare_randomised(case, config)
    image = prepare_channels(case.channels, case.spacing_xyz, config.spacing_xyz)
    labels = resample(case.labels.astype(np.float32), case.spacing_xyz, config.spacing_xyz, order=0)
    labels_i = np.rint(labels).astype(np.int64)
    image, labels_i = _pad_to_patch(image, labels_i, config.patch_zyx)
    return _Prepared(image, labels_i, np.argwhere(labels_i == 2),
                     np.argwhere(image[0] > 0.1)[::50])


def _prepare_randomised(case: TrainingCase, config: SegmentationTrainingConfig) -> _Prepared:
    """Resample to the training grid; keep the tissue map (synthetic) or the normalised
    channels (real) and the voxel pools that patch centres are drawn from."""
    labels = np.rint(resample(case.labels.astype(np.float32), case.spacing_xyz,
                              config.spacing_xyz, order=0)).astype(np.int64)
    image = np.zeros((0, *labels.shape), np.float32)
    tissues = counts = None
    if case.tissues is not None:
        tissues = np.rint(resample(case.tissues.astype(np.float32), case.spacing_xyz,
                                   config.spacing_xyz, order=0)).astype(np.uint8)
        counts = np.bincount(tissues.ravel(), minlength=len(dr.TISSUES)).astype(np.int64)
        body = tissues != dr.tissue_code("air")
    else:
        image = prepare_channels(case.channels, case.spacing_xyz, config.spacing_xyz)
        body = image[0] > 0.1
    organ = (labels == 1) | (labels == dr.ORGAN)
    pools = np.argwhere(labels == 2)[::5], np.argwhere(body)[::50], np.argwhere(organ)[::20]
    if tissues is not None:  # labels come from the tissue codes of each patch
        labels = np.zeros((0, 0, 0), np.int64)
    return _Prepared(image, labels, *pools, tissues, case.tables, case.modality,
                     counts if counts is not None else np.zeros(0, np.int64))


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
                       progress: Callable[[int, int, float], None] | None = None,
                       initial: UNet | None = None,
                       checkpoint: Callable[[int, UNet], None] | None = None,
                       checkpoint_every: int = 0) -> tuple[UNet, dict[str, float]]:
    """Fit the network on random patches; returns the model and a training summary.

    ``initial`` fine-tunes a network (e.g. a shipped bundle's, ``warm_start``) instead of
    starting from random weights. ``checkpoint(step, model)`` is called every
    ``checkpoint_every`` steps (e.g. to export and measure the model as it learns); it must
    leave the model as it found it.
    """
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    prepared = [_prepare(c, config) for c in cases]
    if not prepared:
        raise ValueError("no training cases given")
    model = initial if initial is not None else build_network(_in_channels(prepared, config),
                                                               config)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=config.steps)
    randomised = config.randomisation is not None
    loss_fn: torch.nn.Module = PartialLabelLoss(config.tumour_weight) if randomised else \
        DiceCELoss(to_onehot_y=True, softmax=True)
    started, recent = time.perf_counter(), list[float]()
    model.train()
    for step in range(1, config.steps + 1):
        x, y = _randomised_batch(prepared, config, rng) if randomised else _batch(
            prepared, config, rng)
        optimiser.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimiser.step()
        schedule.step()
        recent = [*recent[-49:], float(loss.detach())]
        if progress:
            progress(step, config.steps, float(np.mean(recent)))
        if checkpoint and checkpoint_every and step % checkpoint_every == 0 \
                and step < config.steps:
            checkpoint(step, model)
    model.eval()
    summary = {"final_loss": float(np.mean(recent)), "steps": float(config.steps),
               "train_seconds": time.perf_counter() - started, "cases": float(len(prepared))}
    return model, summary


def _in_channels(prepared: Sequence[_Prepared], config: SegmentationTrainingConfig) -> int:
    if config.in_channels:
        return config.in_channels
    first = prepared[0]
    return len(first.tables[0]) if first.tissues is not None else int(first.image.shape[0])


def _batch(prepared: list[_Prepared], config: SegmentationTrainingConfig,
           rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for _ in range(config.batch_size):
        case = prepared[rng.integers(len(prepared))]
        x, y = _crop(case, config.patch_zyx, rng, config.tumour_patch_fraction)
        xs.append(_augment(x, rng))
        ys.append(y[None])
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


def _randomised_batch(prepared: list[_Prepared], config: SegmentationTrainingConfig,
                      rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Patches drawn through ``domain_randomisation``: synthetic cases re-drawn from their
    tissue map with one random phase choice, real cases deformed and intensity-jittered."""
    assert config.randomisation is not None
    settings = config.randomisation
    xs, ys = [], []
    for _ in range(config.batch_size):
        case = prepared[rng.integers(len(prepared))]
        pools = (case.tumour_voxels, case.liver_voxels, case.body_voxels)
        if case.tissues is not None:
            codes, coords = dr.sample_tissue_patch(case.tissues, pools, config.patch_pools,
                                                   config.patch_zyx, config.spacing_xyz,
                                                   settings, rng)
            choice = case.tables[rng.integers(len(case.tables))]
            x = np.stack([dr.synthesise(
                codes, coords, None if rng.random() < settings.random_intensity_probability
                else table, case.modality, case.counts, case.tissues.shape,
                config.spacing_xyz, settings, rng) for table in choice])
            y = dr.LABEL_OF_TISSUE[codes]
        else:
            x, y = dr.sample_image_patch(case.image, case.labels, pools, config.patch_pools,
                                         config.patch_zyx, config.spacing_xyz, settings, rng)
        if rng.random() < settings.thin_slab_probability:
            x, y = dr.thin_slab(x, y, rng)
        xs.append(x)
        ys.append(y[None])
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


class PartialLabelLoss(torch.nn.Module):
    """Cross-entropy and soft Dice that accept partial labels.

    Codes 0/1/2 are exact; 3 (background or liver) and 4 (liver or tumour) are sets: their
    cross-entropy is −log of the summed probability of the set, and each Dice term (organ =
    liver ∪ tumour, liver, tumour) counts only the voxels where its own answer is known. So a
    reader's liver-only or tumour-only outline teaches what it says and nothing more.
    ``tumour_weight`` weighs the tumour Dice term against the organ and liver ones: lesions
    are a fraction of a percent of a patch and the last thing a network learns.
    """

    def __init__(self, tumour_weight: float = 1.0) -> None:
        super().__init__()
        self.tumour_weight = tumour_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        y = target[:, 0].long()
        log_p = torch.log_softmax(logits, dim=1)
        allowed = torch.stack([(y == 0) | (y == dr.NOT_TUMOUR),
                               (y == 1) | (y == dr.NOT_TUMOUR) | (y == dr.ORGAN),
                               (y == 2) | (y == dr.ORGAN)], dim=1)
        ce = -torch.logsumexp(log_p.masked_fill(~allowed, -1e4), dim=1).mean()
        p = log_p.exp()
        organ_known = y != dr.NOT_TUMOUR
        tumour_known = y != dr.ORGAN
        liver_known = y <= 2
        dice = (_soft_dice(p[:, 1] + p[:, 2], (y == 1) | (y == 2) | (y == dr.ORGAN),
                           organ_known)
                + _soft_dice(p[:, 1], y == 1, liver_known)
                + self.tumour_weight * _soft_dice(p[:, 2], y == 2, tumour_known)
                ) / (2 + self.tumour_weight)
        return ce + dice


def _soft_dice(p: torch.Tensor, truth: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    weight = known.float()
    t = truth.float() * weight
    q = p * weight
    return 1 - (2 * (q * t).sum() + 1.0) / (q.sum() + t.sum() + 1.0)
