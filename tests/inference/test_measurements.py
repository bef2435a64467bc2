"""Measurements on shapes with known answers, at anisotropic spacing."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest
from scipy import ndimage

from inference.measurements import (
    LIVER,
    TUMOUR,
    liver_outline,
    longest_axial_chord,
    longest_axial_diameter,
    max_feret_diameter,
    measure,
)

SPACING = (0.8, 0.7, 2.5)  # x, y, z mm
SHAPE = (24, 80, 90)  # z, y, x


def grid_mm(shape: tuple[int, int, int] = SHAPE, spacing: tuple[float, ...] = SPACING
            ) -> tuple[npt.NDArray[np.float64], ...]:
    z, y, x = np.indices(shape, dtype=float)
    return z * spacing[2], y * spacing[1], x * spacing[0]


def ellipsoid(centre_zyx_mm: tuple[float, float, float], axes_xyz_mm: tuple[float, float, float],
              angle_deg: float = 0.0) -> npt.NDArray[np.bool_]:
    """Voxels whose centre lies in an ellipsoid, rotated in-plane by ``angle_deg``."""
    z, y, x = grid_mm()
    dz, dy, dx = z - centre_zyx_mm[0], y - centre_zyx_mm[1], x - centre_zyx_mm[2]
    t = math.radians(angle_deg)
    u, v = dx * math.cos(t) + dy * math.sin(t), -dx * math.sin(t) + dy * math.cos(t)
    a, b, c = axes_xyz_mm
    return np.asarray((u / a) ** 2 + (v / b) ** 2 + (dz / c) ** 2 <= 1.0)


def liver_with(*lesions: npt.NDArray[np.bool_]) -> npt.NDArray[np.uint8]:
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[2:-2, 5:-5, 5:-5] = LIVER
    for lesion in lesions:
        labels[lesion] = TUMOUR
    return labels


# centre on a voxel centre (z 12, y 40, x 45) so the extreme voxel centres touch the surface
CENTRE = (12 * 2.5, 40 * 0.7, 45 * 0.8)


def test_sphere_volume_and_diameter() -> None:
    r = 14.0
    result = measure(liver_with(ellipsoid(CENTRE, (r, r, r))), SPACING)
    (lesion,) = result.lesions
    assert lesion.label == 1
    assert lesion.volume_ml == pytest.approx(4 / 3 * math.pi * r**3 / 1000, rel=0.03)
    assert abs(lesion.longest_diameter_mm - 2 * r) <= max(SPACING[:2])
    assert lesion.longest_diameter_slice == 12
    assert lesion.centroid_zyx == pytest.approx((12, 40, 45), abs=0.01)
    assert lesion.viable_diameter_mm is None and lesion.mean_probability is None


@pytest.mark.parametrize("angle", [0.0, 30.0, 90.0])
def test_ellipsoid_axes(angle: float) -> None:
    a, b, c = 20.0, 9.0, 12.0
    result = measure(liver_with(ellipsoid(CENTRE, (a, b, c), angle)), SPACING)
    (lesion,) = result.lesions
    assert lesion.volume_ml == pytest.approx(4 / 3 * math.pi * a * b * c / 1000, rel=0.03)
    assert 2 * a - math.hypot(*SPACING[:2]) <= lesion.longest_diameter_mm <= 2 * a + 1e-9


@pytest.mark.parametrize("angle", [0.0, 30.0, 90.0, 135.0])
def test_longest_diameter_endpoints_lie_on_the_long_axis(angle: float) -> None:
    """The end points are voxel centres on the diameter's slice, as far apart as the diameter,
    at the tips of the ellipse's long axis (up to the voxel grid: 0.8 x 0.7 mm)."""
    (lesion,) = measure(liver_with(ellipsoid(CENTRE, (20.0, 9.0, 12.0), angle)), SPACING).lesions
    assert lesion.longest_diameter_endpoints_zyx is not None
    ends = np.asarray(lesion.longest_diameter_endpoints_zyx)
    assert list(ends[:, 0]) == [lesion.longest_diameter_slice] * 2
    assert np.array_equal(ends, np.rint(ends))
    x_mm, y_mm = ends[:, 2] * SPACING[0] - CENTRE[2], ends[:, 1] * SPACING[1] - CENTRE[1]
    length = math.hypot(x_mm[1] - x_mm[0], y_mm[1] - y_mm[0])
    assert length == pytest.approx(lesion.longest_diameter_mm, abs=1e-9)
    t = math.radians(angle)
    along = x_mm * math.cos(t) + y_mm * math.sin(t)
    across = -x_mm * math.sin(t) + y_mm * math.cos(t)
    assert sorted(along) == pytest.approx([-20.0, 20.0], abs=1.0)  # one at each tip
    assert np.abs(across).max() <= 2.5
    if angle == 0.0:  # the tips fall on voxel centres
        assert sorted(map(tuple, ends)) == [(12, 40, 20), (12, 40, 70)]


def test_feret_is_exact_on_small_shapes() -> None:
    square = np.ones((3, 4), dtype=bool)  # corners (0,0) and (2,3) at spacing y 2, x 1
    assert max_feret_diameter(square, (2.0, 1.0)) == pytest.approx(math.hypot(4.0, 3.0))
    assert max_feret_diameter(np.zeros((3, 3), bool), (1.0, 1.0)) == 0.0
    line = np.zeros((1, 50), dtype=bool)
    line[0, 3:40] = True  # collinear points: hull degenerates, still exact
    assert max_feret_diameter(line, (1.0, 0.5)) == pytest.approx(36 * 0.5)
    disc = np.hypot(*np.indices((101, 101)) - 50.0) <= 50
    assert max_feret_diameter(disc, (1.0, 1.0)) == pytest.approx(100.0)
    assert longest_axial_diameter(np.zeros((2, 3, 3), bool), SPACING) == (0.0, 0)
    dot = np.zeros((2, 3, 3), bool)
    dot[1, 1, 1] = True  # one voxel: no diameter to draw
    assert longest_axial_chord(dot, SPACING) == (0.0, 1, None)


def test_two_lesions_numbered_by_volume() -> None:
    small = ellipsoid((30.0, 20.0, 20.0), (5.0, 5.0, 5.0))
    large = ellipsoid((30.0, 35.0, 50.0), (9.0, 9.0, 9.0))
    result = measure(liver_with(small, large), SPACING)
    assert [lesion.label for lesion in result.lesions] == [1, 2]
    assert result.lesions[0].volume_ml > result.lesions[1].volume_ml
    assert result.lesions[0].centroid_zyx[2] == pytest.approx(50.0 / 0.8, abs=0.5)
    voxel_ml = 0.8 * 0.7 * 2.5 / 1000
    assert result.tumour_volume_ml == pytest.approx((small.sum() + large.sum()) * voxel_ml)
    liver_voxels = 20 * 70 * 80
    assert result.liver_volume_ml == pytest.approx(liver_voxels * voxel_ml)
    assert result.tumour_burden_pct == pytest.approx(
        100 * (small.sum() + large.sum()) / liver_voxels)


def arterial_map(labels: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    arterial = np.full(SHAPE, 20.0, dtype=np.float32)
    arterial[labels == LIVER] = 100.0
    return arterial


def test_viable_part_of_partly_necrotic_lesion() -> None:
    """Only a 4 mm cap enhances: its chord is 2 * sqrt(14² - 10²) ≈ 19.6 mm, not 28 mm."""
    lesion = ellipsoid(CENTRE, (14.0, 14.0, 14.0))
    labels = liver_with(lesion)
    arterial = arterial_map(labels)
    x_mm = grid_mm()[2]
    arterial[lesion] = 60.0  # necrotic
    arterial[lesion & (x_mm >= CENTRE[2] + 10.0)] = 150.0  # enhancing cap
    arterial[lesion & (x_mm >= CENTRE[2] + 12.0)] = 105.0  # within the 10 % margin: not viable
    (result,) = measure(labels, SPACING, arterial, viable_margin=0.1).lesions
    assert result.viable_diameter_mm is not None and result.viable_volume_ml is not None
    assert result.longest_diameter_mm == pytest.approx(28.0)
    assert 2 * math.sqrt(14**2 - 10**2) - 1.5 <= result.viable_diameter_mm <= 19.6
    assert 0 < result.viable_volume_ml < 0.1 * result.volume_ml
    strict = measure(labels, SPACING, arterial, viable_margin=0.6).lesions[0]
    assert strict.viable_diameter_mm == 0.0  # 150 is not above 100 + 60 %


def test_fully_necrotic_and_reference_override() -> None:
    lesion = ellipsoid(CENTRE, (10.0, 10.0, 10.0))
    labels = liver_with(lesion)
    arterial = arterial_map(labels)
    arterial[lesion] = 40.0
    result = measure(labels, SPACING, arterial)
    assert result.liver_arterial_reference == 100.0
    assert result.lesions[0].viable_diameter_mm == 0.0
    assert result.lesions[0].viable_volume_ml == 0.0
    overridden = measure(labels, SPACING, arterial, liver_reference=30.0).lesions[0]
    assert overridden.viable_diameter_mm == pytest.approx(overridden.longest_diameter_mm)


def test_probability_and_patient_coordinates() -> None:
    lesion = ellipsoid(CENTRE, (6.0, 6.0, 6.0))
    probability = np.where(lesion, 0.75, 0.1).astype(np.float32)
    flip = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    (result,) = measure(liver_with(lesion), SPACING, tumour_probability=probability,
                        origin_xyz=(100.0, 50.0, -20.0), direction=flip).lesions
    assert result.mean_probability == pytest.approx(0.75)
    assert result.centroid_mm == pytest.approx((100.0 - CENTRE[2], 50.0 - CENTRE[1],
                                                -20.0 + CENTRE[0]))


def test_no_tumour_and_shape_errors() -> None:
    empty = measure(np.zeros((4, 5, 6), np.uint8), SPACING)
    assert empty.lesions == () and empty.tumour_burden_pct == 0.0
    with pytest.raises(ValueError, match="not on the label grid"):
        measure(np.zeros((4, 5, 6), np.uint8), SPACING, arterial=np.zeros((4, 5, 7)))


def test_diagonal_neighbours_join_with_26_connectivity() -> None:
    labels = np.zeros((3, 5, 5), dtype=np.uint8)
    labels[0, 1, 1] = labels[1, 2, 2] = labels[2, 3, 3] = TUMOUR
    assert len(measure(labels, SPACING).lesions) == 1
    assert len(measure(labels, SPACING, connectivity=1).lesions) == 3


def test_liver_outline_traces_the_boundary_on_the_lesion_slice() -> None:
    """The outline: boundary voxel centres of the liver (tumour included) on the slice of the
    largest lesion's longest diameter, in order (neighbours touch), at most 200 points."""
    labels = np.zeros((6, 60, 70), np.uint8)
    yy, xx = np.mgrid[0:60, 0:70]
    for z in range(1, 5):
        labels[z][(yy - 30) ** 2 / (20 + z) ** 2 + (xx - 35) ** 2 / (28 + z) ** 2 < 1] = LIVER
    labels[3, 25:31, 30:36] = TUMOUR
    labels[1, 2, 2] = LIVER  # a speck apart from the liver: not outlined
    result = measure(labels, (1.0, 1.0, 2.0))
    outline = result.liver_outline_zyx
    assert outline is not None and 3 <= len(outline) <= 200
    assert {p[0] for p in outline} == {3.0} == {float(result.lesions[0].longest_diameter_slice)}
    liver = labels[3] > 0
    boundary = liver & ~ndimage.binary_erosion(liver)
    assert all(boundary[int(y), int(x)] for _, y, x in outline)
    steps = np.abs(np.diff(np.array([p[1:] for p in [*outline, outline[0]]]), axis=0))
    assert steps.max() <= 1  # 8-neighbours all the way round, closed


def test_liver_outline_without_lesions_and_thinned() -> None:
    liver = np.zeros((3, 300, 300), bool)
    liver[1, 20:280, 30:270] = True
    liver[2, 50:60, 50:60] = True
    outline = liver_outline(liver)  # the largest cross-section: slice 1
    assert outline is not None and len(outline) == 200 and {p[0] for p in outline} == {1.0}
    assert liver_outline(np.zeros((2, 5, 5), bool)) is None
    speck = np.zeros((1, 5, 5), bool)
    speck[0, 2, 2] = True
    assert liver_outline(speck) is None
