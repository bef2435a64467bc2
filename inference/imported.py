"""``segment()`` for models imported from nnU-Net or MONAI (``preprocessing.kind``).

An imported model is pre-processed, run and post-processed the way its own framework does it
(``inference.nnunet_serving``, ``inference.monai_serving``), so the probabilities served are the
ones the site validated with that framework; what follows (Hepatica's label map, organ and
lesion clean-up, measurements) is the same for every model. Volumes arrive in DICOM order; the
bundle's ``orientation`` first brings them to the axis order the model was trained in.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from inference import monai_serving, nnunet_serving
from inference.bundle import Bundle, BundleError
from inference.measurements import LIVER, TUMOUR
from inference.orientation import plan_reorientation
from inference.runtime import Session
from inference.segmentation import (
    DEFAULT_MIN_LESION_ML,
    DEFAULT_ORGAN_MARGIN_MM,
    SegmentationResult,
    postprocess,
)
from inference.sliding_window import Progress

__all__ = ["probabilities", "segment_imported"]

FloatArray = npt.NDArray[np.float32]


def probabilities(bundle: Bundle, session: Session,
                  volumes: Sequence[npt.NDArray[np.floating]], spacing_xyz: Sequence[float],
                  direction: Sequence[float] | None = None,
                  progress: Progress | None = None) -> FloatArray:
    """The model's class probabilities ``[K, z, y, x]`` on the input grid, as its framework
    computes them. ``direction`` (row-major 3x3, LPS) is needed when the bundle reorients."""
    stacked = np.stack([np.asarray(v, dtype=np.float32) for v in volumes])
    spacing = tuple(float(s) for s in spacing_xyz)
    reorientation = None
    if bundle.orientation != "none":
        if direction is None:
            raise ValueError(f"bundle {bundle.name} reorients its input to "
                             f"{bundle.orientation}: segment() needs the volume's direction")
        reorientation = plan_reorientation(direction, bundle.orientation)
        stacked = reorientation.forward(stacked)
        spacing = reorientation.spacing(spacing)
        direction = None  # the framework sees the reoriented grid
    if bundle.kind == "nnunet":
        out = nnunet_serving.predict(bundle.framework, session, stacked, spacing, progress)
    elif bundle.kind == "monai":
        out = monai_serving.predict(bundle.framework, session, stacked, spacing, direction,
                                    progress)
    else:
        raise BundleError(f"{bundle.path}: preprocessing.kind {bundle.kind!r} is not imported")
    if reorientation is not None:
        out = reorientation.backward(out)
    return np.asarray(out, dtype=np.float32)


def segment_imported(bundle: Bundle, session: Session,
                     volumes: Sequence[npt.NDArray[np.floating]], spacing_xyz: Sequence[float],
                     direction: Sequence[float] | None = None,
                     progress: Progress | None = None) -> SegmentationResult:
    """``segment()`` for an imported bundle: framework probabilities → Hepatica labels."""
    liver, tumour = _indices(bundle, "liver"), _indices(bundle, "tumour")
    start = time.perf_counter()
    probs = probabilities(bundle, session, volumes, spacing_xyz, direction, progress)
    predicted = time.perf_counter()
    winner = np.argmax(probs, axis=0)
    raw = np.zeros(winner.shape, dtype=np.uint8)
    raw[np.isin(winner, liver)] = LIVER
    raw[np.isin(winner, tumour)] = TUMOUR
    labels = postprocess(raw, spacing_xyz,
                         bundle.threshold("min_lesion_ml", DEFAULT_MIN_LESION_ML),
                         bundle.threshold("organ_margin_mm", DEFAULT_ORGAN_MARGIN_MM))
    done = time.perf_counter()
    timings = {"predict": predicted - start, "postprocess": done - predicted,
               "total": done - start}
    return SegmentationResult(labels, probs[tumour].sum(axis=0), probs[liver].sum(axis=0),
                              timings, tuple(session.providers))


def _indices(bundle: Bundle, label: str) -> list[int]:
    names = bundle.channels_of(label)
    missing = [n for n in names if n not in bundle.outputs]
    if missing:
        raise BundleError(f"{bundle.path}: Hepatica's {label!r} needs output labels {missing}, "
                          f"which outputs.labels {list(bundle.outputs)} lacks (map them in "
                          f"[outputs.map])")
    return [bundle.outputs.index(n) for n in names]
