"""Render the opt-in sequences, each on its own grid, with physical noise.

The historical renderer (``anatomy._render``) stays untouched for default phantoms; this
one is used as soon as a spec asks for anything new. Series may sit on different grids
(FOV, matrix, slice thickness and positions) and the patient may move between them: the
image is rendered on the arterial grid, shifted by the motion, blurred to the target
resolution and sampled there, and only then does noise go in, as in a scanner.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from dicom_io.synthetic import contrast, sequences

if TYPE_CHECKING:
    from dicom_io.synthetic.anatomy import Mask, PhantomSpec

Array = npt.NDArray[np.float32]
Vec3 = tuple[float, float, float]
_NOISE, _GEOMETRY = 2, 6
_DRAWING_NEUTRAL = {"modality", "rows", "columns", "slices", "pixel_spacing_mm",
                    "slice_spacing_mm", "lesion_count", "lesion_diameter_mm",
                    "necrosis_probability", "vendor", "packaging", "ignored_series",
                    "sequences"}
_ARTERIAL = {"AP_EARLY", "AP", "CT_AP"}
_LATE = {"PVP", "DP", "CT_PVP", "CT_DP"}
_DWI_B = (50, 400, 800)


@dataclass(frozen=True)
class SeriesGeometry:
    """A series' own grid: first voxel (x, y, z mm), voxel size (x, y, z), shape (z, y, x).

    ``shift_mm`` is the rigid patient motion at this series relative to the arterial
    series, in patient coordinates: anatomy at p on the arterial grid is at p + shift.
    """

    origin: Vec3
    spacing: Vec3
    shape: tuple[int, int, int]
    shift_mm: Vec3 = (0.0, 0.0, 0.0)


def is_default_drawing(spec: PhantomSpec) -> bool:
    """Only the historical knobs are set, so the historical renderer must draw it."""
    from dicom_io.synthetic.anatomy import PhantomSpec

    default = PhantomSpec()
    legacy = set(contrast.MR_PHASES) | set(contrast.CT_PHASES)
    if spec.sequences is not None and not set(spec.sequences) <= legacy:
        return False
    return all(getattr(spec, f.name) == getattr(default, f.name) for f in fields(spec)
               if f.name not in _DRAWING_NEUTRAL)


def render_all(tissues: dict[str, Mask], texture: Array, bias: Array,
               spacing: Vec3, origin: Vec3, spec: PhantomSpec,
               seed: int) -> tuple[dict[str, Array], dict[str, SeriesGeometry]]:
    """Every requested series (noise and motion from streams of their own)."""
    tp = spec.course.index if spec.course else 0
    geometry = series_geometry(spec, texture.shape, spacing, origin,  # type: ignore[arg-type]
                               np.random.default_rng([seed, _GEOMETRY, tp]))
    rng = np.random.default_rng([seed, _NOISE, tp])
    ref = SeriesGeometry(origin, spacing, texture.shape)  # type: ignore[arg-type]
    out: dict[str, Array] = {}
    diffusion = [p for p in spec.phases if p.startswith("DWI_") or p == "ADC"]
    for phase in spec.phases:
        if phase in diffusion:
            continue
        clean = _clean(tissues, phase, spec, texture, bias)
        clean = _resample(clean, ref, geometry.get(phase), contrast.intensities(phase)["air"])
        out[phase] = _noisy(clean, spec, rng, phase)
    if diffusion:
        out.update(_diffusion(tissues, spec, texture, bias, ref,
                              geometry.get(diffusion[0]), diffusion, rng))
    return out, geometry


def _clean(tissues: dict[str, Mask], phase: str, spec: PhantomSpec, texture: Array,
           bias: Array) -> Array:
    values = _values(phase, spec)
    image = np.zeros(texture.shape, np.float32)
    for name, mask in tissues.items():
        image[mask] = values[name]
    image = ndimage.gaussian_filter(image * (1.0 + texture), sigma=(0.4, 0.7, 0.7))
    return np.asarray(image * bias if spec.modality == "MR" else image, np.float32)


def _values(phase: str, spec: PhantomSpec) -> dict[str, float]:
    """Tissue table with the tumour's enhancement strength and wash-out applied."""
    values = contrast.intensities(phase)
    if phase in _ARTERIAL and spec.tumour_enhancement != 1.0:
        pre = contrast.intensities("PRE" if spec.modality == "MR" else "CT_NC")
        for t in ("tumour", "mosaic", "pvtt"):
            values[t] = pre[t] + spec.tumour_enhancement * (values[t] - pre[t])
    if phase in _LATE and not spec.washout:
        for t in ("tumour", "mosaic"):
            values[t] = values["liver"] * 1.04
    if phase == "ADC" and spec.tumour_adc is not None:
        values["tumour"] = float(spec.tumour_adc)  # the cohort's planted diffusion signal
    return values


def _noisy(clean: Array, spec: PhantomSpec, rng: np.random.Generator, phase: str) -> Array:
    if spec.modality == "MR":
        sigma = contrast.noise_sigma("MR")
        real = clean + rng.normal(0, sigma, clean.shape).astype(np.float32)
        imag = rng.normal(0, sigma, clean.shape).astype(np.float32)
        return np.asarray(np.sqrt(real**2 + imag**2), np.float32)
    sigma = contrast.noise_sigma("CT")
    if spec.ct_tube_current_ma:  # quantum noise: σ ∝ 1/√(mAs)
        sigma *= float(np.sqrt(200.0 / spec.ct_tube_current_ma))
    return np.asarray(clean + rng.normal(0, sigma, clean.shape), np.float32)


def _diffusion(tissues: dict[str, Mask], spec: PhantomSpec, texture: Array, bias: Array,
               ref: SeriesGeometry, geo: SeriesGeometry | None, wanted: list[str],
               rng: np.random.Generator) -> dict[str, Array]:
    """S(b) = S0·exp(−b·ADC) with Rician noise; the ADC map is fitted from b50 and b800."""
    s0 = _resample(_clean(tissues, "DWI_S0", spec, texture, bias), ref, geo, 0.0)
    adc = _resample(_clean(tissues, "ADC", spec, np.zeros_like(texture),
                           np.ones_like(bias)), ref, geo, 0.0)
    images: dict[int, Array] = {}
    for b in _DWI_B:
        clean = np.asarray(s0 * np.exp(-b * adc * 1e-6), np.float32)
        real = clean + rng.normal(0, 8.0, clean.shape).astype(np.float32)
        imag = rng.normal(0, 8.0, clean.shape).astype(np.float32)
        images[b] = np.asarray(np.sqrt(real**2 + imag**2), np.float32)
    out = {f"DWI_B{b}": images[b] for b in _DWI_B if f"DWI_B{b}" in wanted}
    if "ADC" in wanted:
        ratio = np.maximum(images[50], 1.0) / np.maximum(images[800], 1.0)
        fitted = np.clip(np.log(ratio) / 750.0 * 1e6, 0.0, 4000.0)
        out["ADC"] = np.asarray(np.where(images[50] > 40.0, fitted, 0.0), np.float32)
    return out


def series_geometry(spec: PhantomSpec, shape: tuple[int, int, int], spacing: Vec3,
                    origin: Vec3, rng: np.random.Generator) -> dict[str, SeriesGeometry]:
    """Per-series grids and motion; empty when every series is on the arterial grid."""
    if spec.coregistered and spec.motion_mm == 0:
        return {}
    out: dict[str, SeriesGeometry] = {}
    shifts: dict[str, Vec3] = {}
    for phase in spec.phases:
        family = sequences.sequence(phase).family
        key = phase if family in ("dynamic", "hbp", "ct") else family
        if key not in shifts:
            move = rng.uniform(-1, 1, 3) * spec.motion_mm * np.array([0.3, 0.3, 1.0])
            shifts[key] = (0.0, 0.0, 0.0) if phase in ("AP", "CT_AP") else (
                float(move[0]), float(move[1]), float(move[2]))
        grid = (_own_grid(phase, family, shape, spacing, origin) if not spec.coregistered
                else (origin, spacing, shape))
        out[phase] = SeriesGeometry(grid[0], grid[1], grid[2], shifts[key])
    return out


def _own_grid(phase: str, family: str, shape: tuple[int, int, int], spacing: Vec3,
              origin: Vec3) -> tuple[Vec3, Vec3, tuple[int, int, int]]:
    """The series' native FOV/matrix/slices, centred like the arterial grid."""
    native = sequences.NATIVE[family]
    pixel, thick, pe = (spacing[0], spacing[2], 1.0) if native is None else native
    z_offset = 0.0
    if phase == "CT_NC":
        thick = 5.0
    elif phase == "CT_PVP":
        pixel = spacing[0] * 0.9  # a smaller reconstruction FOV, same matrix
    elif phase in ("HBP", "CT_DP"):
        z_offset = spacing[2] / 2  # a new breath-hold restarts the slab half a slice off
    centre = [origin[d] + (shape[2 - d] - 1) * spacing[d] / 2 for d in range(3)]
    fov = (shape[2] * spacing[0], shape[1] * spacing[1] * pe, shape[0] * spacing[2])
    dims = (max(2, round(fov[2] / thick)), round(fov[1] / pixel),
            round(fov[0] / pixel))
    new_spacing = (pixel, pixel, thick)
    new_origin = tuple(centre[d] - (dims[2 - d] - 1) * new_spacing[d] / 2 for d in range(3))
    new_origin = (new_origin[0], new_origin[1], new_origin[2] + z_offset)
    return new_origin, new_spacing, dims  # type: ignore[return-value]


def _resample(image: Array, ref: SeriesGeometry, geo: SeriesGeometry | None,
              air: float) -> Array:
    """Sample the arterial-grid image on ``geo`` with the patient shifted by its motion."""
    if geo is None:
        return image
    blur = [max(0.0, 0.4 * (geo.spacing[2 - d] / ref.spacing[2 - d] - 1.0)) for d in range(3)]
    if any(b > 0 for b in blur):
        image = ndimage.gaussian_filter(image, sigma=blur)
    axes = [ref.origin[d] * 0 + geo.origin[d] + geo.spacing[d] * np.arange(geo.shape[2 - d])
            - geo.shift_mm[d] for d in range(3)]
    index = [(axes[d] - ref.origin[d]) / ref.spacing[d] for d in range(3)]
    zz, yy, xx = np.meshgrid(index[2], index[1], index[0], indexing="ij", sparse=False)
    out = ndimage.map_coordinates(image, [zz, yy, xx], order=1, mode="constant", cval=air)
    return np.asarray(out, np.float32)
