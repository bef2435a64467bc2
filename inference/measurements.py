"""Lesion and liver measurements from a label map: volumes, RECIST and mRECIST diameters.

Response criteria are defined on axial slices: RECIST 1.1 takes a lesion's longest in-plane
diameter, mRECIST (for HCC) the longest diameter of its viable, arterially enhancing part.
Both are computed here exactly on the voxel grid: the maximum distance (in mm, with the
in-plane spacing) between the centres of the voxels of a lesion's cross-section, over all
slices. The farthest pair of a point set lies on its convex hull, so only boundary voxels and
then hull vertices are compared; nothing is sampled or rotated. Voxel centres are the samples a
label map stands for, which is why volumes are voxel counts times the voxel volume.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import pdist, squareform

__all__ = [
    "LIVER",
    "TUMOUR",
    "Chord",
    "LesionMeasurement",
    "Outline",
    "StudyMeasurements",
    "liver_outline",
    "longest_axial_chord",
    "longest_axial_diameter",
    "max_feret_diameter",
    "measure",
]

LIVER = 1
TUMOUR = 2
_IN_PLANE_4 = ndimage.generate_binary_structure(2, 1)

Point = tuple[float, float, float]
Chord = tuple[Point, Point]
"""Two voxel centres ``[z, y, x]`` on one slice: the ends of a longest diameter."""
Outline = tuple[Point, ...]
"""Voxel centres ``[z, y, x]`` on one slice, in order around a closed contour (not repeated)."""
MAX_OUTLINE_POINTS = 200
_AROUND = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))
"""The 8 neighbours ``(dy, dx)`` clockwise on screen (y down), starting north."""


@dataclass(frozen=True)
class LesionMeasurement:
    """One lesion (a connected component of tumour voxels), numbered 1..N by volume."""

    label: int
    voxel_count: int
    volume_ml: float
    longest_diameter_mm: float
    longest_diameter_slice: int
    viable_diameter_mm: float | None
    viable_volume_ml: float | None
    centroid_zyx: tuple[float, float, float]
    centroid_mm: tuple[float, float, float] | None
    mean_probability: float | None
    longest_diameter_endpoints_zyx: Chord | None = None
    """The voxel centres (on the source grid) whose distance is ``longest_diameter_mm``, both
    on slice ``longest_diameter_slice``; None for a single-voxel cross-section."""


@dataclass(frozen=True)
class StudyMeasurements:
    """All lesions plus whole-organ figures; ``liver_volume_ml`` includes the tumours."""

    lesions: tuple[LesionMeasurement, ...]
    liver_volume_ml: float
    tumour_volume_ml: float
    tumour_burden_pct: float
    liver_arterial_reference: float | None = None
    lesion_labels: npt.NDArray[np.uint16] | None = None
    """Lesion k of ``lesions`` painted as k on the label grid (0 elsewhere), for the SEG."""
    liver_outline_zyx: Outline | None = None
    """The liver's outer contour on one slice (that of the largest lesion's longest diameter,
    else the liver's largest cross-section), at most 200 boundary voxel centres; what a
    viewer draws for the liver. None without liver."""


def measure(labels: npt.NDArray[np.integer], spacing_xyz: Sequence[float],
            arterial: npt.NDArray[np.floating] | None = None,
            tumour_probability: npt.NDArray[np.floating] | None = None,
            viable_margin: float = 0.1, *, liver_reference: float | None = None,
            origin_xyz: Sequence[float] | None = None, direction: Sequence[float] | None = None,
            connectivity: int = 3) -> StudyMeasurements:
    """Measure every lesion (label 2) and the liver (labels 1 and 2) of a ``[z, y, x]`` map.

    Viable tumour (mRECIST) is where the arterial phase exceeds the liver parenchyma's median
    arterial intensity (labels 1 only, or ``liver_reference`` when given) by ``viable_margin``
    of that reference. The viable diameter is the same Feret measure on the viable voxels, so
    for a rim-enhancing lesion with a central necrotic core it spans the core (mRECIST says
    not to); a chord-must-stay-in-viable-tissue measure is not implemented.
    ``connectivity`` 3 (26-neighbours) keeps a lesion whole on thick slices, where its
    cross-sections in adjacent slices often touch only diagonally. ``origin_xyz`` and
    ``direction`` (row-major 3x3, columns the x, y, z axes) give centroids in patient LPS mm.
    """
    _check_shapes(labels, arterial, tumour_probability)
    spacing = tuple(float(s) for s in spacing_xyz)
    voxel_ml = spacing[0] * spacing[1] * spacing[2] / 1000.0
    reference = _arterial_reference(labels, arterial, liver_reference)
    context = _Context(spacing, voxel_ml, arterial, tumour_probability, reference, viable_margin,
                       _affine(spacing, origin_xyz, direction))
    components = _lesions(labels, connectivity)
    lesions = tuple(_measure_lesion(i + 1, mask, offset, context)
                    for i, (mask, offset) in enumerate(components))
    liver_ml = float(np.count_nonzero((labels == LIVER) | (labels == TUMOUR))) * voxel_ml
    tumour_ml = float(np.count_nonzero(labels == TUMOUR)) * voxel_ml
    burden = 100.0 * tumour_ml / liver_ml if liver_ml > 0 else 0.0
    liver = (labels == LIVER) | (labels == TUMOUR)
    outline_slice = lesions[0].longest_diameter_slice if lesions else None
    return StudyMeasurements(lesions, liver_ml, tumour_ml, burden, reference,
                             _paint(labels.shape, components),
                             liver_outline(liver, outline_slice))


def liver_outline(liver: npt.NDArray[np.bool_], z: int | None = None,
                  max_points: int = MAX_OUTLINE_POINTS) -> Outline | None:
    """Outer contour of the largest 8-connected part of ``liver[z]`` as voxel centres.

    ``z`` None takes the slice with the most liver voxels. The contour is a Moore-neighbour
    trace of boundary voxels, clockwise on screen, thinned evenly to ``max_points``; None
    when the slice holds fewer than 3 boundary voxels (nothing to draw as a polygon).
    """
    if not liver.any():
        return None
    if z is None:
        z = int(np.argmax(liver.sum(axis=(1, 2))))
    components, count = ndimage.label(liver[z], structure=np.ones((3, 3), bool))
    if count == 0:
        return None
    sizes = ndimage.sum_labels(np.ones_like(components), components, range(1, count + 1))
    trace = _moore_trace(components == int(np.argmax(sizes)) + 1)
    if len(trace) < 3:
        return None
    if len(trace) > max_points:
        keep = np.linspace(0, len(trace), max_points, endpoint=False).astype(int)
        trace = [trace[i] for i in keep]
    return tuple((float(z), float(y), float(x)) for y, x in trace)


def _moore_trace(mask: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """Boundary voxels ``(y, x)`` of one 8-connected 2-D region, in order, each turn once.

    Radial sweep: from each boundary voxel, look clockwise around it starting just after the
    direction it was entered from; stop on re-entering the start the way it was first left.
    """
    padded = np.pad(mask, 1)
    start = (int(np.argwhere(padded)[0][0]), int(np.argwhere(padded)[0][1]))
    trace, current, back = [start], start, 6  # entered from the west: raster-first voxel
    first_move: tuple[int, int] | None = None
    for _ in range(4 * padded.size):
        for turn in range(1, 9):
            k = (back + turn) % 8
            step = (current[0] + _AROUND[k][0], current[1] + _AROUND[k][1])
            if padded[step]:
                break
        else:
            break  # a single voxel
        if first_move is None:
            first_move = step
        elif current == start and step == first_move:
            trace.pop()  # the start again, already first
            break
        trace.append(step)
        current, back = step, (k + 4) % 8
    return [(y - 1, x - 1) for y, x in trace]


def _paint(shape: tuple[int, ...], components: Sequence[tuple[npt.NDArray[np.bool_],
                                                              tuple[int, int, int]]]
           ) -> npt.NDArray[np.uint16]:
    """The numbered lesion map: lesion k (largest first) as value k."""
    out = np.zeros(shape, np.uint16)
    for number, (mask, offset) in enumerate(components, start=1):
        window = tuple(slice(o, o + n) for o, n in zip(offset, mask.shape, strict=True))
        out[window][mask] = number
    return out


@dataclass(frozen=True)
class _Context:
    spacing: tuple[float, ...]
    voxel_ml: float
    arterial: npt.NDArray[np.floating] | None
    probability: npt.NDArray[np.floating] | None
    reference: float | None
    margin: float
    affine: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None


def _check_shapes(labels: npt.NDArray[np.integer], *others: npt.NDArray[np.floating] | None
                  ) -> None:
    if labels.ndim != 3:
        raise ValueError(f"labels must be [z, y, x], got shape {labels.shape}")
    for other in others:
        if other is not None and other.shape != labels.shape:
            raise ValueError(f"array of shape {other.shape} is not on the label grid "
                             f"{labels.shape}")


def _arterial_reference(labels: npt.NDArray[np.integer],
                        arterial: npt.NDArray[np.floating] | None,
                        given: float | None) -> float | None:
    """Median arterial intensity of tumour-free liver: the enhancement baseline of mRECIST."""
    if arterial is None:
        return None
    if given is not None:
        return float(given)
    parenchyma = arterial[labels == LIVER]
    return float(np.median(parenchyma)) if parenchyma.size else None


def _affine(spacing: tuple[float, ...], origin: Sequence[float] | None,
            direction: Sequence[float] | None
            ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None:
    if origin is None:
        return None
    rotation = np.eye(3) if direction is None else np.asarray(direction, float).reshape(3, 3)
    return np.asarray(origin, dtype=float), rotation @ np.diag(spacing)


def _lesions(labels: npt.NDArray[np.integer], connectivity: int
             ) -> list[tuple[npt.NDArray[np.bool_], tuple[int, int, int]]]:
    """Tumour components as (cropped mask, crop origin), largest first (ties: by position)."""
    structure = ndimage.generate_binary_structure(3, connectivity)
    components, _ = ndimage.label(labels == TUMOUR, structure=structure)
    found = []
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        if box is None:
            continue
        mask = components[box] == index
        offset = (box[0].start, box[1].start, box[2].start)
        found.append((-int(mask.sum()), offset, mask))
    found.sort(key=lambda item: (item[0], item[1]))
    return [(mask, offset) for _, offset, mask in found]


def _measure_lesion(label: int, mask: npt.NDArray[np.bool_], offset: tuple[int, int, int],
                    ctx: _Context) -> LesionMeasurement:
    diameter, slice_index, chord = longest_axial_chord(mask, ctx.spacing)
    viable = _viable(mask, offset, ctx)
    centroid = tuple(float(c) + o for c, o in zip(ndimage.center_of_mass(mask), offset,
                                                   strict=True))
    return LesionMeasurement(
        label=label,
        voxel_count=int(mask.sum()),
        volume_ml=float(mask.sum()) * ctx.voxel_ml,
        longest_diameter_mm=diameter,
        longest_diameter_slice=slice_index + offset[0],
        viable_diameter_mm=None if viable is None else longest_axial_diameter(
            viable, ctx.spacing)[0],
        viable_volume_ml=None if viable is None else float(viable.sum()) * ctx.voxel_ml,
        centroid_zyx=(centroid[0], centroid[1], centroid[2]),
        centroid_mm=_to_patient(centroid, ctx),
        mean_probability=_mean_in(ctx.probability, mask, offset),
        longest_diameter_endpoints_zyx=_shift(chord, offset),
    )


def _shift(chord: Chord | None, offset: tuple[int, int, int]) -> Chord | None:
    """``chord`` from crop coordinates to the source grid."""
    if chord is None:
        return None
    a, b = ((p[0] + offset[0], p[1] + offset[1], p[2] + offset[2]) for p in chord)
    return a, b


def _crop(array: npt.NDArray[np.floating], mask: npt.NDArray[np.bool_],
          offset: tuple[int, int, int]) -> npt.NDArray[np.floating]:
    box = tuple(slice(o, o + n) for o, n in zip(offset, mask.shape, strict=True))
    return array[box]


def _viable(mask: npt.NDArray[np.bool_], offset: tuple[int, int, int],
            ctx: _Context) -> npt.NDArray[np.bool_] | None:
    """Lesion voxels enhancing above the liver reference by the margin (mRECIST viable part)."""
    if ctx.arterial is None or ctx.reference is None:
        return None
    threshold = ctx.reference + ctx.margin * abs(ctx.reference)
    return mask & (_crop(ctx.arterial, mask, offset) > threshold)


def _mean_in(values: npt.NDArray[np.floating] | None, mask: npt.NDArray[np.bool_],
             offset: tuple[int, int, int]) -> float | None:
    if values is None:
        return None
    return float(np.mean(_crop(values, mask, offset)[mask]))


def _to_patient(centroid_zyx: tuple[float, ...],
                ctx: _Context) -> tuple[float, float, float] | None:
    if ctx.affine is None:
        return None
    origin, matrix = ctx.affine
    point = origin + matrix @ np.asarray(centroid_zyx[::-1], dtype=float)
    return float(point[0]), float(point[1]), float(point[2])


def longest_axial_diameter(mask: npt.NDArray[np.bool_],
                           spacing_xyz: Sequence[float]) -> tuple[float, int]:
    """(Largest in-plane Feret diameter over the z-slices in mm, the slice index of it).

    (0.0, 0) for an empty mask. Ties go to the first (lowest) slice.
    """
    diameter, where, _ = longest_axial_chord(mask, spacing_xyz)
    return diameter, where


def longest_axial_chord(mask: npt.NDArray[np.bool_], spacing_xyz: Sequence[float]
                        ) -> tuple[float, int, Chord | None]:
    """``longest_axial_diameter`` and the two voxel centres ``[z, y, x]`` it joins.

    The end points are what a viewer draws as the RECIST line; None when no slice has two
    voxels.
    """
    best, where, chord = -1.0, 0, None
    spacing_yx = (float(spacing_xyz[1]), float(spacing_xyz[0]))
    for z in np.flatnonzero(mask.any(axis=(1, 2))):
        diameter, pair = _feret_pair(mask[z], spacing_yx)
        if diameter > best:
            best, where = diameter, int(z)
            chord = None if pair is None else ((float(z), *pair[0]), (float(z), *pair[1]))
    return max(best, 0.0), where, chord


def max_feret_diameter(mask: npt.NDArray[np.bool_], spacing_yx: Sequence[float]) -> float:
    """Largest distance (mm) between two voxel centres of a 2-D mask; exact.

    Only boundary voxels can be extreme, and only convex-hull vertices among them, so the
    all-pairs search runs on a few dozen points even for large lesions.
    """
    return _feret_pair(mask, spacing_yx)[0]


def _feret_pair(mask: npt.NDArray[np.bool_], spacing_yx: Sequence[float]
                ) -> tuple[float, tuple[tuple[float, float], tuple[float, float]] | None]:
    """Max Feret diameter (mm) of a 2-D mask and its two voxel centres ``(y, x)`` (indices)."""
    interior = ndimage.binary_erosion(mask, structure=_IN_PLANE_4, border_value=0)
    scale = np.asarray(spacing_yx, dtype=float)
    points = _hull_vertices(np.argwhere(mask & ~interior).astype(float) * scale)
    if len(points) < 2:
        return 0.0, None
    distances = squareform(pdist(points))
    i, j = np.unravel_index(int(np.argmax(distances)), distances.shape)
    a, b = np.rint(points[i] / scale), np.rint(points[j] / scale)  # back to voxel indices
    return float(distances[i, j]), ((float(a[0]), float(a[1])), (float(b[0]), float(b[1])))


def _hull_vertices(points: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    if len(points) <= 16:
        return points
    try:
        vertices: npt.NDArray[np.float64] = points[ConvexHull(points).vertices]
        return vertices
    except QhullError:  # collinear points: the hull is a segment, keep all points
        return points
