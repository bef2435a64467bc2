"""pyradiomics features of a lesion and its peritumoural ring, per phase, in parallel, cached.

Why a ring: seed 003 found the tissue around the tumour as informative as the tumour itself
(microvascular invasion and peritumoural enhancement live there), so each lesion gives two
regions: ``tumour`` (the lesion mask) and ``ring`` (a shell of ``ring_mm`` outside it, kept
inside ``within`` - the liver - when given). Why crop: pyradiomics cost grows with the image
it resamples, so each task gets only the bounding box of its region plus a margin.
Features are named ``<phase>_<region>_<pyradiomics name>``, e.g.
``AP_tumour_original_firstorder_Mean``; diagnostics are dropped.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import multiprocessing
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from inference.radiomics.cache import FeatureCache

__all__ = [
    "REGIONS",
    "SETTINGS_DIR",
    "ExtractionTask",
    "extract_all",
    "region_mask",
    "ring_mask",
    "settings_path",
]

SETTINGS_DIR = Path(__file__).resolve().parent / "settings"
REGIONS = ("tumour", "ring")
_MARGIN_VOXELS = 4

FloatArray = npt.NDArray[np.float32]
Mask = npt.NDArray[np.bool_]
Spacing = tuple[float, float, float]

log = logging.getLogger(__name__)


def settings_path(name: str | Path, bundle_dir: Path | None = None) -> Path:
    """A settings file: a path, a file in the bundle, or a shipped name (``ct``, ``mr_3mm``)."""
    candidates = [Path(name)]
    if bundle_dir is not None:
        candidates.append(bundle_dir / str(name))
    candidates += [SETTINGS_DIR / str(name), SETTINGS_DIR / f"{name}.yaml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"radiomics settings {name!r} not found (shipped: "
                            f"{sorted(p.stem for p in SETTINGS_DIR.glob('*.yaml'))})")


def ring_mask(mask: Mask, spacing: Spacing, width_mm: float, within: Mask | None = None) -> Mask:
    """The shell of ``width_mm`` around ``mask`` (Euclidean, in mm), inside ``within``."""
    distance = ndimage.distance_transform_edt(~mask, sampling=spacing[::-1])
    ring = (distance > 0) & (distance <= width_mm)
    if within is not None:
        ring &= within
    return np.asarray(ring, dtype=bool)


def region_mask(lesion: Mask, region: str, spacing: Spacing, ring_mm: float,
                within: Mask | None = None) -> Mask:
    """The voxels of ``region`` (``tumour`` or ``ring``) for one lesion."""
    if region == "tumour":
        return lesion
    if region == "ring":
        return ring_mask(lesion, spacing, ring_mm, within)
    raise ValueError(f"unknown region {region!r}; choose one of {REGIONS}")


@dataclass(frozen=True)
class ExtractionTask:
    """One (lesion, phase, region): a cropped image and mask, ready for a worker process."""

    key: str
    prefix: str
    image: FloatArray
    mask: npt.NDArray[np.uint8]
    spacing: Spacing
    settings: str


def _crop(image: FloatArray, mask: Mask) -> tuple[FloatArray, npt.NDArray[np.uint8]]:
    """Bounding box of ``mask`` plus a margin (resampling and filters need context)."""
    index = np.argwhere(mask)
    lo = np.maximum(index.min(axis=0) - _MARGIN_VOXELS, 0)
    hi = np.minimum(index.max(axis=0) + _MARGIN_VOXELS + 1, mask.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    return (np.ascontiguousarray(image[box], np.float32),
            np.ascontiguousarray(mask[box], np.uint8))


def roi_hash(mask: Mask, spacing: Spacing) -> str:
    """Identity of a region: its voxels and grid, so a changed segmentation misses the cache."""
    digest = hashlib.sha256(np.packbits(mask).tobytes())
    digest.update(repr((mask.shape, tuple(round(s, 6) for s in spacing))).encode())
    return digest.hexdigest()[:24]


def make_tasks(images: Mapping[str, FloatArray], lesion: Mask, spacing: Spacing,
               regions: Sequence[str], ring_mm: float, settings: Path, study_key: str,
               within: Mask | None = None) -> list[ExtractionTask]:
    """One task per (phase, region); the cache key joins study, phase, ROI and settings."""
    text = settings.read_text()
    settings_hash = hashlib.sha256(text.encode()).hexdigest()[:16]
    tasks = []
    for region in regions:
        roi = region_mask(lesion, region, spacing, ring_mm, within)
        if not roi.any():
            raise ValueError(f"the {region} region is empty (ring {ring_mm} mm)")
        rhash = roi_hash(roi, spacing)
        for phase, image in images.items():
            image_crop, mask_crop = _crop(image, roi)
            key = f"{study_key}|{phase}|{region}|{rhash}|{settings_hash}"
            tasks.append(ExtractionTask(key, f"{phase}_{region}_", image_crop, mask_crop,
                                        spacing, text))
    return tasks


def run_task(task: ExtractionTask) -> dict[str, float]:
    """pyradiomics on one task (top level so that a process pool can pickle it)."""
    import SimpleITK as sitk
    from radiomics import featureextractor
    logging.getLogger("radiomics").setLevel(logging.ERROR)
    extractor = featureextractor.RadiomicsFeatureExtractor(_settings_dict(task.settings))
    image = sitk.GetImageFromArray(task.image)
    mask = sitk.GetImageFromArray(task.mask)
    for item in (image, mask):
        item.SetSpacing(task.spacing)
    result = extractor.execute(image, mask, label=1)
    return {task.prefix + name: float(value) for name, value in result.items()
            if not name.startswith("diagnostics_")}


def _settings_dict(text: str) -> dict[str, object]:
    """Parse a pyradiomics YAML parameter file (pyradiomics ships ruamel.yaml)."""
    from ruamel.yaml import YAML
    loaded = YAML(typ="safe").load(text)
    return dict(loaded) if loaded else {}


def extract_all(tasks: Sequence[ExtractionTask], cache: FeatureCache | None = None,
                workers: int = 2) -> dict[str, float]:
    """Run the tasks not in ``cache`` on up to ``workers`` processes; merge all features."""
    features: dict[str, float] = {}
    todo = []
    for task in tasks:
        hit = cache.get(task.key) if cache is not None else None
        if hit is None:
            todo.append(task)
        else:
            features.update(hit)
    for task, result in zip(todo, _map(todo, workers), strict=True):
        if cache is not None:
            cache.put(task.key, result)
        features.update(result)
    return features


def _map(tasks: Sequence[ExtractionTask], workers: int) -> list[dict[str, float]]:
    """Processes, not threads: pyradiomics holds the GIL in its C matrices."""
    if workers <= 1 or len(tasks) <= 1:
        return [run_task(task) for task in tasks]
    return list(_executor(workers).map(run_task, tasks))


_POOLS: dict[int, Executor] = {}
_POOLS_LOCK = threading.Lock()


def _executor(workers: int) -> Executor:
    """One long-lived pool per size: a spawned worker takes seconds to import pyradiomics and
    SimpleITK, more than a tumour's features take, so workers are started once and kept."""
    with _POOLS_LOCK:
        pool = _POOLS.get(workers)
        if pool is None:
            try:
                pool = ProcessPoolExecutor(workers,
                                           mp_context=multiprocessing.get_context("spawn"))
            except (OSError, ValueError):  # restricted sandboxes: threads overlap a little
                pool = ThreadPoolExecutor(workers)
            _POOLS[workers] = pool
            atexit.register(pool.shutdown, wait=False, cancel_futures=True)
        return pool
