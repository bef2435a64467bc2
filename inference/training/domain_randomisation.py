"""Domain randomisation for segmentation training, in the spirit of SynthSeg (seeded).

A network trained on the look of our phantoms does not find the liver on real images. So the
training images are re-drawn for every patch from a *tissue map* (one code per voxel: air,
fat, muscle, liver, vessels, bowel, ribs …): each tissue gets an intensity — either the
physical one of a random phase (CT HU or MR arbitrary units, jittered) or, as in SynthSeg, a
fully random one — then texture, bias field, partial-volume blur at a random resolution and
slice thickness, noise, a random CT window, gamma, a reconstruction-circle cut-off and, now
and then, a thin slab repeated along z. The patch itself is cut through a random affine and
elastic deformation (size, shape and position of the anatomy vary). What the network is left
to learn is shape and context, which is what real abdomens share with phantoms.

``enrich_anatomy`` adds what the phantom lacks and real abdomens have in every slice:
subcutaneous fat, ribs, gas- and fluid-filled bowel, a stomach and the lung bases behind the
liver dome. Real images (a site's
studies) have no tissue map: ``sample_image_patch`` applies the geometric and intensity parts
to their normalised channels.

Intensities are normalised as serving does (``inference.preprocess.robust_scale``): the
1st–99.5th percentiles of the whole volume map to [0, 1]. Re-drawing the whole volume for every
patch would cost seconds, so the percentiles are taken from the noise-free tissue means
weighted by each tissue's voxel count in the case.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

__all__ = [
    "LABEL_OF_TISSUE",
    "TISSUES",
    "RandomisationConfig",
    "enrich_anatomy",
    "sample_image_patch",
    "sample_tissue_patch",
    "synthesise",
    "table_vector",
    "tissue_code",
]

FloatArray = npt.NDArray[np.float32]
CodeArray = npt.NDArray[np.uint8]

TISSUES = ("air", "fat", "muscle", "bone", "liver", "spleen", "kidney", "aorta", "portal",
           "hepatic_vein", "ivc", "tumour", "necrosis", "portal_in_liver",
           "hepatic_vein_in_liver", "subcutaneous_fat", "rib", "bowel_gas", "bowel_fluid",
           "bowel_wall", "stomach_wall", "lung")
"""Tissue codes (index = code). The first thirteen are the phantom's own tissues."""

_PHYSICAL_AS = {"portal_in_liver": "portal", "hepatic_vein_in_liver": "hepatic_vein",
                "subcutaneous_fat": "fat", "rib": "bone", "bowel_gas": "air",
                "bowel_fluid": "necrosis", "bowel_wall": "muscle", "stomach_wall": "muscle",
                "lung": "air"}
"""Added tissues take a phantom tissue's physical intensity (fluid looks like necrosis:
water density on CT, dark on T1); in random mode every code gets its own."""

_LIVER = ("liver", "portal_in_liver", "hepatic_vein_in_liver")
_TUMOUR = ("tumour", "necrosis")
LABEL_OF_TISSUE = np.array([1 if t in _LIVER else 2 if t in _TUMOUR else 0 for t in TISSUES],
                           dtype=np.int64)
"""Tissue code → training label (0 background, 1 liver, 2 tumour)."""

NOT_TUMOUR, ORGAN = 3, 4
"""Partial label codes: 3 = background or liver (tumour ruled out, organ unknown),
4 = liver or tumour (inside a drawn liver whose tumours were not outlined)."""


def tissue_code(name: str) -> int:
    """The code of a tissue name."""
    return TISSUES.index(name)


_GASES = np.array([TISSUES.index(t) for t in ("air", "bowel_gas", "lung")])
_SOLID = np.array([0.0 if t in ("air", "bowel_gas", "lung") else 1.0 for t in TISSUES],
                  dtype=np.float32)
"""Gas has no texture and no tissue variation (its value is the scanner's, not biology's)."""


def table_vector(table: Mapping[str, float]) -> FloatArray:
    """A phase's tissue → intensity table as a vector indexed by tissue code."""
    return np.array([float(table[_PHYSICAL_AS.get(t, t)]) for t in TISSUES], dtype=np.float32)


@dataclass(frozen=True)
class RandomisationConfig:
    """Probabilities and ranges of every randomisation (recorded in the bundle)."""

    random_intensity_probability: float = 0.4  # SynthSeg: every tissue a random intensity
    mean_jitter: float = 0.06  # physical mode: per-tissue shift (share of the contrast scale)
    scale: tuple[float, float] = (0.8, 1.25)  # isotropic zoom of the anatomy
    coarse_probability: float = 0.15  # a patch seen at about half resolution, as serving's
    coarse_scale: tuple[float, float] = (0.45, 0.6)  # coarse-to-fine first pass sees it
    anisotropy: float = 0.1  # per-axis zoom on top
    rotate_deg: tuple[float, float, float] = (15.0, 6.0, 6.0)  # about z, y, x
    elastic_mm: float = 5.0  # s.d. of the coarse displacement field
    texture: tuple[float, float] = (0.0, 0.06)  # smooth texture amplitude (contrast scale)
    tissue_sd: tuple[float, float] = (0.0, 0.05)  # per-tissue voxel s.d. (contrast scale)
    bias: tuple[float, float] = (0.0, 0.35)  # log-amplitude of the smooth bias field
    blur_mm: tuple[float, float] = (0.0, 1.2)  # extra Gaussian blur (partial volume)
    slice_thickness_mm: tuple[float, float] = (1.0, 8.0)
    pixel_mm: tuple[float, float] = (0.6, 3.0)
    noise: tuple[float, float] = (0.0, 0.12)  # s.d., share of the contrast scale (Rician MR)
    gamma: tuple[float, float] = (0.7, 1.5)
    window_probability: float = 0.15  # CT delivered already clipped to a window
    fov_circle_probability: float = 0.3  # outside the reconstruction circle: padding
    thin_slab_probability: float = 0.1  # a 1–3 slice study repeated along z (serving pads so)
    contrast: tuple[float, float] = (0.9, 1.1)  # final linear scale …
    brightness: float = 0.05  # … and shift of the normalised image


# --- anatomy -------------------------------------------------------------------------------

def enrich_anatomy(tissues: CodeArray, spacing_xyz: Sequence[float],
                   rng: np.random.Generator) -> CodeArray:
    """Add subcutaneous fat, ribs, bowel loops and a stomach to a phantom tissue map.

    Drawn only where the phantom has fat (never over an organ or the liver), so the labels
    do not change. ``tissues`` is ``[z, y, x]``, axial slices, +x patient left, +y posterior.
    """
    out = tissues.copy()
    spacing_zyx = np.array([float(s) for s in spacing_xyz[::-1]])
    _subcutaneous_fat(out, spacing_zyx, rng)
    fat = out == tissue_code("fat")
    _stomach(out, fat, spacing_zyx, rng)
    _bowel(out, out == tissue_code("fat"), spacing_zyx, rng)
    _lungs(out, spacing_zyx, rng)
    _ribs(out, spacing_zyx, rng)
    return out


def _mm_grid(shape: tuple[int, ...], spacing_zyx: npt.NDArray[np.float64]
             ) -> tuple[npt.NDArray[np.float64], ...]:
    """Open grids of voxel centres in mm, centred on the volume."""
    return tuple((np.arange(n) - (n - 1) / 2) * s
                 for n, s in zip(shape, spacing_zyx, strict=True))


def _subcutaneous_fat(out: CodeArray, spacing_zyx: npt.NDArray[np.float64],
                      rng: np.random.Generator) -> None:
    """A fat layer of uneven thickness outside the muscle wall (the phantom's wall is its
    skin); the phantom body is a cylinder along z, so one section serves every slice."""
    section = (out != tissue_code("air")).any(axis=0)
    if section.all() or not section.any():
        return
    distance = np.asarray(ndimage.distance_transform_edt(~section, sampling=spacing_zyx[1:]))
    uneven = 1.0 + _smooth_field((2, *section.shape), rng, 0.35, 6)[0]
    ring = ~section & (distance <= float(rng.uniform(3.0, 25.0)) * uneven)
    out[:, ring] = tissue_code("subcutaneous_fat")


def _blob(shape: tuple[int, ...], spacing_zyx: npt.NDArray[np.float64],
          centre_mm: npt.NDArray[np.float64], radii_mm: npt.NDArray[np.float64],
          rng: np.random.Generator) -> tuple[tuple[slice, ...], npt.NDArray[np.float64]]:
    """Normalised radius of an ellipsoid turned about z, in its bounding box only.

    ``centre_mm`` and ``radii_mm`` are (z, y, x), measured from the first voxel."""
    reach = float(radii_mm.max()) * 1.05
    box = tuple(slice(max(0, int((c - reach) / s)), max(0, min(n, int((c + reach) / s) + 2)))
                for c, s, n in zip(centre_mm, spacing_zyx, shape, strict=True))
    z, y, x = np.ogrid[box[0], box[1], box[2]]
    dz, dy, dx = (z * spacing_zyx[0] - centre_mm[0], y * spacing_zyx[1] - centre_mm[1],
                  x * spacing_zyx[2] - centre_mm[2])
    angle = float(rng.uniform(0, np.pi))
    u = np.cos(angle) * dx + np.sin(angle) * dy
    v = -np.sin(angle) * dx + np.cos(angle) * dy
    r = np.sqrt((u / radii_mm[2]) ** 2 + (v / radii_mm[1]) ** 2 + (dz / radii_mm[0]) ** 2)
    return box, np.asarray(r)


def _hollow(out: CodeArray, allowed: npt.NDArray[np.bool_], box: tuple[slice, ...],
            r: npt.NDArray[np.float64], gas_fraction: float, wall: int) -> None:
    """A walled viscus: wall rim, then gas above (anterior, −y) and fluid below."""
    region = allowed[box]
    inside = (r < 1.0) & region
    if not inside.any():
        return
    target = out[box]
    target[inside] = wall
    lumen = (r < 0.8) & region
    ys = np.nonzero(lumen)[1]
    if ys.size:
        level = np.quantile(ys, gas_fraction) if gas_fraction > 0 else -1
        rows = np.arange(target.shape[1])[None, :, None]
        target[lumen & (rows <= level)] = tissue_code("bowel_gas")
        target[lumen & (rows > level)] = tissue_code("bowel_fluid")
    out[box] = target


def _stomach(out: CodeArray, fat: npt.NDArray[np.bool_], spacing_zyx: npt.NDArray[np.float64],
             rng: np.random.Generator) -> None:
    """Left upper quadrant, anterior: where a real stomach abuts the left liver lobe."""
    if rng.random() < 0.2:
        return
    extent = np.array(out.shape) * spacing_zyx
    centre = extent / 2 + np.array([rng.uniform(0, 0.25) * extent[0],
                                    rng.uniform(-45, -10), rng.uniform(30, 80)])
    radii = np.array([rng.uniform(30, 55), rng.uniform(25, 45), rng.uniform(30, 50)])
    box, r = _blob(out.shape, spacing_zyx, centre, radii, rng)
    _hollow(out, fat, box, r, float(rng.uniform(0.0, 0.7)), tissue_code("stomach_wall"))


def _bowel(out: CodeArray, fat: npt.NDArray[np.bool_], spacing_zyx: npt.NDArray[np.float64],
           rng: np.random.Generator) -> None:
    """Loops of bowel in the abdominal fat, some gas-filled (colon), some fluid-filled."""
    candidates = np.argwhere(fat[:, ::4, ::4]) * np.array([1, 4, 4])
    if len(candidates) == 0:
        return
    for _ in range(int(rng.integers(6, 22))):
        centre = candidates[rng.integers(len(candidates))] * spacing_zyx
        radius = float(rng.uniform(8, 28))
        radii = np.array([radius * rng.uniform(0.8, 2.5), radius,
                          radius * rng.uniform(0.7, 1.4)])
        box, r = _blob(out.shape, spacing_zyx, centre, radii, rng)
        gas = float(rng.choice([0.0, rng.uniform(0.3, 1.0)]))
        _hollow(out, fat, box, r, gas, tissue_code("bowel_wall"))


def _lungs(out: CodeArray, spacing_zyx: npt.NDArray[np.float64],
           rng: np.random.Generator) -> None:
    """Lung bases: air behind and beside the liver dome in the upper slices (the costophrenic
    recesses), the darkest large thing on a real upper-abdominal slice."""
    if rng.random() < 0.25:
        return
    body = (out != tissue_code("air")).any(axis=0)
    ys, xs = np.nonzero(body)
    if ys.size == 0:
        return
    extent = np.array(out.shape) * spacing_zyx
    cy, cx = ys.mean() * spacing_zyx[1], xs.mean() * spacing_zyx[2]
    ry = (ys.max() - ys.min()) * spacing_zyx[1] / 2
    rx = (xs.max() - xs.min()) * spacing_zyx[2] / 2
    base = extent[0] - float(rng.uniform(15, 100))  # where the lungs end below
    room = out == tissue_code("fat")  # inside the wall, never over an organ
    for side in (-1.0, 1.0):
        radii = np.array([rng.uniform(60, 130), rng.uniform(0.4, 0.6) * ry,
                          rng.uniform(0.3, 0.45) * rx])
        centre = np.array([base + radii[0], cy + ry * rng.uniform(0.1, 0.4),
                           cx + side * rx * rng.uniform(0.35, 0.55)])
        box, r = _blob(out.shape, spacing_zyx, centre, radii, rng)
        target = out[box]
        target[(r < 1.0) & room[box]] = tissue_code("lung")
        out[box] = target


def _ribs(out: CodeArray, spacing_zyx: npt.NDArray[np.float64],
          rng: np.random.Generator) -> None:
    """Oval rib sections along the wall, in bands along z (ribs run obliquely)."""
    if rng.random() < 0.15:
        return
    z_mm, y_mm, x_mm = _mm_grid(out.shape, spacing_zyx)
    body = (out != tissue_code("air")).any(axis=0)
    ys, xs = np.nonzero(body)
    if ys.size == 0:
        return
    cy, cx = y_mm[ys].mean(), x_mm[xs].mean()
    ry, rx = (y_mm[ys].max() - y_mm[ys].min()) / 2, (x_mm[xs].max() - x_mm[xs].min()) / 2
    depth = float(rng.uniform(6.0, 18.0))
    period, thickness = float(rng.uniform(22, 32)), float(rng.uniform(7, 12))
    top = z_mm.max() - float(rng.uniform(0, 40))
    bottom = top - float(rng.uniform(90, 200))
    phase = float(rng.uniform(0, period))
    rib = tissue_code("rib")
    for k, z in enumerate(z_mm):
        if not bottom <= z <= top or (z + phase) % period > thickness:
            continue
        offset = (k % 3) * 0.08
        for angle in np.arange(-2.7 + offset, 2.7, 0.38):  # not across the back (spine side)
            if abs(angle) < 0.45:  # not over the sternum / anterior midline
                continue
            ay = cy - (ry - depth) * np.cos(angle)
            ax = cx + (rx - depth) * np.sin(angle)
            yy = (y_mm[:, None] - ay) / 5.5
            xx = (x_mm[None, :] - ax) / 8.0
            spot = (yy**2 + xx**2 < 1.0) & (out[k] != tissue_code("air"))
            spot &= ~np.isin(out[k], (tissue_code("liver"), tissue_code("tumour"),
                                      tissue_code("necrosis"), tissue_code("portal_in_liver"),
                                      tissue_code("hepatic_vein_in_liver")))
            out[k][spot] = rib


# --- geometry -------------------------------------------------------------------------------

def _rotation(angles_deg: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Rotation in (z, y, x) index space from angles about z, y and x."""
    a, b, c = np.deg2rad(angles_deg)
    about_z = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    about_y = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    about_x = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    out: npt.NDArray[np.float64] = about_z @ about_y @ about_x
    return out


def _coordinates(shape: tuple[int, ...], centre: npt.NDArray[np.float64],
                 patch: tuple[int, int, int], spacing_zyx: npt.NDArray[np.float64],
                 config: RandomisationConfig, rng: np.random.Generator
                 ) -> npt.NDArray[np.float64]:
    """Source voxel coordinates ``[3, pz, py, px]`` of a randomly deformed patch.

    The affine part is separable (a sum of three broadcast axes) and the elastic field is
    upsampled by interpolation matrices, both far cheaper than resampling a dense grid.
    """
    sizes = config.coarse_scale if rng.random() < config.coarse_probability else config.scale
    zoom = rng.uniform(*sizes) * rng.uniform(1 - config.anisotropy, 1 + config.anisotropy, 3)
    turn = _rotation(rng.uniform(-1, 1, 3) * np.array(config.rotate_deg)) / zoom[None, :]
    axes = [(np.arange(p) - (p - 1) / 2) * s for p, s in zip(patch, spacing_zyx, strict=True)]
    out = np.empty((3, *patch), np.float64)
    for i in range(3):
        out[i] = (turn[i, 0] * axes[0][:, None, None] + turn[i, 1] * axes[1][None, :, None]
                  + turn[i, 2] * axes[2][None, None, :])
    if config.elastic_mm > 0:
        coarse = rng.normal(0, config.elastic_mm, (3, 3, 5, 5))
        out += _upsample(coarse, patch)
    out /= spacing_zyx[:, None, None, None]
    out += centre[:, None, None, None]
    return out


def _upsample(coarse: npt.NDArray[np.float64], shape: tuple[int, int, int]
              ) -> npt.NDArray[np.float64]:
    """Linear interpolation of ``[k, a, b, c]`` control values onto ``shape`` (corners kept)."""
    out = coarse
    for axis, size in enumerate(shape):
        n = coarse.shape[axis + 1]
        position = np.linspace(0, n - 1, size)
        lower = np.minimum(np.floor(position).astype(int), n - 2)
        weight = position - lower
        matrix = np.zeros((size, n))
        matrix[np.arange(size), lower] = 1 - weight
        matrix[np.arange(size), lower + 1] = weight
        out = np.moveaxis(np.tensordot(out, matrix, axes=([axis + 1], [1])), -1, axis + 1)
    return out


def _centre(pools: Sequence[npt.NDArray[np.int64]], weights: Sequence[float],
            patch: tuple[int, int, int], rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """A patch centre: a voxel of a pool drawn by weight (empty pools skipped), jittered."""
    usable = [(p, w) for p, w in zip(pools, weights, strict=True) if len(p) and w > 0]
    chances = np.array([w for _, w in usable], dtype=np.float64)
    pool = usable[int(rng.choice(len(usable), p=chances / chances.sum()))][0]
    centre = pool[rng.integers(len(pool))].astype(np.float64)
    jitter: npt.NDArray[np.float64] = rng.uniform(-0.25, 0.25, 3) * np.array(patch)
    return np.asarray(centre + jitter, np.float64)


def sample_tissue_patch(tissues: CodeArray, pools: Sequence[npt.NDArray[np.int64]],
                        weights: Sequence[float], patch: tuple[int, int, int],
                        spacing_xyz: Sequence[float], config: RandomisationConfig,
                        rng: np.random.Generator) -> tuple[CodeArray, npt.NDArray[np.float64]]:
    """A deformed patch of the tissue map (nearest neighbour) and its source coordinates."""
    spacing_zyx = np.array([float(s) for s in spacing_xyz[::-1]])
    centre = _centre(pools, weights, patch, rng)
    coords = _coordinates(tissues.shape, centre, patch, spacing_zyx, config, rng)
    codes = ndimage.map_coordinates(tissues, coords, order=0, mode="nearest")
    return np.asarray(codes, dtype=np.uint8), coords


def sample_image_patch(image: FloatArray, labels: npt.NDArray[np.int64],
                       pools: Sequence[npt.NDArray[np.int64]], weights: Sequence[float],
                       patch: tuple[int, int, int], spacing_xyz: Sequence[float],
                       config: RandomisationConfig, rng: np.random.Generator
                       ) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """A deformed patch of real, normalised channels ``[C, z, y, x]`` and of their labels,
    with the intensity randomisations that apply to a real image."""
    spacing_zyx = np.array([float(s) for s in spacing_xyz[::-1]])
    centre = _centre(pools, weights, patch, rng)
    coords = _coordinates(labels.shape, centre, patch, spacing_zyx, config, rng)
    channels = [ndimage.map_coordinates(ch, coords, order=1, mode="nearest") for ch in image]
    out_labels = np.asarray(ndimage.map_coordinates(labels, coords, order=0, mode="nearest"),
                            dtype=np.int64)
    out = np.stack([_real_intensity(np.asarray(ch, np.float32), spacing_zyx, config, rng)
                    for ch in channels])
    return out.astype(np.float32), out_labels


def _real_intensity(x: FloatArray, spacing_zyx: npt.NDArray[np.float64],
                    config: RandomisationConfig, rng: np.random.Generator) -> FloatArray:
    x = x * np.exp(_smooth_field(x.shape, rng, float(rng.uniform(*config.bias)) / 2, 4))
    sigma = float(rng.uniform(*config.blur_mm)) / spacing_zyx
    if sigma.max() > 0.2:
        x = ndimage.gaussian_filter(x, sigma)
    x = x + rng.normal(0, rng.uniform(*config.noise) / 2, x.shape).astype(np.float32)
    return _finish(x, config, rng)


# --- intensities ----------------------------------------------------------------------------

def _smooth_field(shape: tuple[int, ...], rng: np.random.Generator, amplitude: float,
                  cells: int) -> FloatArray:
    """A smooth random field (coarse normal noise, linearly interpolated)."""
    if amplitude <= 0:
        return np.zeros(shape, np.float32)
    coarse = rng.normal(0, amplitude, (1, max(2, cells // 2), cells, cells))
    return np.asarray(_upsample(coarse, (shape[0], shape[1], shape[2]))[0], np.float32)


def _weighted_percentiles(means: FloatArray, counts: npt.NDArray[np.int64],
                          quantiles: Sequence[float]) -> list[float]:
    order = np.argsort(means)
    cumulative = np.cumsum(counts[order]) / max(1, int(counts.sum()))
    return [float(means[order][min(int(np.searchsorted(cumulative, q)), len(order) - 1)])
            for q in quantiles]


def synthesise(codes: CodeArray, coords: npt.NDArray[np.float64], table: FloatArray | None,
               modality: str, counts: npt.NDArray[np.int64], volume_shape: tuple[int, ...],
               spacing_xyz: Sequence[float], config: RandomisationConfig,
               rng: np.random.Generator) -> FloatArray:
    """One normalised image channel drawn from a tissue patch.

    ``table`` holds the physical intensity per tissue code of one phase (``None``: random
    intensities, SynthSeg's mode); ``counts`` the case's voxels per tissue code, from which the
    serving normalisation's percentiles are estimated; ``coords`` the patch's source
    coordinates (for the reconstruction circle).
    """
    spacing_zyx = np.array([float(s) for s in spacing_xyz[::-1]])
    means, contrast, ct = _means(table, modality, counts, config, rng)
    image = means[codes]
    sd = rng.uniform(*config.tissue_sd, len(TISSUES)).astype(np.float32) * np.float32(contrast)
    sd[_GASES] = 0.0
    image = image + sd[codes] * rng.standard_normal(codes.shape, dtype=np.float32)
    texture = _smooth_field(codes.shape, rng, float(rng.uniform(*config.texture)), 12)
    image = image + np.float32(contrast) * texture * _SOLID[codes]
    if not ct:  # coil sensitivity scales the signal, not an offset
        image = image * np.exp(_smooth_field(codes.shape, rng, float(rng.uniform(*config.bias)),
                                             4))
    image = ndimage.gaussian_filter(image, _resolution_sigma(spacing_zyx, config, rng))
    clip = _window(means, ct, config, rng)
    if clip is not None:
        image = np.clip(image, *clip)
        means = np.clip(means, *clip)
    image = _noise(image, contrast * float(rng.uniform(*config.noise)), ct, rng)
    lo, hi = _weighted_percentiles(means, counts, (0.01, 0.995))
    image = (image - np.float32(lo)) / np.float32(hi - lo if hi > lo else 1.0)
    if rng.random() < config.fov_circle_probability:
        image = _outside_circle(image, coords, volume_shape, spacing_zyx, rng)
    return _finish(np.asarray(image, np.float32), config, rng)


MIN_LESION_CONTRAST = 0.12
"""Random mode: a tumour at least this far from the liver (of a 0–1 range), or the patch
would teach that an invisible tumour is liver."""


def _means(table: FloatArray | None, modality: str, counts: npt.NDArray[np.int64],
           config: RandomisationConfig, rng: np.random.Generator
           ) -> tuple[FloatArray, float, bool]:
    """Per-tissue means, their contrast scale, and whether they behave as CT.

    The contrast scale is the liver–fat difference of the table (random mode: half the
    range): jitter, texture and noise are sized by it, not by the air-to-bone span, which on
    CT is seven times larger and would drown the soft-tissue contrasts (liver 60–110 HU,
    fat −100, tumour 30 HU off the liver).
    """
    if table is None:
        means = rng.uniform(0, 1, len(TISSUES)).astype(np.float32)
        if rng.random() < 0.5:  # air stays the darkest, as on every real image
            means[tissue_code("air")] = 0.0
            means[tissue_code("bowel_gas")] = float(rng.uniform(0, 0.1))
        liver = float(means[tissue_code("liver")])
        for lesion in (tissue_code("tumour"), tissue_code("necrosis")):
            if abs(float(means[lesion]) - liver) < MIN_LESION_CONTRAST:  # a visible lesion
                side = 1.0 if liver < 0.5 else -1.0
                means[lesion] = liver + side * float(rng.uniform(MIN_LESION_CONTRAST, 0.4))
        return means, 0.5, bool(rng.random() < 0.5)
    means = table.astype(np.float32).copy()
    contrast = max(abs(float(means[tissue_code("liver")] - means[tissue_code("fat")])), 1e-3)
    jitter = rng.normal(0, config.mean_jitter * contrast, len(TISSUES)).astype(np.float32)
    jitter[_GASES] = 0.0
    return means + jitter, contrast, modality == "CT"


def _resolution_sigma(spacing_zyx: npt.NDArray[np.float64], config: RandomisationConfig,
                      rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """Blur (voxels) for a random acquisition resolution and slice thickness on this grid."""
    thickness = float(rng.uniform(*config.slice_thickness_mm))
    pixel = float(rng.uniform(*config.pixel_mm))
    extra = float(rng.uniform(*config.blur_mm))
    acquired = np.array([thickness, pixel, pixel])
    fwhm = np.sqrt(np.maximum(acquired**2 - spacing_zyx**2, 0.0))
    sigma_mm = np.sqrt((fwhm / 2.355) ** 2 + extra**2)
    return np.asarray(sigma_mm / spacing_zyx)


def _window(means: FloatArray, ct: bool, config: RandomisationConfig,
            rng: np.random.Generator) -> tuple[float, float] | None:
    """A CT delivered clipped to a display window (e.g. W400 L50, or −1024…+3071)."""
    if not ct or rng.random() >= config.window_probability:
        return None
    lo, hi = float(means.min()), float(means.max())
    centre = float(rng.uniform(lo + 0.4 * (hi - lo), lo + 0.6 * (hi - lo)))
    width = float(rng.uniform(0.3, 1.0)) * (hi - lo)
    return centre - width / 2, centre + width / 2


def _noise(image: FloatArray, sigma: float, ct: bool, rng: np.random.Generator) -> FloatArray:
    if sigma <= 0:
        return image
    scale = np.float32(sigma)
    if ct:
        return image + scale * rng.standard_normal(image.shape, dtype=np.float32)
    real = image + scale * rng.standard_normal(image.shape, dtype=np.float32)
    imag = scale * rng.standard_normal(image.shape, dtype=np.float32)
    return np.asarray(np.sqrt(real * real + imag * imag), np.float32)


def _outside_circle(image: FloatArray, coords: npt.NDArray[np.float64],
                    volume_shape: tuple[int, ...], spacing_zyx: npt.NDArray[np.float64],
                    rng: np.random.Generator) -> FloatArray:
    """CT pixel padding outside the reconstruction circle (serving clips it to −0.5)."""
    centre = (np.array(volume_shape[1:]) - 1) / 2
    dy = (coords[1] - centre[0]) * spacing_zyx[1]
    dx = (coords[2] - centre[1]) * spacing_zyx[2]
    radius = float(rng.uniform(0.42, 0.55)) * float(np.min(np.array(volume_shape[1:])
                                                             * spacing_zyx[1:]))
    return np.where(dy**2 + dx**2 > radius**2, np.float32(-0.5), image).astype(np.float32)


def _finish(image: FloatArray, config: RandomisationConfig,
            rng: np.random.Generator) -> FloatArray:
    """Gamma, contrast and brightness on the normalised image, clipped as serving clips."""
    gamma = np.float32(np.exp(rng.uniform(np.log(config.gamma[0]), np.log(config.gamma[1]))))
    image = np.asarray(image, np.float32)
    positive = image > 0
    image[positive] = image[positive] ** gamma
    image = image * np.float32(rng.uniform(*config.contrast)) + np.float32(
        rng.uniform(-config.brightness, config.brightness))
    return np.clip(image, -0.5, 1.5).astype(np.float32)


def thin_slab(image: FloatArray, labels: npt.NDArray[np.int64],
              rng: np.random.Generator) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """A study of one to three slices, repeated along z as serving pads it (edge mode)."""
    depth = image.shape[1]
    keep = int(rng.integers(1, 3))
    start = int(rng.integers(0, depth - keep + 1))
    index = np.clip(np.round(np.linspace(start - 0.49, start + keep - 0.51, depth)),
                    start, start + keep - 1).astype(np.int64)
    return image[:, index], labels[index]
