"""A 3-D image with its patient-space geometry, the value the rooms exchange."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Volume:
    """Voxels indexed ``[z, y, x]`` (SimpleITK's array order) with ITK geometry.

    ``spacing`` and ``origin`` are in (x, y, z) order, millimetres, DICOM patient
    coordinates (LPS). ``direction`` is the row-major 3x3 matrix whose *columns* are
    the x (row), y (column) and z (slice normal) axes, as SimpleITK stores it.
    ``sop_instance_uids`` lists the source instance of each z-slice, in order, so that
    results can reference exactly the images they were computed from.
    """

    array: npt.NDArray[np.float32]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    sop_instance_uids: tuple[str, ...] = field(default=())

    @property
    def shape(self) -> tuple[int, int, int]:
        z, y, x = self.array.shape
        return int(z), int(y), int(x)

    def index_to_patient(self, zyx: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Patient coordinates (mm, LPS) of voxel indices given as ``[z, y, x]`` rows."""
        idx = np.atleast_2d(np.asarray(zyx, dtype=np.float64))[:, ::-1]
        d = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)
        scaled = idx * np.asarray(self.spacing)
        out: npt.NDArray[np.float64] = np.asarray(self.origin) + scaled @ d.T
        return out
