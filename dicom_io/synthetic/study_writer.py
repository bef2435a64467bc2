"""Write a phantom with vendor headers, extra sequences and the packagings sites produce.

``write_phantom_study`` keeps writing default phantoms exactly as before; this writer is
used when a spec asks for a vendor, new sequences, another packaging, ignored series or
non-co-registered grids. Packagings: one file per slice ("classic"), all dynamic phases in
one series told apart by TemporalPositionIdentifier and TriggerTime ("dynamic", as
PS3.3 C.7.6.1 intends), or one Legacy Converted Enhanced multi-frame file per series
("enhanced", built by highdicom so the functional groups are right).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import highdicom
import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, MRImageStorage

from dicom_io.synthetic import sequences, vendors, writer
from dicom_io.synthetic.anatomy import Phantom
from dicom_io.synthetic.render import SeriesGeometry

_GENERIC = vendors.VendorStyle("Hepatica Phantom", "Synthetic liver phantom",
                               "hepatica-phantom 2",
                               {k: f"T1 VIBE FS {k}" for k in sequences.DYNAMIC},
                               {}, "B30f")
_IGNORED = ("LOCALIZER", "SUB_AP", "MPR_PVP")  # series a selector must skip
_INJECTION = dt.timedelta(minutes=15)  # after the study starts: survey, T2, DWI come first


def write_study(phantom: Phantom, out_dir: Path, *, study_date: dt.date | None = None,
                patient_id: str | None = None, patient: dict[str, str] | None = None,
                truth_extra: dict[str, Any] | None = None) -> list[Path]:
    """Write every series of ``phantom`` under ``out_dir/dicom`` and truth beside it."""
    out_dir = Path(out_dir)
    base = writer._study_dataset(phantom, study_date or dt.date(2026, 1, 15), patient_id)
    style = vendors.style(phantom.spec.vendor) if phantom.spec.vendor else _GENERIC
    base.Manufacturer, base.ManufacturerModelName = style.manufacturer, style.model
    base.SoftwareVersions = style.software
    for keyword, value in (patient or {}).items():
        setattr(base, keyword, value)
    plan = _series_plan(phantom, style)
    written: list[Path] = []
    for folder, series in plan.items():
        datasets = list(series)
        written += _save(phantom, datasets, out_dir / "dicom" / folder, base)
    _write_truth(phantom, out_dir / "ground_truth", plan, truth_extra or {})
    return written


def needs_study_writer(phantom: Phantom) -> bool:
    """Anything beyond the historical layout (which ``write_phantom_study`` keeps)."""
    spec = phantom.spec
    return not (spec.is_default_drawing and spec.vendor is None and not spec.ignored_series
                and spec.packaging == "classic" and set(spec.phases) <= set(
                    writer.SERIES_BY_PHASE))


def _gadoxetic(phantom: Phantom) -> bool:
    return "HBP" in phantom.spec.phases


def _series_plan(phantom: Phantom, style: vendors.VendorStyle) -> dict[str, list[Dataset]]:
    """Folder → instances, in acquisition order; series numbers follow that order."""
    gx = _gadoxetic(phantom)
    order = sorted(phantom.spec.phases, key=lambda p: sequences.acquisition_minutes(p, gx))
    dynamic = phantom.spec.packaging == "dynamic" and phantom.spec.modality == "MR"
    plan: dict[str, list[Dataset]] = {}
    number = 1
    if phantom.spec.ignored_series:
        plan["LOCALIZER"] = _localizer(phantom, style)
        number += 1
    for phase in order:
        instances = _phase_instances(phantom, phase, style, number)
        if dynamic and phase in sequences.DYNAMIC:
            plan.setdefault("DYNAMIC", [])
            plan["DYNAMIC"] += instances
        else:
            plan[phase] = instances
        number += 1
    if dynamic and "DYNAMIC" in plan:
        _merge_dynamic(plan["DYNAMIC"], phantom, style)
    if phantom.spec.ignored_series:
        plan.update(_derived_series(phantom, style))
    return plan


def _description(style: vendors.VendorStyle, phantom: Phantom, phase: str) -> str:
    table = style.mr if phantom.spec.modality == "MR" else style.ct
    if phase in table:
        return table[phase]
    return writer.SERIES_BY_PHASE[phase][0] if phase in writer.SERIES_BY_PHASE else phase


def _grid(phantom: Phantom, phase: str) -> SeriesGeometry:
    own = phantom.geometry.get(phase)
    if own is not None:
        return own
    shape = phantom.labels.shape
    return SeriesGeometry(phantom.origin, phantom.spacing, (shape[0], shape[1], shape[2]))


def _phase_instances(phantom: Phantom, phase: str, style: vendors.VendorStyle,
                     number: int) -> list[Dataset]:
    volume = phantom.phases[phase]
    stored, slope, intercept = writer._to_stored(volume, phantom.spec.modality)
    grid = _grid(phantom, phase)
    uid = writer._uid(phantom.seed, "series", phantom.spec.course.index if phantom.spec.course
                      else 0, phase, phantom.spec.vendor, phantom.spec.packaging)
    out = []
    for k in range(volume.shape[0]):
        ds = _image(phantom, stored[k], grid, k, uid)
        ds.SeriesDescription, ds.SeriesNumber = _description(style, phantom, phase), number
        if phantom.spec.modality == "CT":
            ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = slope, intercept, "HU"
            _ct_fields(ds, phantom, phase, style)
        else:
            _mr_fields(ds, phase)
        _timing(ds, phantom, phase)
        vendors.add_private(ds, phantom.spec.vendor or "", sequences.sequence(phase).b_value)
        out.append(ds)
    return out


def _image(phantom: Phantom, pixels: npt.NDArray[np.uint16], grid: SeriesGeometry, k: int,
           series_uid: str, orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
           position: tuple[float, float, float] | None = None) -> Dataset:
    ct = phantom.spec.modality == "CT"
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage if ct else MRImageStorage
    ds.SOPInstanceUID = writer._uid(phantom.seed, "sop", series_uid, k)
    ds.file_meta = writer._file_meta(ds.SOPClassUID, ds.SOPInstanceUID)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.Modality = phantom.spec.modality
    ds.SeriesInstanceUID = series_uid
    ds.InstanceNumber, ds.AcquisitionNumber = k + 1, 1
    pos = position or (grid.origin[0], grid.origin[1], grid.origin[2] + k * grid.spacing[2])
    ds.ImagePositionPatient = [round(float(v), 4) for v in pos]
    ds.ImageOrientationPatient = list(orientation)
    ds.PixelSpacing = [grid.spacing[1], grid.spacing[0]]
    ds.SliceThickness = grid.spacing[2]
    ds.SliceLocation = round(float(pos[2]), 4)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds.WindowCenter, ds.WindowWidth = ("60", "400") if ct else ("500", "1000")
    return ds


def _mr_fields(ds: Dataset, phase: str) -> None:
    seq = sequences.sequence(phase)
    ds.ImageType = {"dwi": ["ORIGINAL", "PRIMARY", "DIFFUSION", "TRACEW"],
                    "adc": ["DERIVED", "PRIMARY", "DIFFUSION", "ADC"]}.get(
        seq.family, ["ORIGINAL", "PRIMARY", "M", "ND"])
    ds.ScanningSequence, ds.SequenceVariant = list(seq.scanning), list(seq.variant)
    ds.ScanOptions = list(seq.options) if seq.options else ""
    ds.MRAcquisitionType = seq.acquisition
    ds.RepetitionTime, ds.EchoTime, ds.FlipAngle = seq.tr_ms, seq.te_ms, seq.flip
    ds.EchoTrainLength, ds.EchoNumbers = seq.echo_train, seq.echo_number
    ds.MagneticFieldStrength, ds.ImagingFrequency, ds.ImagedNucleus = 1.5, 63.6, "1H"
    ds.SpacingBetweenSlices = ds.SliceThickness
    ds.SequenceName = {"dynamic": "*fl3d1", "hbp": "*fl3d1", "t2": "*tse2d1_20",
                       "dual_echo": "*fl2d2", "dwi": "*ep_b", "adc": "*ep_b"}[seq.family]
    if seq.b_value is not None:
        ds.SequenceName = f"*ep_b{seq.b_value}t"
        ds.DiffusionBValue = float(seq.b_value)
        ds.DiffusionDirectionality = "ISOTROPIC"
    if seq.family == "adc":
        ds.WindowCenter, ds.WindowWidth = "1200", "2400"


def _ct_fields(ds: Dataset, phantom: Phantom, phase: str, style: vendors.VendorStyle) -> None:
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.KVP = 100 if phase == "CT_AP" else 120  # low kV in the arterial phase boosts iodine
    ds.ConvolutionKernel = style.kernel
    ma = int(phantom.spec.ct_tube_current_ma or 200)
    ds.XRayTubeCurrent, ds.ExposureTime, ds.Exposure = ma, 500, ma // 2
    ds.CTDIvol = round(0.06 * ma, 2)


def _timing(ds: Dataset, phantom: Phantom, phase: str) -> None:
    gx = _gadoxetic(phantom)
    start = dt.datetime.strptime(ds.get("StudyDate", "20260115") + "093000", "%Y%m%d%H%M%S")
    injection = start + _INJECTION
    acquired = injection + dt.timedelta(minutes=sequences.acquisition_minutes(phase, gx))
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = acquired.strftime("%H%M%S.%f")[:13]
    if sequences.post_contrast(phase, gx):
        agent = ("Iohexol" if phantom.spec.modality == "CT"
                 else "Gadoxetate disodium" if gx else "Gadoterate meglumine")
        ds.ContrastBolusAgent, ds.ContrastBolusRoute = agent, "IV"
        ds.ContrastBolusStartTime = injection.strftime("%H%M%S")


def _merge_dynamic(instances: list[Dataset], phantom: Phantom,
                   style: vendors.VendorStyle) -> None:
    """One series for all dynamic phases, ordered in time (PS3.3 C.7.6.1.1 TPI)."""
    uid = writer._uid(phantom.seed, "series-dynamic", phantom.spec.vendor,
                      phantom.spec.course.index if phantom.spec.course else 0)
    times = sorted({str(ds.AcquisitionTime) for ds in instances})
    number = min(int(ds.SeriesNumber) for ds in instances)
    for n, ds in enumerate(sorted(instances, key=lambda d: (str(d.AcquisitionTime),
                                                           int(d.InstanceNumber)))):
        position = times.index(str(ds.AcquisitionTime)) + 1
        ds.SeriesInstanceUID, ds.SeriesNumber = uid, number
        ds.SeriesDescription = style.mr.get("DYNAMIC", "T1 VIBE FS DYNAMIC")
        ds.SOPInstanceUID = writer._uid(phantom.seed, "sop", uid, n)
        ds.file_meta = writer._file_meta(ds.SOPClassUID, ds.SOPInstanceUID)
        ds.InstanceNumber, ds.AcquisitionNumber = n + 1, position
        ds.TemporalPositionIdentifier, ds.NumberOfTemporalPositions = position, len(times)
        # GE also writes TriggerTime here, but the classic MR Image IOD allows it only with
        # cardiac gating (dciodvfy errors): AcquisitionTime carries the delay instead
        ds.SeriesTime = times[0]
        ds.ContrastBolusAgent = ds.get("ContrastBolusAgent") or (
            "Gadoxetate disodium" if _gadoxetic(phantom) else "Gadoterate meglumine")


def _localizer(phantom: Phantom, style: vendors.VendorStyle) -> list[Dataset]:
    """A three-plane survey: axial, coronal and sagittal through the middle of the body."""
    ref = phantom.phases[phantom.spec.phases[0]]
    stored, _, _ = writer._to_stored(ref, phantom.spec.modality)
    uid = writer._uid(phantom.seed, "series-localizer", phantom.spec.vendor)
    sz, sy, sx = (s // 2 for s in stored.shape)
    ox, oy, oz = phantom.origin
    dx, dy, dz = phantom.spacing
    planes = [
        (stored[sz], (1, 0, 0, 0, 1, 0), (ox, oy, oz + sz * dz), (dx, dy)),
        (stored[::-1, sy, :], (1, 0, 0, 0, 0, -1), (ox, oy + sy * dy, oz + (stored.shape[0] - 1)
                                                    * dz), (dx, dz)),
        (stored[::-1, :, sx], (0, 1, 0, 0, 0, -1), (ox + sx * dx, oy, oz + (stored.shape[0] - 1)
                                                    * dz), (dy, dz)),
    ]
    out = []
    for k, (pixels, orientation, position, spacing) in enumerate(planes):
        grid = SeriesGeometry(phantom.origin, (spacing[0], spacing[1], 10.0), (1, 1, 1))
        ds = _image(phantom, np.ascontiguousarray(pixels), grid, k, uid, orientation, position)
        _fill_required(ds, phantom, style)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        key = "LOCALIZER" if phantom.spec.modality == "MR" else "CT_LOCALIZER"
        ds.SeriesDescription, ds.SeriesNumber = style.extra.get(key, "localizer"), 1
        out.append(ds)
    return out


def _fill_required(ds: Dataset, phantom: Phantom, style: vendors.VendorStyle) -> None:
    if phantom.spec.modality == "CT":
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = "1", "-1024", "HU"
        _ct_fields(ds, phantom, "CT_NC", style)
    else:
        _mr_fields(ds, "PRE")
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = "093100"


def _derived_series(phantom: Phantom, style: vendors.VendorStyle) -> dict[str, list[Dataset]]:
    """Subtraction (AP − PRE, MR) and a coronal MPR of the portal phase: both to ignore."""
    out: dict[str, list[Dataset]] = {}
    mr = phantom.spec.modality == "MR"
    pre, art, pv = ("PRE", "AP", "PVP") if mr else ("CT_NC", "CT_AP", "CT_PVP")
    phases = phantom.phases
    if mr and {pre, art} <= set(phases) and phases[pre].shape == phases[art].shape:
        sub = _phase_instances(phantom, art, style, 90)
        diff = np.clip(phases[art] - phases[pre], 0, 4095)
        stored, _, _ = writer._to_stored(np.asarray(diff, np.float32), "MR")
        uid = writer._uid(phantom.seed, "series-sub", phantom.spec.vendor)
        for k, ds in enumerate(sub):
            ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
            ds.ImageType = ["DERIVED", "PRIMARY", "SUBTRACTION"]
            ds.SeriesDescription = style.extra.get("SUB", "T1 VIBE FS ARTERIAL SUB")
            _renumber(ds, phantom, uid, k)
        out["SUB_AP"] = sub
    if pv in phases:
        out["MPR_PVP"] = _mpr(phantom, pv, style)
    return out


def _renumber(ds: Dataset, phantom: Phantom, uid: str, k: int) -> None:
    ds.SeriesInstanceUID = uid
    ds.SOPInstanceUID = writer._uid(phantom.seed, "sop", uid, k)
    ds.file_meta = writer._file_meta(ds.SOPClassUID, ds.SOPInstanceUID)


def _mpr(phantom: Phantom, phase: str, style: vendors.VendorStyle) -> list[Dataset]:
    volume = phantom.phases[phase]
    if phase in phantom.geometry and volume.shape != phantom.labels.shape:
        return []
    stored, slope, intercept = writer._to_stored(volume, phantom.spec.modality)
    uid = writer._uid(phantom.seed, "series-mpr", phantom.spec.vendor)
    ox, oy, oz = phantom.origin
    dx, dy, dz = phantom.spacing
    top = oz + (stored.shape[0] - 1) * dz
    grid = SeriesGeometry(phantom.origin, (dx, dz, 3 * dy), (1, 1, 1))
    out = []
    for k, j in enumerate(range(stored.shape[1] // 3, 2 * stored.shape[1] // 3, 12)):
        ds = _image(phantom, np.ascontiguousarray(stored[::-1, j, :]), grid, k, uid,
                    (1, 0, 0, 0, 0, -1), (ox, oy + j * dy, top))
        _fill_required(ds, phantom, style)
        if phantom.spec.modality == "CT":
            ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.ImageType = ["DERIVED", "SECONDARY", "MPR"]
        ds.SeriesDescription = style.extra.get("MPR", "PVP COR MPR")
        ds.SeriesNumber = 91
        out.append(ds)
    return out


def _save(phantom: Phantom, datasets: list[Dataset], folder: Path, base: Dataset) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for ds in datasets:
        for element in base:
            if element.tag not in ds:
                ds.add(element)
        ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = base.StudyDate
    enhanced = (phantom.spec.packaging == "enhanced" and len(datasets) > 1
                and folder.name not in _IGNORED)
    if enhanced:
        return [_save_enhanced(phantom, datasets, folder)]
    paths = []
    for k, ds in enumerate(datasets):
        path = folder / f"{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _save_enhanced(phantom: Phantom, datasets: list[Dataset], folder: Path) -> Path:
    """One Legacy Converted Enhanced MR/CT instance holding every slice as a frame."""
    legacy = highdicom.legacy
    cls: Any = (legacy.LegacyConvertedEnhancedMRImage if phantom.spec.modality == "MR"
                else legacy.LegacyConvertedEnhancedCTImage)
    first = datasets[0]
    uid = writer._uid(phantom.seed, "series-enhanced", first.SeriesInstanceUID)
    image = cls(datasets, series_instance_uid=uid, series_number=int(first.SeriesNumber),
                sop_instance_uid=writer._uid(phantom.seed, "sop", uid, 0), instance_number=1)
    # the classic sources are never stored, so references to them would dangle
    del image.ReferencedSeriesSequence
    for group in image.PerFrameFunctionalGroupsSequence:
        del group.ConversionSourceAttributesSequence
    path = folder / "0001.dcm"
    image.save_as(path, enforce_file_format=True)
    return path


def _write_truth(phantom: Phantom, out_dir: Path, plan: dict[str, list[Dataset]],
                 extra: dict[str, Any]) -> None:
    """The default truth files plus series geometry, findings and the time point."""
    writer.write_ground_truth(phantom, out_dir)
    path = out_dir / "truth.json"
    truth = json.loads(path.read_text())
    truth["series"] = {folder: _series_truth(phantom, folder, items)
                       for folder, items in plan.items() if items}
    truth["findings"] = phantom.findings
    truth["vendor"] = phantom.spec.vendor
    truth["packaging"] = phantom.spec.packaging
    truth.update(extra)
    path.write_text(json.dumps(truth, indent=2))


def _series_truth(phantom: Phantom, folder: str, items: Iterable[Dataset]) -> dict[str, Any]:
    first = next(iter(items))
    out: dict[str, Any] = {"description": str(first.SeriesDescription),
                           "series_number": int(first.SeriesNumber),
                           "ignore": folder in _IGNORED}
    geo = phantom.geometry.get(folder)
    if geo is not None:
        out.update(origin=list(geo.origin), spacing=list(geo.spacing), shape=list(geo.shape),
                   motion_mm=list(geo.shift_mm))
    return out
