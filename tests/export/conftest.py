"""Fixtures for the export tests: a small synthetic MR series and helpers.

The source images are built here with pydicom (no data files), with real
geometry: 8 axial slices of 64 x 64 pixels, 1.5 mm pixels, 3 mm apart.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest
from export_testutils import Lesion
from pydicom import config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

N_SLICES, ROWS, COLS = 8, 64, 64


@pytest.fixture(autouse=True)
def strict_pydicom() -> Iterator[None]:
    """Raise on invalid values when reading and writing, as highdicom's tests do (for each
    export test only: other rooms' tests write invalid values on purpose)."""
    saved = (config.settings.reading_validation_mode, config.settings.writing_validation_mode)
    config.settings.reading_validation_mode = config.RAISE
    config.settings.writing_validation_mode = config.RAISE
    yield
    config.settings.reading_validation_mode, config.settings.writing_validation_mode = saved


def _slice(index: int, study: str, series: str, frame: str) -> Dataset:
    """One MR slice with the modules a derived object needs to reference it."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Phantom^Liver"
    ds.PatientID = "PH0001"
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240102", "101500", "1", "ACC1"
    ds.ReferringPhysicianName = ""
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "MR", 5, index + 1
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "Phantom"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.PixelSpacing = [1.5, 1.5]
    ds.SliceThickness = 3.0
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-48.0, -48.0, 3.0 * index]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = ROWS, COLS
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    rng = np.random.default_rng(index)
    ds.PixelData = rng.integers(0, 1000, (ROWS, COLS), dtype=np.uint16).tobytes()
    ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "GR", "SP", ""
    ds.MRAcquisitionType, ds.EchoTrainLength = "3D", 1
    ds.RepetitionTime, ds.EchoTime, ds.MagneticFieldStrength = 4.0, 2.0, 1.5
    return ds


@pytest.fixture(scope="session")
def source_images() -> list[Dataset]:
    """Eight slices of one MR series, in z order."""
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    return [_slice(i, study, series, frame) for i in range(N_SLICES)]


@pytest.fixture(scope="session")
def liver_mask() -> npt.NDArray[np.bool_]:
    """A box-shaped liver on slices 1-6."""
    mask = np.zeros((N_SLICES, ROWS, COLS), dtype=bool)
    mask[1:7, 10:50, 8:52] = True
    return mask


@pytest.fixture(scope="session")
def lesion_labels() -> npt.NDArray[np.int16]:
    """Two lesions inside the liver: lesion 1 on slices 2-3, lesion 2 on 4-5."""
    labels = np.zeros((N_SLICES, ROWS, COLS), dtype=np.int16)
    labels[2:4, 20:28, 20:27] = 1
    labels[4:6, 35:41, 33:40] = 2
    return labels


@pytest.fixture(scope="session")
def lesions() -> list[Lesion]:
    """Measurements matching ``lesion_labels``: each diameter joins opposite corners of the
    lesion's box on its first slice (1.5 mm pixels); the other values only need to round-trip."""
    one = ((2.0, 20.0, 20.0), (2.0, 27.0, 26.0))
    two = ((4.0, 40.0, 33.0), (4.0, 35.0, 39.0))
    return [
        Lesion(1, 0.756, 1.5 * math.hypot(7, 6), 9.5, (2.5, 23.5, 23.0), one),
        Lesion(2, 0.567, 1.5 * math.hypot(5, 6), 0.0, (4.5, 37.5, 36.0), two),
    ]
