"""A 3-D image with its patient-space geometry, the value the rooms exchange."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import SimpleITK as sitk


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


def to_sitk(volume: Volume) -> sitk.Image:
    """The volume as a SimpleITK image with its geometry."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array, dtype=np.float32))
    image.SetSpacing(volume.spacing)
    image.SetOrigin(volume.origin)
    image.SetDirection(volume.direction)
    return image


def resample_like(volume: Volume, reference: Volume, default: float | None = None) -> Volume:
    """``volume`` resampled (linear) onto ``reference``'s grid in patient space.

    Phases of one examination share a frame of reference but not always a grid (other FOV,
    matrix or slice positions); models need them voxel-aligned.
    """
    import SimpleITK as sitk

    if (volume.shape == reference.shape and np.allclose(volume.spacing, reference.spacing)
            and np.allclose(volume.origin, reference.origin, atol=1e-3)
            and np.allclose(volume.direction, reference.direction, atol=1e-6)):
        return Volume(volume.array, reference.spacing, reference.origin, reference.direction,
                      reference.sop_instance_uids)
    fill = float(volume.array.min()) if default is None else default
    out = sitk.Resample(to_sitk(volume), to_sitk(reference), sitk.Transform(), sitk.sitkLinear,
                        fill, sitk.sitkFloat32)
    return Volume(sitk.GetArrayFromImage(out), reference.spacing, reference.origin,
                  reference.direction, reference.sop_instance_uids)
