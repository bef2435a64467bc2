"""Axis orientation codes and lossless reorientation (axis permutes and flips only).

Networks trained outside Hepatica saw their images in a fixed voxel orientation: nnU-Net in the
order its reader returned them, TotalSegmentator after reorienting to RAS, MONAI bundles after
``Orientationd``. Hepatica's volumes keep the DICOM order, so an imported model's input is
brought to the orientation it was trained in, and its output brought back, by permuting and
flipping axes (no interpolation, exactly invertible).

Codes follow the NIfTI/nibabel convention: one letter per voxel axis i, j, k (x, y, z) naming
the direction that axis *increases towards*: L/R, P/A, I/S. A Hepatica volume with the identity
direction (LPS patient space) is ``"LPS"``; nibabel's closest-canonical is ``"RAS"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Reorientation", "axis_codes", "plan_reorientation"]

# world axes in LPS (DICOM / SimpleITK): +x is Left, +y Posterior, +z Superior
_POSITIVE = ("L", "P", "S")
_NEGATIVE = ("R", "A", "I")


def axis_codes(direction: Sequence[float]) -> str:
    """Codes (e.g. ``"LPS"``) of the i, j, k axes of a row-major 3x3 LPS direction matrix.

    Each voxel axis gets the world axis it is closest to; the largest cosines are assigned
    first so that an oblique acquisition still maps to three distinct world axes.
    """
    matrix = np.abs(np.asarray(direction, dtype=np.float64).reshape(3, 3))
    signed = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    world_of = [-1, -1, -1]
    free = matrix.copy()
    for _ in range(3):
        world, axis = np.unravel_index(int(np.argmax(free)), free.shape)
        world_of[int(axis)] = int(world)
        free[world, :] = -1.0
        free[:, axis] = -1.0
    return "".join((_POSITIVE if signed[w, a] > 0 else _NEGATIVE)[w]
                   for a, w in enumerate(world_of))


def _world_axis(code: str) -> tuple[int, int]:
    letter = code.upper()
    for world in range(3):
        if letter == _POSITIVE[world]:
            return world, 1
        if letter == _NEGATIVE[world]:
            return world, -1
    raise ValueError(f"unknown orientation letter {code!r} (use L/R, P/A, I/S)")


def check_codes(codes: str) -> str:
    """``codes`` upper-cased, or ``ValueError`` when it is not three letters on three axes."""
    text = codes.upper()
    if len(text) != 3 or len({_world_axis(c)[0] for c in text}) != 3:
        raise ValueError(f"orientation {codes!r} must name each of L/R, P/A, I/S once")
    return text


@dataclass(frozen=True)
class Reorientation:
    """How to bring ``[c, z, y, x]`` arrays from one orientation to another and back.

    ``order_xyz[n]`` is the source axis (0 = i/x, 1 = j/y, 2 = k/z) that becomes target axis
    ``n``; ``flip_xyz[n]`` whether it is reversed on the way.
    """

    order_xyz: tuple[int, int, int]
    flip_xyz: tuple[bool, bool, bool]

    @property
    def identity(self) -> bool:
        return self.order_xyz == (0, 1, 2) and not any(self.flip_xyz)

    def spacing(self, spacing_xyz: Sequence[float]) -> tuple[float, float, float]:
        """Spacing (x, y, z) of the reoriented grid."""
        return (float(spacing_xyz[self.order_xyz[0]]), float(spacing_xyz[self.order_xyz[1]]),
                float(spacing_xyz[self.order_xyz[2]]))

    def forward(self, array: npt.NDArray[np.floating]) -> npt.NDArray[np.floating]:
        """``[..., z, y, x]`` in the source orientation → the same in the target one."""
        lead = array.ndim - 3
        # array axis of voxel axis a (x=0 → last) in a [..., z, y, x] array
        axes = [lead + 2 - self.order_xyz[n] for n in (2, 1, 0)]
        out = np.transpose(array, [*range(lead), *axes])
        for n in range(3):
            if self.flip_xyz[n]:
                out = np.flip(out, axis=lead + 2 - n)
        return np.ascontiguousarray(out)

    def backward(self, array: npt.NDArray[np.floating]) -> npt.NDArray[np.floating]:
        """Undo :meth:`forward`."""
        lead = array.ndim - 3
        out = array
        for n in range(3):
            if self.flip_xyz[n]:
                out = np.flip(out, axis=lead + 2 - n)
        # target axis n holds source axis order_xyz[n]; put each source axis back in place
        source_to_target = {self.order_xyz[n]: n for n in range(3)}
        axes = [lead + 2 - source_to_target[a] for a in (2, 1, 0)]
        return np.ascontiguousarray(np.transpose(out, [*range(lead), *axes]))


def plan_reorientation(direction: Sequence[float], target: str) -> Reorientation:
    """The permutation and flips that take a volume with ``direction`` to ``target`` codes."""
    source = axis_codes(direction)
    goal = check_codes(target)
    source_world = [_world_axis(c) for c in source]
    order: list[int] = []
    flips: list[bool] = []
    for letter in goal:
        world, sign = _world_axis(letter)
        axis = next(a for a, (w, _) in enumerate(source_world) if w == world)
        order.append(axis)
        flips.append(source_world[axis][1] != sign)
    return Reorientation((order[0], order[1], order[2]), (flips[0], flips[1], flips[2]))
