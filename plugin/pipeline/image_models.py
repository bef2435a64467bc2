"""Serving of image response bundles (``[inputs] kind = "image"``) inside the predict step.

Per bundle: every channel's series through ``dicom_io.selection.select_volume`` with the site
rules (a DWI channel takes the highest b-value), resampled onto the segmentation's reference
grid; the crop centred on the largest measured lesion; ``inference.deep_response.prepare``;
the clinical inputs the bundle lists; then ONNX Runtime (``predict_image``), which returns
the probability and the explanation map. The explanation is drawn back onto the reference
slices here so the report step only renders it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from dicom_io.phases import PhaseRules
from dicom_io.selection import LabelledSeries, NoUsableSeries, SelectedVolume, select_volume
from dicom_io.volume import Volume, resample_like
from inference.bundle import Bundle
from inference.deep_response import (
    ImagePrediction,
    image_spec,
    lesion_crop,
    logit,
    open_graph,
    predict_image,
    prepare,
    to_reference_slice,
    zoom_to_lesion,
    zoomed_crop,
)
from inference.response import MissingInputs, ResponsePrediction, build_vector

__all__ = ["ExplanationImage", "ImageExplanation", "highest_b_value", "run_image_bundle"]

log = logging.getLogger(__name__)
DIFFUSION = "DWI"


@dataclass(frozen=True)
class ExplanationImage:
    """One explanation image on the reference grid: which slice, over which channel."""

    channel: str
    reference_z: int
    background: npt.NDArray[np.float32]
    overlay: npt.NDArray[np.float32]
    weight: float
    series_uid: str


@dataclass(frozen=True)
class ImageExplanation:
    """What the report needs to draw a model's explanation series."""

    method: str
    images: tuple[ExplanationImage, ...]
    prediction: ImagePrediction


def _b_value(item: LabelledSeries) -> float:
    value = item.series.first.get("DiffusionBValue")
    try:
        return float(value) if value is not None else -1.0
    except (TypeError, ValueError):
        return -1.0


def highest_b_value(labelled: Sequence[LabelledSeries]) -> frozenset[str]:
    """Series to exclude so that a DWI channel gets the highest b-value image (the one a
    diffusion model reads); series without DiffusionBValue stay candidates."""
    dwi = [item for item in labelled if item.label.label == DIFFUSION]
    if len(dwi) < 2:
        return frozenset()
    best = max(_b_value(item) for item in dwi)
    return frozenset(item.series.key for item in dwi if 0 <= _b_value(item) < best)


def _select(labelled: Sequence[LabelledSeries], bundle: Bundle, channel: str,
            rules: PhaseRules | None) -> SelectedVolume:
    accepted = bundle.inputs.accepted(channel)
    exclude = highest_b_value(labelled) if DIFFUSION in accepted else frozenset()
    try:
        return select_volume(labelled, accepted, rules, exclude)
    except NoUsableSeries as exc:
        raise MissingInputs([f"{channel} series ({exc.reason})"]) from exc


def _clinical_vector(bundle: Bundle, clinical: dict[str, object]) -> dict[str, float]:
    features = tuple(f for f in bundle.inputs.features if f.startswith("clinical:"))
    only = replace(bundle, inputs=replace(bundle.inputs, features=features))
    return build_vector(only, {}, clinical, {})  # type: ignore[arg-type]


def run_image_bundle(bundle: Bundle, labelled: Sequence[LabelledSeries], reference: Volume,
                     organ: npt.NDArray[np.bool_], lesion_labels: npt.NDArray[np.integer] | None,
                     clinical: dict[str, object], rules: PhaseRules | None,
                     providers: Sequence[str] = (), lesion_diameter_mm: float | None = None
                     ) -> tuple[ResponsePrediction, dict[str, str], ImageExplanation]:
    """Predict and explain; ``MissingInputs`` names what the study lacks.
    ``lesion_diameter_mm`` (the measured longest diameter of lesion 1) scales a zoomed
    bundle's field of view."""
    started = time.perf_counter()
    spec = image_spec(bundle)
    if bundle.inputs.timepoints > 1:
        raise MissingInputs(["prior time points (multi-time-point image bundles are not "
                             "served yet)"])
    if lesion_labels is None or not (lesion_labels == 1).any():
        raise MissingInputs(["a segmented tumour"])
    selected = {ch: _select(labelled, bundle, ch, rules) for ch in bundle.inputs.phases}
    volumes = {ch: resample_like(s.volume, reference).array for ch, s in selected.items()}
    crop = lesion_crop(np.asarray(lesion_labels == 1), reference.spacing, spec.spacing_xyz,
                       spec.crop_zyx)
    image = prepare([volumes[ch] for ch in bundle.inputs.phases], organ, crop,
                    spec.normalisation)
    if spec.zoom is not None:
        if lesion_diameter_mm is None:
            raise MissingInputs(["the measured lesion diameter"])
        image = zoom_to_lesion(image, spec.spacing_xyz[0], lesion_diameter_mm, spec.zoom)
        crop = zoomed_crop(crop, spec.spacing_xyz[0], reference.spacing, lesion_diameter_mm,
                           spec.zoom)
    vector = _clinical_vector(bundle, clinical) if spec.clinical_features else {}
    row = (np.array([vector[f] for f in spec.clinical_features], np.float32)
           if spec.clinical_features else None)
    chosen = list(providers) or None
    session = open_graph(bundle.model_file, chosen)
    head = open_graph(spec.head_file, chosen) if spec.head_file else None
    threshold = bundle.threshold("probability", 0.5)
    result = predict_image(spec, bundle.outputs, session, image, row, head, threshold=threshold)
    p = result.positive_probability
    contributions = tuple(sorted(((f"{name} channel", value)
                                  for name, value in result.channel_log_odds),
                                 key=lambda item: -abs(item[1])))
    prediction = ResponsePrediction(p, logit(p), p >= threshold, threshold, bundle.outputs[-1],
                                    dict(vector), contributions)
    used = {f"phase {ch}": f"series {s.series_uid} ({s.reason})" for ch, s in selected.items()}
    pixel_mm = crop.step[2] * reference.spacing[0]
    used["crop"] = (f"{crop.shape[1]}x{crop.shape[2]} px of {pixel_mm:.2f} mm on the largest "
                    f"segmented lesion, reference slice {round(crop.centre[0])}")
    images = tuple(
        ExplanationImage(item.channel, crop.reference_slice(item.crop_z),
                         _slice(volumes, item.channel, crop.reference_slice(item.crop_z)),
                         to_reference_slice(item.values, crop, item.crop_z, reference.shape),
                         item.weight, selected[_base(item.channel)].series_uid
                         if _base(item.channel) in selected else "")
        for item in result.explanations)
    log.info("image bundle %s: p=%.3f in %.2fs", bundle.name, p, time.perf_counter() - started)
    return prediction, used, ImageExplanation(result.method, images, result)


def _base(channel: str) -> str:
    return channel.split("@", 1)[0]


def _slice(volumes: dict[str, npt.NDArray[np.floating]], channel: str, z: int
           ) -> npt.NDArray[np.float32]:
    volume = volumes[_base(channel)]
    return np.asarray(volume[int(np.clip(z, 0, volume.shape[0] - 1))], np.float32)


def source_dataset(datasets: Sequence[Dataset], z: int) -> Dataset:
    """The reference series' instance of slice ``z`` (clipped into the series)."""
    return datasets[int(np.clip(z, 0, len(datasets) - 1))]
