"""A synthetic abdomen with a liver and HCC-like lesions, on one grid for every phase.

Everything is drawn in millimetres of DICOM patient space (LPS: +x to the patient's left,
+y posterior, +z superior), so truth measurements do not depend on the voxel grid. The
generator is deterministic for a seed; each organ is one small function so that richer
phantoms (later issues) add organs, phases or deformations without touching the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from dicom_io.synthetic import contrast, lesions, render

Mask = npt.NDArray[np.bool_]
Grid = tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]

LABEL_BACKGROUND, LABEL_LIVER, LABEL_TUMOUR = 0, 1, 2


@dataclass(frozen=True)
class PhantomSpec:
    """Size and content of a phantom; defaults give a 4-phase liver MR study."""

    modality: str = "MR"
    rows: int = 256
    columns: int = 256
    slices: int = 64
    pixel_spacing_mm: float = 1.5
    slice_spacing_mm: float = 3.0
    lesion_count: tuple[int, int] = (1, 3)
    lesion_diameter_mm: tuple[float, float] = (16.0, 46.0)
    necrosis_probability: float = 0.5
    # Opt-in features (issue 3). Every default below leaves the output of the shipped
    # model's training distribution bit-for-bit unchanged; see ``lesions.py``/``render.py``.
    sequences: tuple[str, ...] | None = None  # None: the four dynamic MR / three CT phases
    vendor: str | None = None  # "siemens" | "ge" | "philips" | "uih"; None: generic headers
    packaging: str = "classic"  # "classic" | "dynamic" (one series) | "enhanced" (multi-frame)
    ignored_series: bool = False  # add localizer, subtraction and MPR series
    coregistered: bool = True  # False: per-sequence FOV, matrix and slice positions
    motion_mm: float = 0.0  # largest rigid shift of a series against the arterial grid
    cirrhosis: bool = False
    capsule: bool = False
    mosaic: bool = False
    margin: str = "regular"  # or "infiltrative"
    satellites: int = 0
    pvtt: bool = False
    feeding_arteries: bool = False
    peritumoral_enhancement: bool = False
    tumour_enhancement: float = 1.0  # scale of the tumour's arterial enhancement over PRE
    washout: bool = True
    ct_tube_current_ma: float | None = None  # None: the historical fixed noise (200 mA)
    lesion_plan: tuple[float, ...] | None = None  # planned diameters (mm), largest first
    necrotic_fraction: float | None = None  # planned necrotic share of planned lesions
    tumour_adc: float | None = None  # tumour ADC (x10^-6 mm2/s) on DWI/ADC; None: the table's
    course: LesionCourse | None = None  # a follow-up: how baseline lesions changed

    @property
    def phases(self) -> tuple[str, ...]:
        if self.sequences is not None:
            return self.sequences
        return contrast.MR_PHASES if self.modality == "MR" else contrast.CT_PHASES

    @property
    def is_default_drawing(self) -> bool:
        """True when the pixels come out exactly as for the historical generator."""
        return render.is_default_drawing(self)


@dataclass(frozen=True)
class LesionCourse:
    """How each baseline lesion looks at a follow-up time point (index 1, 2, …).

    ``diameter_scale`` and ``viable_fraction`` are per baseline lesion (largest first in
    lesion order); ``viable_fraction`` is the enhancing diameter over the whole diameter,
    0 meaning fully necrotic. ``new_lesions`` are placed away from the others.
    """

    index: int
    diameter_scale: tuple[float, ...]
    viable_fraction: tuple[float, ...]
    new_lesions: int = 0
    lipiodol: bool = False


@dataclass(frozen=True)
class LesionTruth:
    """What a perfect reader would measure on one lesion (from the voxel truth)."""

    index: int
    centroid_zyx: tuple[float, float, float]
    centroid_mm: tuple[float, float, float]
    volume_ml: float
    longest_diameter_mm: float
    viable_diameter_mm: float
    necrotic_fraction: float


@dataclass(frozen=True)
class Phantom:
    """Co-registered phase volumes ``[z, y, x]`` with labels and lesion truth."""

    seed: int
    spec: PhantomSpec
    phases: dict[str, npt.NDArray[np.float32]]
    labels: npt.NDArray[np.uint8]
    lesion_labels: npt.NDArray[np.uint16]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    lesions: tuple[LesionTruth, ...]
    direction: tuple[float, ...] = field(default=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    # per-series grid when not co-registered (empty: every phase on the arterial grid)
    geometry: dict[str, render.SeriesGeometry] = field(default_factory=dict)
    findings: dict[str, object] = field(default_factory=dict)  # PVTT, capsule, … as drawn


def make_phantom(seed: int = 0, spec: PhantomSpec | None = None) -> Phantom:
    """Draw one synthetic patient: anatomy, lesions, and every phase of the spec."""
    spec = spec or PhantomSpec()
    rng = np.random.default_rng(seed)
    spacing = (spec.pixel_spacing_mm, spec.pixel_spacing_mm, spec.slice_spacing_mm)
    origin = (-spec.columns * spacing[0] / 2, -spec.rows * spacing[1] / 2,
              -spec.slices * spacing[2] / 2)
    grid = _grid(spec, spacing, origin)
    tissues = _anatomy(grid, rng)
    liver_core = ndimage.binary_erosion(tissues["liver"], iterations=4)
    # new features draw from their own seeded streams so that the default draws never shift
    if spec.lesion_plan:
        lesion_labels, necrosis = lesions.planned_lesions(grid, liver_core, spec, seed)
    else:
        lesion_labels, necrosis = _lesions(grid, liver_core, spec, rng)
    lesion_labels, necrosis = lesions.shape_and_evolve(grid, liver_core, lesion_labels,
                                                       necrosis, spec, seed)
    tissues["tumour"] = (lesion_labels > 0) & ~necrosis
    tissues["necrosis"] = necrosis
    findings = lesions.add_findings(grid, tissues, lesion_labels, spec, seed)
    labels = np.zeros(lesion_labels.shape, np.uint8)
    # intrahepatic vessels belong to the organ, as in clinical liver segmentations
    envelope = tissues["liver"] | ((tissues["portal"] | tissues["hepatic_vein"]) & liver_core)
    labels[envelope | (lesion_labels > 0)] = LABEL_LIVER
    labels[lesion_labels > 0] = LABEL_TUMOUR
    texture = _smooth_noise(lesion_labels.shape, rng, scale=6, amplitude=0.04)
    bias = _bias_field(grid, rng) if spec.modality == "MR" else np.ones_like(texture)
    if spec.is_default_drawing:
        phases = {p: _render(tissues, p, spec.modality, texture, bias, rng)
                  for p in spec.phases}
        geometry: dict[str, render.SeriesGeometry] = {}
    else:
        texture = lesions.liver_texture(texture, tissues, spec, seed)
        phases, geometry = render.render_all(tissues, texture, bias, spacing, origin, spec,
                                             seed)
    truths = _truth(lesion_labels, necrosis, spacing, origin)
    return Phantom(seed, spec, phases, labels, lesion_labels, spacing, origin, truths,
                   geometry=geometry, findings=findings)


def _grid(spec: PhantomSpec, spacing: tuple[float, float, float],
          origin: tuple[float, float, float]) -> Grid:
    z = (origin[2] + spacing[2] * np.arange(spec.slices, dtype=np.float32))[:, None, None]
    y = (origin[1] + spacing[1] * np.arange(spec.rows, dtype=np.float32))[None, :, None]
    x = (origin[0] + spacing[0] * np.arange(spec.columns, dtype=np.float32))[None, None, :]
    return z, y, x


def _ellipsoid(grid: Grid, centre: tuple[float, float, float],
               radii: tuple[float, float, float], angle: float = 0.0) -> npt.NDArray[np.float32]:
    """Normalised radius (<1 inside) of an ellipsoid rotated by ``angle`` about z."""
    z, y, x = grid
    dx, dy, dz = x - centre[0], y - centre[1], z - centre[2]
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    r2 = (u / radii[0]) ** 2 + (v / radii[1]) ** 2 + (dz / radii[2]) ** 2
    return np.asarray(np.sqrt(r2), dtype=np.float32)


def _tube(grid: Grid, xy0: tuple[float, float], xy1: tuple[float, float],
          z_range: tuple[float, float], radius: float) -> Mask:
    """A vessel running from (x0, y0) at the bottom of ``z_range`` to (x1, y1) at its top."""
    z, y, x = grid
    t = np.clip((z - z_range[0]) / (z_range[1] - z_range[0]), 0.0, 1.0)
    cx, cy = xy0[0] + t * (xy1[0] - xy0[0]), xy0[1] + t * (xy1[1] - xy0[1])
    inside_z = (z >= z_range[0]) & (z <= z_range[1])
    return np.asarray(((x - cx) ** 2 + (y - cy) ** 2 <= radius**2) & inside_z)


def _smooth_noise(shape: tuple[int, ...], rng: np.random.Generator, scale: int,
                  amplitude: float) -> npt.NDArray[np.float32]:
    coarse = rng.standard_normal(tuple(max(2, s // scale) for s in shape)).astype(np.float32)
    field_ = ndimage.zoom(coarse, [s / c for s, c in zip(shape, coarse.shape, strict=True)],
                          order=1)
    return np.asarray(field_[tuple(slice(0, s) for s in shape)] * amplitude, np.float32)


def _anatomy(grid: Grid, rng: np.random.Generator) -> dict[str, Mask]:
    def j(spread: float) -> float:  # a jitter of ±spread mm
        return float(rng.uniform(-spread, spread))

    body_r = _ellipsoid(grid, (0, j(5), 0), (165 + j(12), 118 + j(10), 1e6))
    body = body_r < 1.0
    muscle_wall = (body_r < 1.0) & (body_r > 0.93)
    fat = body & ~muscle_wall
    shape_noise = _smooth_noise(body.shape, rng, scale=10, amplitude=0.12)
    liver = (_ellipsoid(grid, (-62 + j(6), -8 + j(6), 20 + j(8)),
                        (78 + j(6), 68 + j(5), 78 + j(8)), angle=0.35 + j(0.1)) + shape_noise) < 1
    liver |= (_ellipsoid(grid, (5 + j(5), -40 + j(5), 38 + j(6)), (45, 32, 45)) + shape_noise) < 1
    spleen = _ellipsoid(grid, (88 + j(6), 42 + j(5), 30 + j(6)), (30, 48, 52), 0.6) < 1
    kidneys = ((_ellipsoid(grid, (-72 + j(4), 62 + j(4), -45 + j(6)), (26, 30, 48)) < 1)
               | (_ellipsoid(grid, (72 + j(4), 62 + j(4), -38 + j(6)), (26, 30, 48)) < 1))
    spine = _ellipsoid(grid, (0, 80, 0), (20, 18, 1e6)) < 1
    aorta = _tube(grid, (14, 52), (12, 50), (-200, 200), 11.0)
    ivc = _tube(grid, (-24, 44), (-28, 38), (-200, 200), 10.0)
    portal = _tube(grid, (-5, 30), (-50, 5), (-40, 30), 7.0) & ~ivc
    hepatic = (_tube(grid, (-30, 30), (-85, -20), (40, 85), 4.5)
               | _tube(grid, (-28, 30), (-20, -45), (45, 85), 4.0))
    liver &= ~(ivc | aorta | spine | kidneys)
    portal, hepatic = portal & (liver | ~body), hepatic & liver
    organs = {"liver": liver & ~portal & ~hepatic, "spleen": spleen & ~liver,
              "kidney": kidneys & ~liver, "bone": spine, "aorta": aorta, "ivc": ivc,
              "portal": portal, "hepatic_vein": hepatic, "muscle": muscle_wall}
    occupied = np.zeros_like(body)
    for m in organs.values():
        occupied |= m
    organs["fat"] = fat & ~occupied
    organs["air"] = ~body
    return organs


def _lesions(grid: Grid, liver_core: Mask, spec: PhantomSpec,
             rng: np.random.Generator) -> tuple[npt.NDArray[np.uint16], Mask]:
    """Place 1–3 ellipsoidal HCCs wholly inside the liver, some with eccentric necrosis."""
    labels = np.zeros(liver_core.shape, np.uint16)
    necrosis = np.zeros(liver_core.shape, bool)
    candidates = np.argwhere(liver_core)
    z, y, x = grid
    wanted = int(rng.integers(spec.lesion_count[0], spec.lesion_count[1] + 1))
    for _attempt in range(60):
        if labels.max() >= wanted:
            break
        d = float(rng.uniform(*spec.lesion_diameter_mm))
        radii = (d / 2, d / 2 * rng.uniform(0.75, 1.0), d / 2 * rng.uniform(0.75, 1.0))
        k, jj, i = candidates[rng.integers(len(candidates))]
        centre = (float(x[0, 0, i]), float(y[0, jj, 0]), float(z[k, 0, 0]))
        r = _ellipsoid(grid, centre, radii, float(rng.uniform(0, np.pi)))
        blob = r < 1.0
        if not np.all(liver_core[blob]) or np.any(ndimage.binary_dilation(labels > 0,
                                                                          iterations=3)[blob]):
            continue
        labels[blob] = labels.max() + 1
        if d > 22 and rng.random() < spec.necrosis_probability:
            necrosis |= _necrotic_core(grid, centre, radii, rng) & blob
    return labels, necrosis


def _necrotic_core(grid: Grid, centre: tuple[float, float, float],
                   radii: tuple[float, float, float], rng: np.random.Generator) -> Mask:
    """An off-centre non-enhancing core that reaches the lesion edge on one side."""
    angle = float(rng.uniform(0, 2 * np.pi))
    shift = 0.45 * radii[0]
    core_centre = (centre[0] + shift * np.cos(angle), centre[1] + shift * np.sin(angle), centre[2])
    scale = float(rng.uniform(0.55, 0.7))
    return _ellipsoid(grid, core_centre, tuple(r * scale for r in radii)) < 1.0  # type: ignore[arg-type]


def _bias_field(grid: Grid, rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """Smooth multiplicative coil sensitivity (±10 %)."""
    z, y, x = grid
    a, b, c = rng.uniform(-1, 1, 3) * 0.1
    field_ = 1 + a * x / 200 + b * y / 150 + c * z / 100
    return np.asarray(np.broadcast_to(field_, (z.shape[0], y.shape[1], x.shape[2])), np.float32)


def _render(tissues: dict[str, Mask], phase: str, modality: str,
            texture: npt.NDArray[np.float32], bias: npt.NDArray[np.float32],
            rng: np.random.Generator) -> npt.NDArray[np.float32]:
    values = contrast.intensities(phase)
    image = np.zeros(texture.shape, np.float32)
    for name, mask in tissues.items():
        image[mask] = values[name]
    spread = 1.0 + texture
    image = ndimage.gaussian_filter(image * spread, sigma=(0.4, 0.7, 0.7))
    sigma = contrast.noise_sigma(modality)
    if modality == "MR":
        real = image * bias + rng.normal(0, sigma, image.shape).astype(np.float32)
        imag = rng.normal(0, sigma, image.shape).astype(np.float32)
        return np.asarray(np.sqrt(real**2 + imag**2), np.float32)
    return np.asarray(image + rng.normal(0, sigma, image.shape), np.float32)


def _truth(lesion_labels: npt.NDArray[np.uint16], necrosis: Mask,
           spacing: tuple[float, float, float],
           origin: tuple[float, float, float]) -> tuple[LesionTruth, ...]:
    voxel_ml = spacing[0] * spacing[1] * spacing[2] / 1000.0
    out = []
    for index in range(1, int(lesion_labels.max()) + 1):
        mask = lesion_labels == index
        centroid = ndimage.center_of_mass(mask)
        centroid_mm = tuple(float(o + c * s) for o, c, s in
                            zip(origin, centroid[::-1], spacing, strict=True))
        viable = mask & ~necrosis
        out.append(LesionTruth(
            index=index,
            centroid_zyx=(float(centroid[0]), float(centroid[1]), float(centroid[2])),
            centroid_mm=(centroid_mm[0], centroid_mm[1], centroid_mm[2]),
            volume_ml=float(mask.sum() * voxel_ml),
            longest_diameter_mm=longest_axial_diameter(mask, spacing),
            viable_diameter_mm=longest_axial_diameter(viable, spacing),
            necrotic_fraction=float((mask & necrosis).sum() / mask.sum()),
        ))
    return tuple(out)


def longest_axial_diameter(mask: Mask, spacing: tuple[float, float, float]) -> float:
    """RECIST longest in-plane diameter: brute-force over all pixel-centre pairs per slice.

    Deliberately simple (all pairs of the slice's pixels), as an independent reference
    for the faster measurement code in ``inference``.
    """
    best = 0.0
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        pts = np.argwhere(mask[k]).astype(np.float64) * (spacing[1], spacing[0])
        if len(pts) < 2:
            continue
        edge = pts[_on_edge(mask[k])]
        d = np.sqrt(((edge[:, None, :] - edge[None, :, :]) ** 2).sum(-1)).max()
        best = max(best, float(d))
    return best


def _on_edge(section: Mask) -> npt.NDArray[np.bool_]:
    inner = ndimage.binary_erosion(section)
    return np.asarray((section & ~inner)[section])
