"""Helpers shared by the export tests (a unique module name, unlike conftest)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from export.common import AlgorithmInfo

DCIODVFY = "/usr/bin/dciodvfy"
ALGORITHM = AlgorithmInfo(name="hepatica-liver-seg", version="0.1.0", family="segmentation")
SOFTWARE_VERSIONS = "hepatica 0.1.0; bundle liver-seg 0.1.0"


@dataclass(frozen=True)
class Lesion:
    """A frozen lesion record shaped like inference's LesionMeasurement."""

    label: int
    volume_ml: float
    longest_diameter_mm: float
    viable_diameter_mm: float
    centroid_zyx: tuple[float, float, float]
    longest_diameter_endpoints_zyx: (
        tuple[tuple[float, float, float], tuple[float, float, float]] | None
    ) = None


def write_and_read(dataset: Dataset, path: Path) -> Dataset:
    """Write ``dataset`` as a DICOM file and read it back, as an archive would."""
    dataset.save_as(path, enforce_file_format=True)
    return pydicom.dcmread(path)


def dciodvfy_errors(path: Path) -> list[str]:
    """Lines of ``dciodvfy`` output that report an error (warnings are allowed)."""
    result = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, check=False)
    lines = (result.stdout + result.stderr).splitlines()
    return [line for line in lines if "Error" in line]


needs_dciodvfy = pytest.mark.skipif(
    shutil.which(DCIODVFY) is None, reason="dicom3tools' dciodvfy is not installed"
)
