"""Image-input response bundles: tumour-centred crops in, class probabilities and an
explanation map out, all through ONNX Runtime (never torch at serving time).

A response bundle whose ``[inputs] kind = "image"`` (docs/bundles.md) takes prepared image
tensors instead of a feature vector. Preparation is one function, :func:`prepare`, used by
training and serving alike: every channel (a phase or sequence, already resampled onto the
reference grid) is sampled on a crop grid centred on the largest lesion's largest axial
cross-section, at the bundle's spacing and crop size, and divided by the median of its liver
(``normalisation = "liver_median"``: MR has no absolute scale, and the ratio to the liver is
what a reader judges enhancement and diffusion by).

The ONNX graph's inputs are ``image`` ``[B, C, Z, Y, X]`` and, when the bundle lists
``clinical:`` features, ``clinical`` ``[B, F]``; its outputs are ``probability`` ``[B, K]``,
optionally ``risk`` ``[B, 1]`` and, by ``explain.method``:

* ``cam`` / ``grad-cam++``: ``explanation`` ``[B, C, Z, Y, X]`` computed inside the graph
  (the class-activation map, or Grad-CAM++ whose gradients are constant when a linear head
  follows global pooling);
* ``grad-cam``: ``activations`` ``[B, N, K, h, w]`` (last convolution of each instance),
  ``features`` ``[B, N, K]`` (their global average) and ``attention`` ``[B, N]``; the bundle's
  ``head.onnx`` (float64) maps ``features`` to the explained ``logit`` ``[B]`` and its gradient
  is taken by central differences in ONNX Runtime (pooling makes dlogit/dA_k = dlogit/df_k /
  (h w)).

Channel contributions are occlusions: the log-odds minus the log-odds with that channel
replaced by a uniform liver signal (1.0 after normalisation) - the same substitution the
phase-occlusion table of ``evaluate`` uses.
"""

from __future__ import annotations

import math
import threading
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from scipy import ndimage

from inference.bundle import Bundle
from inference.runtime import available_providers, choose_providers

__all__ = [
    "EXPLAIN_METHODS",
    "IMAGE_KIND",
    "NORMALISATIONS",
    "Crop",
    "ExplanationSlice",
    "GraphSession",
    "ImagePrediction",
    "ImageSpec",
    "Zoom",
    "image_spec",
    "is_image_bundle",
    "lesion_crop",
    "open_graph",
    "predict_image",
    "prepare",
    "to_reference_slice",
    "upsample",
    "zoom_to_lesion",
    "zoomed_crop",
]

IMAGE_KIND = "image"
NORMALISATIONS = ("liver_median", "none")
EXPLAIN_METHODS = ("cam", "grad-cam", "grad-cam++")
NEUTRAL = 1.0  # a channel occluded: uniform liver signal after liver_median normalisation
FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ImageSpec:
    """What an image bundle needs beyond ``Bundle``: read from its ``bundle.toml``."""

    channels: tuple[str, ...]
    """Channel names in input order: the phases, per time point (``AP@0``, ``AP@1`` …)
    when ``inputs.timepoints`` > 1."""
    crop_zyx: tuple[int, int, int]
    spacing_xyz: tuple[float, float, float]
    normalisation: str
    method: str
    clinical_features: tuple[str, ...]
    head_file: Path | None
    instances: tuple[str, ...] = ()
    """``grad-cam``: the channel of each instance, in instance order (``[image] instances``)."""
    instance_slices: tuple[int, ...] = ()
    """``grad-cam``: the crop slice each instance is centred on."""
    risk_output: bool = False
    top_instances: int = 3
    target: str = "predicted"
    """``explain.target``: the class the map explains, ``predicted`` (at the threshold) or
    ``positive`` (always the class whose probability is reported: "evidence for response")."""
    min_share: float = 0.2
    """``cam``: a channel gets an explanation image when it carries at least this share of
    the map's positive mass (the evidence for the predicted class); the largest always does."""
    zoom: Zoom | None = None
    """Second stage: the context crop resampled so the lesion spans ``1 / scale`` of the
    model's field of view (``[image] zoom_*``); None: the context crop is the input."""

    @property
    def input_zyx(self) -> tuple[int, int, int]:
        """The model input's crop shape (after the zoom, if any)."""
        if self.zoom is None:
            return self.crop_zyx
        return (self.crop_zyx[0], self.zoom.size, self.zoom.size)


@dataclass(frozen=True)
class Zoom:
    """Lesion-scaled field of view: ``clip(scale * diameter, min_mm, max_mm)`` over ``size``
    pixels, so small and large lesions fill the model's view alike (global average pooling
    then measures the lesion, not its size)."""

    size: int
    scale: float = 2.0
    min_mm: float = 48.0
    max_mm: float = 150.0

    def fov_mm(self, diameter_mm: float) -> float:
        return float(np.clip(self.scale * diameter_mm, self.min_mm, self.max_mm))


def _toml(bundle: Bundle) -> dict[str, Any]:
    with (bundle.path / "bundle.toml").open("rb") as handle:
        return tomllib.load(handle)


def is_image_bundle(bundle: Bundle) -> bool:
    """A response bundle whose model reads images (``[inputs] kind = "image"``)."""
    if bundle.family != "response":
        return False
    return bool(_toml(bundle).get("inputs", {}).get("kind") == IMAGE_KIND)


def image_spec(bundle: Bundle) -> ImageSpec:
    """The image settings of a bundle; ``ValueError`` naming the key when one is wrong."""
    data = _toml(bundle)
    image = data.get("image", {})
    where = f"{bundle.path / 'bundle.toml'}"
    normalisation = bundle.normalisation
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"{where}: preprocessing.normalisation must be one of "
                         f"{NORMALISATIONS} for an image bundle, got {normalisation!r}")
    method = bundle.explain or "cam"
    if method not in EXPLAIN_METHODS:
        raise ValueError(f"{where}: explain.method must be one of {EXPLAIN_METHODS}, "
                         f"got {method!r}")
    head = image.get("head_file")
    head_file = bundle.path / head if head else None
    if method == "grad-cam" and (head_file is None or not head_file.is_file()):
        raise ValueError(f"{where}: explain.method grad-cam needs image.head_file (the head "
                         "graph whose gradient is taken)")
    zoom = None
    if "zoom_size" in image:
        zoom = Zoom(int(image["zoom_size"]), float(image.get("zoom_scale", 2.0)),
                    float(image.get("zoom_min_mm", 48.0)), float(image.get("zoom_max_mm", 150.0)))
    tp = bundle.inputs.timepoints
    channels = bundle.inputs.phases if tp == 1 else tuple(
        f"{p}@{t}" for t in range(tp) for p in bundle.inputs.phases)
    return ImageSpec(
        channels=channels, crop_zyx=bundle.patch_size, spacing_xyz=bundle.spacing_mm,
        normalisation=normalisation, method=method,
        clinical_features=tuple(f for f in bundle.inputs.features if f.startswith("clinical:")),
        head_file=head_file, instances=tuple(image.get("instances", ())),
        instance_slices=tuple(int(v) for v in image.get("instance_slices", ())),
        risk_output=bool(image.get("risk_output", False)),
        top_instances=int(image.get("top_instances", 3)),
        min_share=float(data.get("explain", {}).get("min_share", 0.2)), zoom=zoom,
        target=_target(data, where))


def _target(data: Mapping[str, Any], where: str) -> str:
    target = str(data.get("explain", {}).get("target", "predicted"))
    if target not in ("predicted", "positive"):
        raise ValueError(f"{where}: explain.target must be 'predicted' or 'positive', "
                         f"got {target!r}")
    return target


# ------------------------------------------------------------------ crops


@dataclass(frozen=True)
class Crop:
    """A crop grid on a reference volume: centre and step in reference voxels ``(z, y, x)``."""

    centre: tuple[float, float, float]
    step: tuple[float, float, float]
    shape: tuple[int, int, int]

    def coordinates(self) -> npt.NDArray[np.float64]:
        """Reference voxel coordinates of every crop voxel, ``[3, Z, Y, X]``."""
        axes = [self.centre[d] + (np.arange(self.shape[d]) - (self.shape[d] - 1) / 2)
                * self.step[d] for d in range(3)]
        return np.asarray(np.meshgrid(*axes, indexing="ij"), dtype=np.float64)

    def reference_slice(self, crop_z: int) -> int:
        """The reference slice nearest crop slice ``crop_z``."""
        return round(self.centre[0] + (crop_z - (self.shape[0] - 1) / 2) * self.step[0])

    def widened(self, margin_yx: int) -> Crop:
        """The same centre with ``margin_yx`` more voxels on each in-plane side (training
        samples random shifts inside it)."""
        return Crop(self.centre, self.step, (self.shape[0], self.shape[1] + 2 * margin_yx,
                                             self.shape[2] + 2 * margin_yx))


def lesion_crop(lesion: npt.NDArray[np.bool_], reference_spacing_xyz: Sequence[float],
                spacing_xyz: Sequence[float], shape_zyx: Sequence[int]) -> Crop:
    """Centred on the lesion's largest axial cross-section (the slice seeds 000/004 chose),
    at the lesion's in-plane centroid on that slice."""
    areas = lesion.sum(axis=(1, 2))
    if not areas.any():
        raise ValueError("no lesion voxels: nothing to centre the crop on")
    z = int(np.argmax(areas))
    ys, xs = np.nonzero(lesion[z])
    step = tuple(float(spacing_xyz[2 - d]) / float(reference_spacing_xyz[2 - d])
                 for d in range(3))
    return Crop((float(z), float(ys.mean()), float(xs.mean())),
                (step[0], step[1], step[2]), (int(shape_zyx[0]), int(shape_zyx[1]),
                                              int(shape_zyx[2])))


def liver_scale(volume: npt.NDArray[np.floating], organ: npt.NDArray[np.bool_]) -> float:
    """Median of the volume inside the organ (liver + tumours), the unit of every channel."""
    inside = volume[organ]
    value = float(np.median(inside)) if inside.size else float(np.median(volume))
    return value if value > 0 else 1.0


def prepare(channels: Sequence[npt.NDArray[np.floating]], organ: npt.NDArray[np.bool_],
            crop: Crop, normalisation: str = "liver_median") -> FloatArray:
    """``[C, Z, Y, X]`` float32: each channel (on the reference grid) sampled on the crop
    (trilinear, edges repeated) and normalised. Training and serving both call this."""
    coords = crop.coordinates()
    out = np.empty((len(channels), *crop.shape), np.float32)
    for c, volume in enumerate(channels):
        sampled = ndimage.map_coordinates(np.asarray(volume, np.float32), coords, order=1,
                                          mode="nearest")
        scale = liver_scale(volume, organ) if normalisation == "liver_median" else 1.0
        out[c] = sampled / scale
    return out


def zoom_to_lesion(context: npt.NDArray[np.floating], context_spacing_mm: float,
                   diameter_mm: float, zoom: Zoom, margin: int = 0, scale_jitter: float = 1.0
                   ) -> FloatArray:
    """Second preparation stage: the centred in-plane window of ``zoom.fov_mm(diameter)``
    resampled to ``zoom.size`` (plus ``margin`` pixels each side at the same pixel size) from
    the context crop ``[..., Y, X]`` (pixel size ``context_spacing_mm``)."""
    pixel = zoom.fov_mm(diameter_mm) * scale_jitter / zoom.size
    n = zoom.size + 2 * margin
    h, w = context.shape[-2:]
    ys = (h - 1) / 2 + (np.arange(n) - (n - 1) / 2) * pixel / context_spacing_mm
    xs = (w - 1) / 2 + (np.arange(n) - (n - 1) / 2) * pixel / context_spacing_mm
    grid = np.asarray(np.meshgrid(ys, xs, indexing="ij"))
    flat = np.asarray(context, np.float32).reshape(-1, h, w)
    out = np.stack([ndimage.map_coordinates(plane, grid, order=1, mode="nearest")
                    for plane in flat])
    return np.asarray(out.reshape(*context.shape[:-2], n, n), np.float32)


def zoomed_crop(crop: Crop, context_spacing_mm: float, reference_spacing_xyz: Sequence[float],
                diameter_mm: float, zoom: Zoom) -> Crop:
    """The crop grid of the zoomed input on the reference volume (for drawing maps back)."""
    pixel = zoom.fov_mm(diameter_mm) / zoom.size
    del context_spacing_mm  # same centre: only the pixel size changes
    return Crop(crop.centre, (crop.step[0], pixel / float(reference_spacing_xyz[1]),
                              pixel / float(reference_spacing_xyz[0])),
                (crop.shape[0], zoom.size, zoom.size))


def upsample(values: npt.NDArray[np.floating], shape: Sequence[int]) -> FloatArray:
    """Bilinear resize of the last two axes with half-pixel centres (torch's
    ``interpolate(..., align_corners=False)`` away from the border)."""
    h, w = values.shape[-2:]
    ys = np.clip((np.arange(shape[0]) + 0.5) * h / shape[0] - 0.5, 0, h - 1)
    xs = np.clip((np.arange(shape[1]) + 0.5) * w / shape[1] - 0.5, 0, w - 1)
    grid = np.asarray(np.meshgrid(ys, xs, indexing="ij"))
    flat = values.reshape(-1, h, w)
    out = np.stack([ndimage.map_coordinates(np.asarray(v, np.float64), grid, order=1)
                    for v in flat])
    return np.asarray(out.reshape(*values.shape[:-2], *shape), np.float32)


def to_reference_slice(values: npt.NDArray[np.floating], crop: Crop, crop_z: int,
                       reference_shape: Sequence[int]) -> FloatArray:
    """A crop-grid map ``[Y, X]`` drawn onto the reference slice it lies on (0 outside)."""
    ny, nx = int(reference_shape[1]), int(reference_shape[2])
    yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    cy = (yy - crop.centre[1]) / crop.step[1] + (crop.shape[1] - 1) / 2
    cx = (xx - crop.centre[2]) / crop.step[2] + (crop.shape[2] - 1) / 2
    out = ndimage.map_coordinates(np.asarray(values, np.float64), [cy, cx], order=1,
                                  mode="constant", cval=0.0)
    return np.asarray(out, np.float32)


# ------------------------------------------------------------------ runtime


class GraphSession:
    """An ONNX Runtime session with named inputs and outputs (``runtime.OnnxSession`` serves
    single-input, single-output graphs; image bundles have several of each)."""

    def __init__(self, path: Path, providers: Sequence[Any], threads: int | None = None) -> None:
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.path = path
        self._session = ort.InferenceSession(str(path), sess_options=options,
                                             providers=list(providers))
        self.inputs = tuple(i.name for i in self._session.get_inputs())
        self.outputs = tuple(o.name for o in self._session.get_outputs())
        self._dtypes = {i.name: np.float64 if i.type == "tensor(double)" else np.float32
                        for i in self._session.get_inputs()}

    @property
    def providers(self) -> tuple[str, ...]:
        return tuple(self._session.get_providers())

    def run(self, feeds: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        """Every output by name (float32, or float64 from a double graph such as the head
        Grad-CAM differentiates); feeds the graph does not take are ignored."""
        feed = {k: np.ascontiguousarray(v, dtype=self._dtypes[k]) for k, v in feeds.items()
                if k in self.inputs}
        values = self._session.run(list(self.outputs), feed)
        return {n: np.asarray(v) for n, v in zip(self.outputs, values, strict=True)}


_GRAPHS: dict[tuple[str, int, str, int | None], GraphSession] = {}
_LOCK = threading.Lock()


def open_graph(path: str | Path, providers: Sequence[Any] | None = None,
               threads: int | None = None) -> GraphSession:
    """A cached session per (file, modification time, providers, threads); providers as
    ``runtime.choose_providers`` orders them (TensorRT → CUDA → CPU) unless given."""
    resolved = Path(path).resolve()
    chosen = list(providers) if providers else choose_providers(available_providers())
    key = (str(resolved), resolved.stat().st_mtime_ns, repr(chosen), threads)
    with _LOCK:
        if key not in _GRAPHS:
            _GRAPHS[key] = GraphSession(resolved, chosen, threads)
        return _GRAPHS[key]


# ------------------------------------------------------------------ prediction


@dataclass(frozen=True)
class ExplanationSlice:
    """One explanation image: a crop-grid map ``[Y, X]`` of one channel at one crop slice."""

    channel: str
    crop_z: int
    values: FloatArray
    weight: float
    """Attention weight of the instance (``grad-cam``), else the channel's share of the
    positive explanation mass."""


@dataclass(frozen=True)
class ImagePrediction:
    """An image bundle's output for one study."""

    probabilities: tuple[float, ...]
    labels: tuple[str, ...]
    explanations: tuple[ExplanationSlice, ...]
    channel_log_odds: tuple[tuple[str, float], ...]
    """Per channel: log-odds minus log-odds with the channel occluded."""
    method: str
    risk: float | None = None
    explained: str = ""
    """The class label the maps give evidence for."""

    @property
    def positive_probability(self) -> float:
        return self.probabilities[-1]

    @property
    def predicted_class(self) -> str:
        return self.labels[int(np.argmax(self.probabilities))]


def logit(p: float) -> float:
    q = min(max(p, 1e-7), 1 - 1e-7)
    return math.log(q / (1 - q))


def _batch(image: FloatArray, clinical: FloatArray | None, occlude: bool
           ) -> dict[str, FloatArray]:
    """The study and, with ``occlude``, one copy per channel with that channel neutral."""
    rows = [image] + ([_occluded(image, c) for c in range(image.shape[0])] if occlude else [])
    feeds = {"image": np.stack(rows).astype(np.float32)}
    if clinical is not None:
        feeds["clinical"] = np.repeat(clinical[None, :], len(rows), axis=0).astype(np.float32)
    return feeds


def _occluded(image: FloatArray, channel: int) -> FloatArray:
    copy = image.copy()
    copy[channel] = NEUTRAL
    return copy


def _score(probability: FloatArray) -> float:
    """The explained score: log-odds of the last class (binary), else of the top class."""
    return logit(float(probability[-1])) if probability.shape[-1] == 2 else math.log(
        max(float(probability.max()), 1e-7))


def predict_image(spec: ImageSpec, labels: Sequence[str], session: GraphSession,
                  image: FloatArray, clinical: FloatArray | None = None,
                  head: GraphSession | None = None, occlude: bool = True,
                  threshold: float = 0.5) -> ImagePrediction:
    """Run the graph on one prepared study (``[C, Z, Y, X]``) and explain it.

    A binary model's map explains the class predicted at ``threshold`` (evidence for the
    positive class when it is predicted, against it - the map negated - when it is not), or
    with ``explain.target = "positive"`` always the positive class.
    """
    out = session.run(_batch(image, clinical, occlude))
    probability = out["probability"]
    full = _score(probability[0])
    channel_log_odds = tuple((name, full - _score(probability[c + 1]))
                             for c, name in enumerate(spec.channels)) if occlude else ()
    sign = 1.0
    binary = probability.shape[-1] == 2
    if binary and spec.target == "predicted" and float(probability[0, -1]) < threshold:
        sign = -1.0
    explained = (labels[-1] if sign > 0 else labels[0]) if binary else labels[
        int(np.argmax(probability[0]))]
    if spec.method == "grad-cam":
        if head is None:
            raise ValueError("grad-cam needs the bundle's head graph")
        explanations = _grad_cam(spec, out, head, image.shape[-2:], sign)
    else:
        explanations = _in_graph(spec, sign * out["explanation"][0])
    risk = float(out["risk"][0].ravel()[0]) if "risk" in out else None
    return ImagePrediction(tuple(float(p) for p in probability[0]), tuple(labels),
                           explanations, channel_log_odds, spec.method, risk, explained)


def _in_graph(spec: ImageSpec, maps: FloatArray) -> tuple[ExplanationSlice, ...]:
    """The channels that carry at least ``spec.min_share`` of the positive mass (the
    evidence for the explained class), largest first, each at its crop slice of most mass.
    A channel whose map holds (almost) no evidence for the class is not drawn: its
    "explanation" would be noise."""
    positive = np.maximum(maps, 0.0)
    mass = positive.reshape(positive.shape[0], -1).sum(axis=1)
    total = float(mass.sum()) or 1.0
    order = [int(c) for c in np.argsort(-mass)]
    keep = [c for c in order if mass[c] > 0 and mass[c] / total >= spec.min_share]
    slices = []
    for c in keep or order[:1]:
        z = int(np.argmax(positive[c].sum(axis=(1, 2))))
        slices.append(ExplanationSlice(spec.channels[c], z, positive[c, z],
                                       float(mass[c]) / total))
    return tuple(slices)


def _grad_cam(spec: ImageSpec, out: Mapping[str, npt.NDArray[Any]], head: GraphSession,
              crop_yx: Sequence[int], sign: float = 1.0, eps: float = 1e-4
              ) -> tuple[ExplanationSlice, ...]:
    """Grad-CAM of the top-attended instances; the head's gradient by central differences
    (the head graph runs in float64, so a step of 1e-4 loses no digits that matter)."""
    activations, features = out["activations"][0], out["features"][0]
    attention = out["attention"][0]
    top = np.argsort(-attention)[: spec.top_instances]
    n_features = features.shape[-1]
    features = features.astype(np.float64)
    rows = []
    for n in top:
        for k in range(n_features):
            for step in (eps, -eps):
                row = features.copy()
                row[n, k] += step
                rows.append(row)
    logits = head.run({"features": np.stack(rows)})["logit"].reshape(-1)
    gradient = sign * ((logits[0::2] - logits[1::2]) / (2 * eps)).reshape(len(top), n_features)
    slices = []
    for i, n in enumerate(top):
        weights = gradient[i] / float(activations.shape[-1] * activations.shape[-2])
        cam = np.maximum(np.tensordot(weights, activations[n], axes=(0, 0)), 0.0)
        channel = spec.instances[n] if n < len(spec.instances) else str(n)
        crop_z = spec.instance_slices[n] if n < len(spec.instance_slices) else 0
        slices.append(ExplanationSlice(channel, crop_z, upsample(cam, crop_yx),
                                       float(attention[n])))
    return tuple(slices)
