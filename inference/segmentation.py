"""Liver and tumour segmentation with a bundle's model: pre-process → predict → post-process.

Everything a model depends on (phases and their order, spacing, normalisation, patch size,
output meaning, activation, thresholds) comes from its bundle, so a retrained or site-specific
model is served without a code change. Results are returned on the *input* grid, because the
DICOM SEG and the measurements refer to the source images, not to the model's grid.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from inference.bundle import Bundle, BundleError
from inference.measurements import LIVER, TUMOUR
from inference.preprocess import prepare_channels, resample_to_shape
from inference.runtime import Session
from inference.sliding_window import Predictor, Progress, sliding_window_predict

__all__ = [
    "DEFAULT_MIN_LESION_ML",
    "DEFAULT_ORGAN_MARGIN_MM",
    "SUPPORTED_NORMALISATIONS",
    "SegmentationResult",
    "pad_thin_volume",
    "postprocess",
    "segment",
    "softmax",
]

FloatArray = npt.NDArray[np.float32]
LabelArray = npt.NDArray[np.uint8]
SUPPORTED_NORMALISATIONS = ("robust_scale",)
DEFAULT_MIN_LESION_ML = 0.2
DEFAULT_ORGAN_MARGIN_MM = 5.0


@dataclass(frozen=True)
class SegmentationResult:
    """Label map (0 background, 1 liver, 2 tumour) and probabilities, all on the input grid.

    ``timings`` holds seconds per sub-step (prepare, predict, resample, postprocess, total);
    ``providers`` what the model actually ran on, for the job record and the report.
    """

    labels: LabelArray
    tumour_probability: FloatArray
    liver_probability: FloatArray
    timings: dict[str, float]
    providers: tuple[str, ...] = ()


def segment(bundle: Bundle, session: Session,
            channels: Sequence[npt.NDArray[np.floating]] | Mapping[str, npt.NDArray[np.floating]],
            spacing_xyz: Sequence[float], *, overlap: float = 0.25, batch_size: int = 1,
            progress: Progress | None = None,
            direction: Sequence[float] | None = None) -> SegmentationResult:
    """Segment liver and tumours in co-registered phase volumes ``[z, y, x]`` on one grid.

    ``channels`` is in ``bundle.inputs.phases`` order, or a mapping phase → volume.
    ``direction`` (the volumes' row-major 3x3, LPS) is needed by imported bundles that
    reorient their input; those run as their framework does (``inference.imported``), with
    its own window overlap and batching.
    """
    volumes = _ordered_channels(bundle, channels)
    if bundle.kind != "hepatica":
        from inference.imported import segment_imported

        return segment_imported(bundle, session, volumes, spacing_xyz, direction, progress)
    liver_index, tumour_index = _output_indices(bundle)
    _check_normalisation(bundle)
    timings: dict[str, float] = {}
    with _timed(timings, "total"):
        with _timed(timings, "prepare"):
            x = prepare_channels(volumes, spacing_xyz, bundle.spacing_mm)
        with _timed(timings, "predict"):
            x, depth = pad_thin_volume(x, bundle.patch_size[0])
            probabilities = sliding_window_predict(
                x, _predictor(session, bundle.output_activation), bundle.patch_size,
                overlap=overlap, batch_size=batch_size, progress=progress)[:, depth]
        with _timed(timings, "resample"):
            probabilities = resample_to_shape(probabilities, volumes[0].shape, order=1)
        with _timed(timings, "postprocess"):
            labels = postprocess(_raw_labels(probabilities, liver_index, tumour_index),
                                 spacing_xyz,
                                 bundle.threshold("min_lesion_ml", DEFAULT_MIN_LESION_ML),
                                 bundle.threshold("organ_margin_mm", DEFAULT_ORGAN_MARGIN_MM))
    return SegmentationResult(labels, probabilities[tumour_index], probabilities[liver_index],
                              timings, tuple(session.providers))


def pad_thin_volume(x: FloatArray, patch_depth: int) -> tuple[FloatArray, slice]:
    """Repeat the end slices of an input thinner than the patch; returns it and the slice
    of the padded z axis that holds the real input.

    A study of a few slices (a partial scan, a test set of three slices) would otherwise be
    padded with air above and below, which no abdomen looks like; anatomy continues beyond
    the covered slab much as it is at its edges.
    """
    depth = x.shape[1]
    if depth >= patch_depth:
        return x, slice(0, depth)
    before = (patch_depth - depth) // 2
    after = patch_depth - depth - before
    padded = np.pad(x, [(0, 0), (before, after), (0, 0), (0, 0)], mode="edge")
    return padded, slice(before, before + depth)


@contextmanager
def _timed(timings: dict[str, float], step: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[step] = time.perf_counter() - start


def _ordered_channels(bundle: Bundle,
                      channels: Sequence[npt.NDArray[np.floating]]
                      | Mapping[str, npt.NDArray[np.floating]]
                      ) -> list[npt.NDArray[np.floating]]:
    phases = bundle.inputs.phases
    if isinstance(channels, Mapping):
        missing = [p for p in phases if p not in channels]
        if missing:
            raise ValueError(f"bundle {bundle.name} needs phases {list(phases)}; "
                             f"missing {missing}")
        volumes = [np.asarray(channels[p]) for p in phases]
    else:
        volumes = [np.asarray(c) for c in channels]
    if len(volumes) != len(phases):
        raise ValueError(f"bundle {bundle.name} needs {len(phases)} channels {list(phases)}, "
                         f"got {len(volumes)}")
    shapes = {v.shape for v in volumes}
    if len(shapes) != 1 or volumes[0].ndim != 3:
        raise ValueError(f"channels must be [z, y, x] volumes on one grid, got shapes "
                         f"{[v.shape for v in volumes]}")
    return volumes


def _output_indices(bundle: Bundle) -> tuple[int, int]:
    try:
        return bundle.outputs.index("liver"), bundle.outputs.index("tumour")
    except ValueError:
        raise BundleError(f"{bundle.path}: outputs.labels {list(bundle.outputs)} must include "
                          f"'liver' and 'tumour' for segmentation") from None


def _check_normalisation(bundle: Bundle) -> None:
    if bundle.normalisation not in SUPPORTED_NORMALISATIONS:
        raise BundleError(f"{bundle.path}: preprocessing.normalisation "
                          f"{bundle.normalisation!r} is not one of {SUPPORTED_NORMALISATIONS}")


def _predictor(session: Session, activation: str) -> Predictor:
    """Wrap the session so the sliding window blends probabilities, whatever the model emits:
    logit scales differ between patches, probabilities are comparable."""
    def predict(tiles: FloatArray) -> FloatArray:
        out = session.run(tiles)
        return softmax(out, axis=1) if activation == "logits" else out
    return predict


def softmax(logits: FloatArray, axis: int = 1) -> FloatArray:
    """Numerically stable softmax (the max is subtracted before exponentiating)."""
    shifted = logits - logits.max(axis=axis, keepdims=True)
    exp = np.exp(shifted)
    probabilities: FloatArray = (exp / exp.sum(axis=axis, keepdims=True)).astype(np.float32)
    return probabilities


def _raw_labels(probabilities: FloatArray, liver_index: int, tumour_index: int) -> LabelArray:
    winner = np.argmax(probabilities, axis=0)
    labels = np.zeros(winner.shape, dtype=np.uint8)
    labels[winner == liver_index] = LIVER
    labels[winner == tumour_index] = TUMOUR
    return labels


def postprocess(labels: LabelArray, spacing_xyz: Sequence[float],
                min_lesion_ml: float = DEFAULT_MIN_LESION_ML,
                organ_margin_mm: float = DEFAULT_ORGAN_MARGIN_MM) -> LabelArray:
    """Clean a raw label map with what is known of livers and lesions.

    There is one liver: the largest connected liver+tumour component. A tumour component
    outside it is kept (whole) when it comes within ``organ_margin_mm`` of it: exophytic
    lesions can be cut off from the liver by a thin misclassified rim. Tumour components
    under ``min_lesion_ml`` are below what the model and the criteria can measure, and
    become liver (or background outside the organ).
    """
    organ = _largest_component(labels > 0)
    out = np.zeros(labels.shape, dtype=np.uint8)
    if not organ.any():
        return out
    tumour = _touching(labels == TUMOUR, _near(organ, spacing_xyz, organ_margin_mm))
    out[organ] = LIVER
    out[tumour] = TUMOUR
    _fill_holes(out)
    tumour = out == TUMOUR
    small = _small_components(tumour, spacing_xyz, min_lesion_ml)
    out[small] = 0
    out[small & organ] = LIVER
    return out


HOLE_TUMOUR_SHARE = 0.3
"""A cavity whose rim is at least this much tumour is necrosis, else an unlabelled vessel."""


def _fill_holes(labels: LabelArray) -> None:
    """The organ is solid: enclosed cavities are tissue of the organ, in place.

    A cavity largely walled by tumour is tumour (a non-enhancing necrotic part that looks
    like fluid on every phase); any other is liver (an unlabelled vessel).
    """
    organ = labels > 0
    holes = ndimage.binary_fill_holes(organ) & ~organ
    if not holes.any():
        return
    components, count = ndimage.label(holes)
    share = _tumour_share_of_rims(components, count, labels == TUMOUR)
    labels[holes] = LIVER
    labels[holes & (share[components] >= HOLE_TUMOUR_SHARE)] = TUMOUR


def _tumour_share_of_rims(components: npt.NDArray[np.int32], count: int,
                          tumour: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    """For each labelled cavity, the fraction of its one-voxel rim that is tumour."""
    owner = ndimage.grey_dilation(components, size=(3, 3, 3))  # rim voxel → its cavity
    rim = (components == 0) & (owner > 0)
    total = np.bincount(owner[rim], minlength=count + 1).astype(np.float64)
    in_tumour = np.bincount(owner[rim & tumour], minlength=count + 1)
    share = np.divide(in_tumour, total, out=np.zeros_like(total), where=total > 0)
    share[0] = 0.0
    return share


def _largest_component(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    components, count = ndimage.label(mask, structure=ndimage.generate_binary_structure(3, 3))
    if count <= 1:
        return mask.copy()
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return np.asarray(components == int(np.argmax(sizes)))


def _touching(mask: npt.NDArray[np.bool_],
              region: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """The connected components of ``mask`` that have at least one voxel in ``region``."""
    components, _ = ndimage.label(mask, structure=ndimage.generate_binary_structure(3, 3))
    keep = np.unique(components[region & mask])
    return np.isin(components, keep[keep > 0])


def _near(organ: npt.NDArray[np.bool_], spacing_xyz: Sequence[float],
          margin_mm: float) -> npt.NDArray[np.bool_]:
    """The organ dilated by ``margin_mm`` (Euclidean, in mm), computed in its bounding box."""
    spacing_zyx = [float(s) for s in spacing_xyz[::-1]]
    reach = [math.ceil(margin_mm / s) + 1 for s in spacing_zyx]
    box = ndimage.find_objects(organ.astype(np.uint8))[0]
    assert box is not None
    grown = tuple(slice(max(b.start - r, 0), min(b.stop + r, n))
                  for b, r, n in zip(box, reach, organ.shape, strict=True))
    distance = ndimage.distance_transform_edt(~organ[grown], sampling=spacing_zyx)
    near = np.zeros(organ.shape, dtype=bool)
    near[grown] = np.asarray(distance) <= margin_mm
    return near


def _small_components(mask: npt.NDArray[np.bool_], spacing_xyz: Sequence[float],
                      min_ml: float) -> npt.NDArray[np.bool_]:
    voxel_ml = float(np.prod([float(s) for s in spacing_xyz])) / 1000.0
    components, count = ndimage.label(mask, structure=ndimage.generate_binary_structure(3, 3))
    if count == 0:
        return np.zeros(mask.shape, dtype=bool)
    sizes = np.bincount(components.ravel()) * voxel_ml
    small = sizes < min_ml
    small[0] = False
    return np.asarray(small[components])

