"""Opt-in lesion findings (issue 3) and how lesions change between time points.

Each feature draws from its own seeded stream (``_stream``), never from the generator's
default one, so switching a feature on leaves every other draw (and the default phantom
the shipped model was trained on) exactly as it was. Streams are keyed by purpose so that
a patient's baseline anatomy, lesions and findings are the same at every time point.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from dicom_io.synthetic import anatomy

if TYPE_CHECKING:
    from dicom_io.synthetic.anatomy import Grid, LesionCourse, Mask, PhantomSpec

Labels = npt.NDArray[np.uint16]
_PLANNED, _SHAPE, _FINDINGS, _TEXTURE, _EVOLVE = 1, 3, 4, 5, 7


def _stream(seed: int, purpose: int, index: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, purpose, index])


def _spacing(grid: Grid) -> tuple[float, float, float]:
    """(z, y, x) voxel size in mm, read back from the grid axes."""
    z, y, x = grid
    return (float(z[1, 0, 0] - z[0, 0, 0]) if z.shape[0] > 1 else 1.0,
            float(y[0, 1, 0] - y[0, 0, 0]), float(x[0, 0, 1] - x[0, 0, 0]))


def planned_lesions(grid: Grid, liver_core: Mask, spec: PhantomSpec,
                    seed: int) -> tuple[Labels, Mask]:
    """Lesions of the planned diameters, each placed where the liver has room for it.

    A cohort row fixes the tumour number and size, so placement uses the distance to the
    liver edge instead of rejection sampling; a lesion too big for this liver is shrunk to
    fit (truth.json then records the smaller, measured size).
    """
    rng = _stream(seed, _PLANNED)
    labels = np.zeros(liver_core.shape, np.uint16)
    necrosis = np.zeros(liver_core.shape, bool)
    sampling = _spacing(grid)
    free = ndimage.distance_transform_edt(liver_core, sampling=sampling)
    for diameter in spec.lesion_plan or ():
        placed = _place(grid, free, diameter / 2, rng)
        if placed is None:
            continue
        blob, centre, radii = placed
        labels[blob] = labels.max() + 1
        fraction = spec.necrotic_fraction or 0.0
        if fraction > 0.02:
            core = anatomy._ellipsoid(grid, centre, tuple(r * fraction ** (1 / 3)  # type: ignore[arg-type]
                                                          for r in radii)) < 1.0
            necrosis |= core & blob
    return labels, necrosis


def _free_space(grid: Grid, room: Mask, labels: Labels) -> npt.NDArray[np.float64]:
    """Distance (mm) to the edge of ``room`` and to within 4 mm of any existing lesion."""
    sampling = _spacing(grid)
    free = np.asarray(ndimage.distance_transform_edt(room, sampling=sampling), np.float64)
    if labels.any():
        free = np.minimum(free, ndimage.distance_transform_edt(labels == 0, sampling=sampling)
                          - 4.0)
    return free


def _place(grid: Grid, free: npt.NDArray[np.float64], radius: float, rng: np.random.Generator,
           ) -> tuple[Mask, tuple[float, float, float], tuple[float, float, float]] | None:
    """A lesion of ``radius`` where ``free`` has room; ``free`` is updated in place.

    Placed lesions are excluded analytically (distance to their centre minus radius),
    which is exact for the bounding sphere and far cheaper than a new distance transform.
    """
    radius = min(radius, float(free.max()) - 0.5)
    if radius < 2.5:
        return None
    options = np.argwhere(free >= radius)
    k, j, i = options[rng.integers(len(options))]
    z, y, x = grid
    centre = (float(x[0, 0, i]), float(y[0, j, 0]), float(z[k, 0, 0]))
    radii = (radius, radius * float(rng.uniform(0.8, 1.0)), radius * float(rng.uniform(0.8, 1.0)))
    blob = anatomy._ellipsoid(grid, centre, radii, float(rng.uniform(0, np.pi))) < 1.0
    z, y, x = grid
    dist = np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2)
    np.minimum(free, dist - radius - 4.0, out=free)
    return blob, centre, radii


def shape_and_evolve(grid: Grid, liver_core: Mask, labels: Labels, necrosis: Mask,
                     spec: PhantomSpec, seed: int) -> tuple[Labels, Mask]:
    """Margin, satellites (baseline findings) then the follow-up course, if any."""
    if spec.margin == "infiltrative":
        labels = _infiltrate(labels, liver_core, _stream(seed, _SHAPE))
    if spec.satellites:
        labels = _satellites(grid, labels, liver_core, spec.satellites, _stream(seed, _SHAPE, 1))
    necrosis = necrosis & (labels > 0)
    if spec.course is not None:
        labels, necrosis = evolve(grid, liver_core, labels, necrosis, spec.course, seed)
    return labels, necrosis


def _infiltrate(labels: Labels, liver_core: Mask, rng: np.random.Generator) -> Labels:
    """Irregular, finger-like margins: grow into and retreat from a noisy shell."""
    noise = anatomy._smooth_noise(labels.shape, rng, scale=2, amplitude=1.0)
    out = labels.copy()
    for index in range(1, int(labels.max()) + 1):
        mask = labels == index
        shell = ndimage.binary_dilation(mask, iterations=3) & ~mask & liver_core & (out == 0)
        edge = mask & ~ndimage.binary_erosion(mask, iterations=2)
        out[shell & (noise > 0.35)] = index
        out[edge & (noise < -0.45)] = 0
    return out


def _satellites(grid: Grid, labels: Labels, liver_core: Mask, count: int,
                rng: np.random.Generator) -> Labels:
    """Small (5–9 mm) daughter nodules within 2 cm of the largest lesion."""
    if not labels.any():
        return labels
    sizes = np.bincount(labels.ravel())[1:]
    main = labels == int(np.argmax(sizes)) + 1
    near = ndimage.distance_transform_edt(~main, sampling=_spacing(grid))
    free = np.where((near > 6) & (near < 20), _free_space(grid, liver_core, labels), 0.0)
    out = labels.copy()
    for _ in range(count):
        placed = _place(grid, free, float(rng.uniform(2.5, 4.5)), rng)
        if placed is not None:
            out[placed[0] & (out == 0)] = out.max() + 1
    return out


def evolve(grid: Grid, liver_core: Mask, labels: Labels, necrosis: Mask,
           course: LesionCourse, seed: int) -> tuple[Labels, Mask]:
    """Scale each lesion about its centroid and keep an eccentric viable part of it.

    The viable (enhancing) part is a ball of diameter ``viable_fraction`` × lesion
    diameter set against the lesion edge, so its longest axial diameter (what mRECIST
    measures) follows the plan; the rest is necrosis (or lipiodol after TACE on CT).
    """
    rng = _stream(seed, _EVOLVE, course.index)
    out = np.zeros_like(labels)
    dead = np.zeros_like(necrosis)
    sampling = _spacing(grid)
    for index in range(1, int(labels.max()) + 1):
        k = index - 1
        scale = course.diameter_scale[k] if k < len(course.diameter_scale) else 1.0
        viable = course.viable_fraction[k] if k < len(course.viable_fraction) else 1.0
        mask = _scaled(labels == index, scale) & (liver_core | (labels == index))
        if not mask.any():  # a scar voxel keeps the lesion's index for the follow-up truth
            mask = np.zeros_like(mask)
            mask[tuple(round(c) for c in ndimage.center_of_mass(labels == index))] = True
        out[mask & (out == 0)] = index
        core = (_scaled(necrosis & (labels == index), scale) if viable >= 0.999
                else mask & ~_viable_ball(mask, viable, sampling))
        dead |= core & mask
    if course.new_lesions:
        free = _free_space(grid, liver_core, out)
        for _ in range(course.new_lesions):
            placed = _place(grid, free, float(rng.uniform(6.5, 9.0)), rng)
            if placed is not None:
                out[placed[0] & (out == 0)] = out.max() + 1
    return out, dead


def _scaled(mask: Mask, scale: float) -> Mask:
    """The mask zoomed by ``scale`` about its centroid (nearest neighbour, in index space)."""
    if not mask.any() or abs(scale - 1.0) < 1e-6:
        return mask.copy()
    centre = np.asarray(ndimage.center_of_mass(mask))
    lo, hi = np.argwhere(mask).min(0), np.argwhere(mask).max(0)
    half = (hi - lo) / 2 * scale + 2
    start = np.maximum(np.floor(centre - half).astype(int), 0)
    stop = np.minimum(np.ceil(centre + half).astype(int) + 1, mask.shape)
    axes = [np.arange(a, b) for a, b in zip(start, stop, strict=True)]
    mesh = np.meshgrid(*axes, indexing="ij")
    source = [centre[d] + (mesh[d] - centre[d]) / scale for d in range(3)]
    crop = ndimage.map_coordinates(mask.astype(np.uint8), source, order=0, cval=0)
    out = np.zeros_like(mask)
    out[tuple(slice(a, b) for a, b in zip(start, stop, strict=True))] = crop > 0
    return out


def _viable_ball(mask: Mask, fraction: float, sampling: tuple[float, float, float]) -> Mask:
    """An eccentric enhancing nodule whose diameter is ``fraction`` of the lesion's."""
    diameter = anatomy.longest_axial_diameter(mask, (sampling[2], sampling[1], sampling[0]))
    radius = fraction * diameter / 2
    if radius < 1.0:
        return np.zeros_like(mask)
    depth = ndimage.distance_transform_edt(mask, sampling=sampling)
    radius = min(radius, float(depth.max()))
    centroid = np.asarray(ndimage.center_of_mass(mask))
    options = np.argwhere(depth >= radius)
    offsets = (options - centroid) * sampling
    k, j, i = options[int(np.argmax((offsets**2).sum(1)))]
    zz, yy, xx = np.ogrid[:mask.shape[0], :mask.shape[1], :mask.shape[2]]
    dist2 = (((zz - k) * sampling[0]) ** 2 + ((yy - j) * sampling[1]) ** 2
             + ((xx - i) * sampling[2]) ** 2)
    return np.asarray(dist2 <= radius**2) & mask


def add_findings(grid: Grid, tissues: dict[str, Mask], labels: Labels, spec: PhantomSpec,
                 seed: int) -> dict[str, object]:
    """Carve the requested findings out of the tissue masks; returns what was drawn."""
    rng = _stream(seed, _FINDINGS)
    found: dict[str, object] = {}
    lesion = labels > 0
    if spec.capsule:
        rim = lesion & ~ndimage.binary_erosion(lesion, iterations=1)
        _move(tissues, rim, "capsule", ("tumour", "necrosis"))
        found["capsule"] = True
    if spec.mosaic:
        parts = anatomy._smooth_noise(labels.shape, rng, scale=3, amplitude=1.0) > 0
        _move(tissues, tissues["tumour"] & parts, "mosaic", ("tumour",))
        found["mosaic"] = True
    if spec.peritumoral_enhancement and lesion.any():
        ring = ndimage.binary_dilation(lesion, iterations=4) & ~lesion & tissues["liver"]
        wedge = anatomy._smooth_noise(labels.shape, rng, scale=8, amplitude=1.0) > -0.2
        _move(tissues, ring & wedge, "peritumoral", ("liver",))
        found["peritumoral_enhancement"] = True
    if spec.pvtt and lesion.any():
        found["pvtt_ml"] = _thrombus(grid, tissues, lesion)
    if spec.feeding_arteries and lesion.any():
        _move(tissues, _feeding_artery(grid, lesion, rng) & ~lesion, "feeding_artery",
              ("liver", "fat", "portal", "hepatic_vein", "peritumoral"))
        found["dilated_feeding_arteries"] = True
    if spec.course is not None and spec.course.lipiodol and spec.modality == "CT":
        _move(tissues, tissues["necrosis"], "lipiodol", ("necrosis",))
        found["lipiodol"] = True
    found.update({k: v for k, v in (("margin", spec.margin), ("satellites", spec.satellites),
                                    ("cirrhosis", spec.cirrhosis)) if v not in ("regular", 0,
                                                                                False)})
    return found


def _move(tissues: dict[str, Mask], region: Mask, to: str, sources: tuple[str, ...]) -> None:
    """Give ``region`` to tissue ``to`` (new arrays: truth keeps its own necrosis mask)."""
    for name in sources:
        if name in tissues:
            tissues[name] = tissues[name] & ~region
    tissues[to] = tissues.get(to, np.zeros_like(region)) | region


def _thrombus(grid: Grid, tissues: dict[str, Mask], lesion: Mask) -> float:
    """Fill the portal vein within 3 cm of the tumour with enhancing tumour thrombus."""
    sampling = _spacing(grid)
    near = ndimage.distance_transform_edt(~lesion, sampling=sampling) < 30.0
    clot = tissues["portal"] & near
    if not clot.any():  # tumour far from the hilum: the main trunk is invaded
        clot = tissues["portal"].copy()
    _move(tissues, clot, "pvtt", ("portal",))
    return float(clot.sum() * np.prod(sampling) / 1000.0)


def _feeding_artery(grid: Grid, lesion: Mask, rng: np.random.Generator) -> Mask:
    """A tortuous 5-mm artery from the hepatic hilum to the largest tumour's centre."""
    z, y, x = grid
    k, j, i = (round(c) for c in ndimage.center_of_mass(lesion))
    target = np.array([float(x[0, 0, i]), float(y[0, j, 0]), float(z[k, 0, 0])])
    start = np.array([0.0, 25.0, float(target[2]) - 10.0])
    phase, amp = float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(4.0, 8.0))
    out = np.zeros(lesion.shape, bool)
    for t in np.linspace(0.0, 1.0, 36):
        p = start + t * (target - start)
        p[0] += amp * np.sin(5 * np.pi * t + phase)
        p[1] += amp * np.cos(4 * np.pi * t + phase)
        out |= ((x - p[0]) ** 2 + (y - p[1]) ** 2 + (z - p[2]) ** 2) <= 2.5**2
    return out


def liver_texture(texture: npt.NDArray[np.float32], tissues: dict[str, Mask],
                  spec: PhantomSpec, seed: int) -> npt.NDArray[np.float32]:
    """Cirrhosis: regenerative nodules separated by a reticular fibrotic mesh."""
    if not spec.cirrhosis:
        return texture
    rng = _stream(seed, _TEXTURE)
    field_ = anatomy._smooth_noise(texture.shape, rng, scale=3, amplitude=1.0)
    septa = np.abs(field_) < 0.12
    change = 0.05 * np.sign(field_) - 0.14 * septa
    return np.asarray(texture + tissues["liver"] * change, np.float32)
