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
from inference.preprocess import Box, prepare_channels, zoom_linear
from inference.runtime import Session
from inference.sliding_window import (
    Predictor,
    Progress,
    sliding_window_predict,
    window_starts,
)

__all__ = [
    "DEFAULT_MIN_LESION_ML",
    "DEFAULT_ORGAN_MARGIN_MM",
    "DEFAULT_ROI_MARGIN_MM",
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
DEFAULT_ROI_MARGIN_MM = 20.0
COARSE_KEEP_SHARE = 0.05
"""Coarse-pass components at least this share of the largest one count as organ."""


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
    region_zyx: tuple[tuple[int, int], ...] | None = None
    """The input-grid box ``(start, stop)`` per axis that the network segmented at full
    resolution (coarse-to-fine), or None: the whole volume."""


def segment(bundle: Bundle, session: Session,
            channels: Sequence[npt.NDArray[np.floating]] | Mapping[str, npt.NDArray[np.floating]],
            spacing_xyz: Sequence[float], *, overlap: float = 0.25, batch_size: int = 1,
            progress: Progress | None = None,
            direction: Sequence[float] | None = None,
            coarse_to_fine: bool = True) -> SegmentationResult:
    """Segment liver and tumours in co-registered phase volumes ``[z, y, x]`` on one grid.

    ``channels`` is in ``bundle.inputs.phases`` order, or a mapping phase → volume.
    ``direction`` (the volumes' row-major 3x3, LPS) is needed by imported bundles that
    reorient their input; those run as their framework does (``inference.imported``), with
    its own window overlap and batching.

    ``coarse_to_fine``: the network first runs once on the volume at half resolution to
    find the liver, then at full resolution only on the liver's box grown by the bundle's
    ``thresholds.roi_margin_mm`` (default 20 mm); a liver reaching the edge of that box
    grows it, and when the box would cost as many windows as the whole volume the whole
    volume is segmented. Outside the box nothing is liver or tumour (probabilities 0).
    """
    volumes = _ordered_channels(bundle, channels)
    if bundle.kind != "hepatica":
        from inference.imported import segment_imported

        return segment_imported(bundle, session, volumes, spacing_xyz, direction, progress)
    liver_index, tumour_index = _output_indices(bundle)
    _check_normalisation(bundle)
    timings: dict[str, float] = {}
    shape = volumes[0].shape
    with _timed(timings, "total"):
        with _timed(timings, "prepare"):
            x = prepare_channels(volumes, spacing_xyz, bundle.spacing_mm)
        with _timed(timings, "predict"):
            window = Window(_predictor(session, bundle.output_activation), bundle.patch_size,
                            overlap, batch_size, progress)
            margin = bundle.threshold("roi_margin_mm", DEFAULT_ROI_MARGIN_MM)
            model_probabilities, model_box = _predict(
                x, window, (liver_index, tumour_index), bundle.spacing_mm,
                margin if coarse_to_fine else None)
        with _timed(timings, "resample"):
            box = _input_box(model_box, x.shape[1:], shape)
            probabilities = zoom_linear(model_probabilities, shape, out_box=box,
                                        in_start=[b.start for b in model_box],
                                        full_in_shape=x.shape[1:])
        with _timed(timings, "postprocess"):
            labels = np.zeros(shape, dtype=np.uint8)
            labels[box] = postprocess(
                _raw_labels(probabilities, liver_index, tumour_index), spacing_xyz,
                bundle.threshold("min_lesion_ml", DEFAULT_MIN_LESION_ML),
                bundle.threshold("organ_margin_mm", DEFAULT_ORGAN_MARGIN_MM))
            tumour, liver = (_on_grid(probabilities[i], box, shape)
                             for i in (tumour_index, liver_index))
    region = None if all(b.stop - b.start == n for b, n in zip(box, shape, strict=True)) else \
        tuple((b.start, b.stop) for b in box)
    return SegmentationResult(labels, tumour, liver, timings, tuple(session.providers),
                              region)


@dataclass(frozen=True)
class Window:
    """The sliding window a bundle's network runs in (patch, overlap, batching)."""

    predict: Predictor
    patch: tuple[int, int, int]
    overlap: float = 0.25
    batch_size: int = 1
    progress: Progress | None = None

    def run(self, x: FloatArray, overlap: float | None = None) -> FloatArray:
        return sliding_window_predict(x, self.predict, self.patch,
                                      overlap=self.overlap if overlap is None else overlap,
                                      batch_size=self.batch_size, progress=self.progress)

    def count(self, shape: Sequence[int], overlap: float | None = None) -> int:
        """How many windows (network runs) a region of ``shape`` costs."""
        padded = [max(int(n), p) for n, p in zip(shape, self.patch, strict=True)]
        return len(window_starts(padded, self.patch,
                                 self.overlap if overlap is None else overlap))


def _predict(x: FloatArray, window: Window, foreground: tuple[int, int],
             spacing_mm: Sequence[float], margin_mm: float | None
             ) -> tuple[FloatArray, Box]:
    """Probabilities ``[K, box]`` on the model grid and the box they cover (coarse-to-fine
    when ``margin_mm`` is given and it saves windows; else the whole volume)."""
    spatial = x.shape[1:]
    whole: Box = (slice(0, spatial[0]), slice(0, spatial[1]), slice(0, spatial[2]))
    padded, depth = pad_thin_volume(x, window.patch[0])
    n_whole = window.count(spatial)
    coarse_shape = _coarse_shape(spatial, window.patch)
    n_coarse = window.count(coarse_shape, overlap=0.0)
    if margin_mm is None or padded is not x or n_whole <= n_coarse + 1:
        return window.run(padded)[:, depth], whole
    reach = [math.ceil(margin_mm / float(s)) for s in spacing_mm[::-1]]
    box = _coarse_box(x, window, coarse_shape, foreground, reach)
    while box is not None and window.count(_size(box)) + n_coarse < n_whole:
        probabilities = window.run(x[(slice(None), *box)])
        grown = _grown(box, _organ(probabilities, foreground), spatial, reach, window.patch)
        if grown == box:
            return probabilities, box
        box = grown
    return window.run(x), whole


def _size(box: Box) -> tuple[int, ...]:
    return tuple(b.stop - b.start for b in box)


def _coarse_shape(spatial: Sequence[int], patch: Sequence[int]) -> tuple[int, ...]:
    """Half the resolution along every axis longer than the patch."""
    return tuple(round(n / 2) if n > p else int(n) for n, p in zip(spatial, patch, strict=True))


def _coarse_box(x: FloatArray, window: Window, coarse_shape: tuple[int, ...],
                foreground: tuple[int, int], reach: Sequence[int]) -> Box | None:
    """The organ's box on the model grid from a half-resolution pass (non-overlapping
    windows), grown by ``reach`` voxels and to at least one patch; None: nothing found."""
    spatial = x.shape[1:]
    coarse = window.run(zoom_linear(x, coarse_shape), overlap=0.0)
    organ = _organ(coarse, foreground, keep_share=COARSE_KEEP_SHARE)
    found = ndimage.find_objects(organ.astype(np.uint8))
    if not found or found[0] is None:
        return None
    box = []
    for b, n, c, r, p in zip(found[0], spatial, coarse_shape, reach, window.patch, strict=True):
        scale = n / c
        start = max(math.floor(b.start * scale) - r, 0)
        stop = min(math.ceil(b.stop * scale) + r, n)
        box.append(_at_least(start, stop, p, n))
    return box[0], box[1], box[2]


def _at_least(start: int, stop: int, length: int, n: int) -> slice:
    """``start:stop`` widened evenly to ``length`` voxels where the axis allows."""
    missing = length - (stop - start)
    if missing > 0:
        start = max(start - missing // 2, 0)
        stop = min(start + length, n)
        start = max(stop - length, 0)
    return slice(start, stop)


def _organ(probabilities: FloatArray, foreground: tuple[int, int],
           keep_share: float | None = None) -> npt.NDArray[np.bool_]:
    """Liver-or-tumour winners: the largest connected component, or (``keep_share``) every
    component at least that share of the largest."""
    winner = np.argmax(probabilities, axis=0)
    mask = (winner == foreground[0]) | (winner == foreground[1])
    components, count = ndimage.label(mask, structure=ndimage.generate_binary_structure(3, 3))
    if count == 0:
        return np.zeros(mask.shape, dtype=bool)
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    if keep_share is None:
        return np.asarray(components == int(np.argmax(sizes)))
    return np.asarray((sizes >= keep_share * sizes.max())[components])


def _grown(box: Box, organ: npt.NDArray[np.bool_], spatial: Sequence[int],
           reach: Sequence[int], patch: Sequence[int]) -> Box:
    """``box`` grown on every side where the organ touches it inside the volume."""
    out = list(box)
    for axis in range(3):
        step = max(reach[axis], patch[axis] // 2)
        first = np.take(organ, 0, axis=axis).any()
        last = np.take(organ, organ.shape[axis] - 1, axis=axis).any()
        start, stop = box[axis].start, box[axis].stop
        if first and start > 0:
            start = max(start - step, 0)
        if last and stop < spatial[axis]:
            stop = min(stop + step, spatial[axis])
        out[axis] = slice(start, stop)
    return out[0], out[1], out[2]


def _input_box(model_box: Box, model_shape: Sequence[int], input_shape: Sequence[int]) -> Box:
    """The input-grid voxels whose centres the model-grid box covers (grid-mode scaling)."""
    out = []
    for b, m, n in zip(model_box, model_shape, input_shape, strict=True):
        scale = n / m
        out.append(slice(max(math.floor(b.start * scale), 0), min(math.ceil(b.stop * scale), n)))
    return out[0], out[1], out[2]


def _on_grid(values: FloatArray, box: Box, shape: Sequence[int]) -> FloatArray:
    if values.shape == tuple(shape):
        return np.ascontiguousarray(values)
    out = np.zeros(tuple(shape), dtype=np.float32)
    out[box] = values
    return out


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

