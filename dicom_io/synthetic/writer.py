"""Write a phantom as a real DICOM study (MR Image or CT Image Storage, one file a slice).

UIDs are derived from the seed, so the same seed always gives the same study: tests and
demos can be re-run and a PACS sees the same instances again, not new ones.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

from dicom_io.synthetic.anatomy import Phantom

_UID_ROOT = "1.2.826.0.1.3680043.10.1456."  # Hepatica's synthetic-data UID prefix

_MR_SERIES = {  # phase → (description, minutes after injection or None, series number)
    "PRE": ("T1 VIBE FS PRE", None, 3),
    "AP": ("T1 VIBE FS ARTERIAL", 0.33, 4),
    "PVP": ("T1 VIBE FS PORTAL VENOUS", 1.17, 5),
    "DP": ("T1 VIBE FS DELAYED", 3.0, 6),
}
_CT_SERIES = {
    "CT_NC": ("CT NON-CONTRAST", None, 2),
    "CT_AP": ("CT ARTERIAL", 0.58, 3),
    "CT_PVP": ("CT PORTAL VENOUS", 1.17, 4),
}
SERIES_BY_PHASE = {**_MR_SERIES, **_CT_SERIES}


def _uid(seed: int, *parts: object) -> str:
    return generate_uid(_UID_ROOT, entropy_srcs=["hepatica-phantom", str(seed), *map(str, parts)])


def write_phantom_study(phantom: Phantom, out_dir: Path, *, study_date: dt.date | None = None,
                        patient_id: str | None = None) -> list[Path]:
    """Write every phase as a series under ``out_dir/dicom/`` plus ``out_dir/ground_truth/``.

    Specs that use an issue-3 feature (vendor, sequences, packaging, …) go to
    ``study_writer.write_study``; default phantoms are written exactly as they always were.
    """
    from dicom_io.synthetic import study_writer

    if study_writer.needs_study_writer(phantom):
        return study_writer.write_study(phantom, out_dir, study_date=study_date,
                                        patient_id=patient_id)
    out_dir = Path(out_dir)
    written: list[Path] = []
    base = _study_dataset(phantom, study_date or dt.date(2026, 1, 15), patient_id)
    for phase in phantom.spec.phases:
        series_dir = out_dir / "dicom" / phase
        series_dir.mkdir(parents=True, exist_ok=True)
        written += _write_series(phantom, phase, base, series_dir)
    write_ground_truth(phantom, out_dir / "ground_truth")
    return written


def _study_dataset(phantom: Phantom, date: dt.date, patient_id: str | None) -> Dataset:
    ds = Dataset()
    ds.PatientName = f"PHANTOM^{phantom.seed:04d}"
    ds.PatientID = patient_id or f"HEPPH{phantom.seed:05d}"
    ds.PatientBirthDate = f"{1950 + phantom.seed % 30}0101"
    ds.PatientSex = "M" if phantom.seed % 3 else "F"
    ds.StudyInstanceUID = _uid(phantom.seed, "study", ds.PatientID, date.isoformat())
    ds.StudyDate = date.strftime("%Y%m%d")
    ds.StudyTime = "093000"
    ds.StudyID = f"{phantom.seed % 100000}"
    ds.AccessionNumber = f"ACC{phantom.seed:06d}"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "LIVER MRI DYNAMIC" if phantom.spec.modality == "MR" else "CT LIVER"
    ds.Manufacturer = "Hepatica Phantom"
    ds.ManufacturerModelName = "Synthetic liver phantom"
    ds.SoftwareVersions = "hepatica-phantom 1"
    ds.BodyPartExamined = "LIVER"
    ds.PatientPosition = "FFS" if phantom.spec.modality == "MR" else "HFS"
    ds.FrameOfReferenceUID = _uid(phantom.seed, "for", ds.StudyInstanceUID)
    ds.PositionReferenceIndicator = ""
    return ds


def _write_series(phantom: Phantom, phase: str, base: Dataset, series_dir: Path) -> list[Path]:
    description, minutes, number = SERIES_BY_PHASE[phase]
    series_uid = _uid(phantom.seed, "series", base.StudyInstanceUID, phase)
    volume = phantom.phases[phase]
    stored, slope, intercept = _to_stored(volume, phantom.spec.modality)
    paths = []
    for k in range(volume.shape[0]):
        ds = _slice_dataset(phantom, phase, base, k, stored[k], series_uid)
        ds.SeriesDescription, ds.SeriesNumber = description, number
        if phantom.spec.modality == "CT":  # the MR Image IOD has no rescale attributes
            ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = slope, intercept, "HU"
        _set_timing(ds, base, minutes)
        path = series_dir / f"{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _to_stored(volume: npt.NDArray[np.float32], modality: str) -> tuple[npt.NDArray[np.uint16],
                                                                          str, str]:
    if modality == "CT":  # HU stored with the conventional -1024 intercept
        stored = np.clip(np.rint(volume + 1024), 0, 4095).astype(np.uint16)
        return stored, "1", "-1024"
    return np.clip(np.rint(volume), 0, 4095).astype(np.uint16), "1", "0"


def _slice_dataset(phantom: Phantom, phase: str, base: Dataset, k: int,
                   pixels: npt.NDArray[np.uint16], series_uid: str) -> Dataset:
    ct = phantom.spec.modality == "CT"
    ds = Dataset()
    ds.update(base)
    sop_class = CTImageStorage if ct else MRImageStorage
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = _uid(phantom.seed, "sop", series_uid, k)
    ds.file_meta = _file_meta(sop_class, ds.SOPInstanceUID)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.Modality = phantom.spec.modality
    ds.SeriesInstanceUID = series_uid
    ds.InstanceNumber = k + 1
    ds.AcquisitionNumber = 1
    ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = base.StudyDate
    ds.ImagePositionPatient = [round(float(v), 4) for v in _position(phantom, k)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [phantom.spacing[1], phantom.spacing[0]]
    ds.SliceThickness = phantom.spacing[2]
    ds.SliceLocation = round(float(ds.ImagePositionPatient[2]), 4)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds.WindowCenter, ds.WindowWidth = ("60", "400") if ct else ("500", "1000")
    (_ct_attributes if ct else _mr_attributes)(ds, phase)
    return ds


def _position(phantom: Phantom, k: int) -> tuple[float, float, float]:
    ox, oy, oz = phantom.origin
    return ox, oy, oz + k * phantom.spacing[2]


def _file_meta(sop_class: str, sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def _mr_attributes(ds: Dataset, phase: str) -> None:
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.ScanningSequence, ds.SequenceVariant = "GR", ["SP", "SK"]
    ds.ScanOptions, ds.MRAcquisitionType = "FS", "3D"
    ds.RepetitionTime, ds.EchoTime, ds.FlipAngle = 3.9, 1.4, 10
    ds.EchoTrainLength, ds.MagneticFieldStrength = 1, 1.5
    ds.ImagingFrequency, ds.ImagedNucleus = 63.6, "1H"
    ds.SpacingBetweenSlices = ds.SliceThickness
    ds.SequenceName = "*fl3d1"


def _ct_attributes(ds: Dataset, phase: str) -> None:
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.KVP, ds.ConvolutionKernel = 120, "B30f"
    ds.XRayTubeCurrent, ds.ExposureTime = 200, 500
    ds.PixelRepresentation = 0


def _set_timing(ds: Dataset, base: Dataset, minutes: float | None) -> None:
    start = dt.datetime.strptime(base.StudyDate + base.StudyTime, "%Y%m%d%H%M%S")
    injection = start + dt.timedelta(minutes=5)
    acquired = injection + dt.timedelta(minutes=minutes) if minutes is not None else start
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = acquired.strftime("%H%M%S")
    if minutes is not None:
        ds.ContrastBolusAgent = "Gadoterate meglumine" if ds.Modality == "MR" else "Iohexol"
        ds.ContrastBolusStartTime = injection.strftime("%H%M%S")
        ds.ContrastBolusRoute = "IV"


def write_ground_truth(phantom: Phantom, out_dir: Path) -> None:
    """NIfTI label map on the arterial grid and a JSON of lesion truth."""
    out_dir.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(phantom.labels)
    image.SetSpacing(phantom.spacing)
    image.SetOrigin(phantom.origin)
    image.SetDirection(phantom.direction)
    sitk.WriteImage(image, str(out_dir / "segmentation.nii.gz"), useCompression=True)
    truth = {
        "seed": phantom.seed,
        "modality": phantom.spec.modality,
        "labels": {"0": "background", "1": "liver", "2": "tumour"},
        "grid_series": "AP" if phantom.spec.modality == "MR" else "CT_AP",
        "liver_volume_ml": float((phantom.labels > 0).sum() * np.prod(phantom.spacing) / 1000),
        "lesions": [asdict(lesion) for lesion in phantom.lesions],
    }
    (out_dir / "truth.json").write_text(json.dumps(truth, indent=2))


def read_slice(path: Path) -> Dataset:
    """Convenience for tests: read one written slice."""
    return pydicom.dcmread(path)
