"""Sort a study's instances into series, and series into geometrically checked volumes.

A model fed a volume with a missing slice or a mixed orientation gives confident nonsense,
so :func:`series_to_volume` refuses such input with a :class:`GeometryError` that says
what is wrong instead of stacking silently. Geometry follows PS3.3 C.7.6.2 (Image Plane
Module) and, for Enhanced CT/MR, the Plane Position/Orientation and Pixel Measures
functional group macros (PS3.3 C.7.6.16.2).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dicom_io.log_redaction import redact_library_warnings
from dicom_io.repair import repair_values
from dicom_io.sop_classes import is_volume_image
from dicom_io.volume import Volume

__all__ = [
    "GeometryError",
    "SeriesInstances",
    "load_study",
    "series_to_volume",
    "split_series",
    "split_volumes",
]

log = logging.getLogger(__name__)

# Values larger than this (pixel data, big private blobs) are read only when accessed, so
# sorting a study into series costs little more than reading headers.
_DEFER_BYTES = 16 * 1024
_ORIENTATION_TOL = 1e-4
_PIXEL_SPACING_TOL_MM = 1e-4

FloatArray = npt.NDArray[np.float64]


class GeometryError(ValueError):
    """The instances do not form one regular 3-D grid; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SeriesInstances:
    """The instances of one series, sorted by Instance Number, with the files they came from.

    Datasets are read with deferred pixel data: touching ``pixel_array`` reads the file.
    """

    series_uid: str
    modality: str
    description: str
    series_number: int | None
    datasets: tuple[Dataset, ...]
    paths: tuple[Path, ...]
    temporal_position: int | None = None
    """Set on one phase of a multi-phase series (see :func:`split_series`): only the frames
    of that temporal position form its volume."""
    temporal_count: int = 1
    repairs: tuple[str, ...] = ()
    """Header values repaired or removed at load time (keyword and what was done, never the
    value), for the report; see :mod:`dicom_io.repair`."""

    @property
    def is_image(self) -> bool:
        """True when the series holds images a volume may be built from (CT/MR/PET classes;
        a series without SOPClassUID is trusted). SEG, SR, KO, PR, PDF, SC are not."""
        sop_class = self.first.get("SOPClassUID")
        return sop_class is None or is_volume_image(sop_class)

    @property
    def first(self) -> Dataset:
        return self.datasets[0]

    @property
    def key(self) -> str:
        """The SeriesInstanceUID, with ``#t<n>`` for one phase of a multi-phase series."""
        if self.temporal_position is None:
            return self.series_uid
        return f"{self.series_uid}#t{self.temporal_position}"


def load_study(study_dir: Path) -> list[SeriesInstances]:
    """All DICOM files under ``study_dir`` grouped by SeriesInstanceUID.

    Files that are not DICOM (no Part 10 preamble), temporary files and files without a
    SeriesInstanceUID are skipped with a debug log line. Series are ordered by Series
    Number, then UID, so that runs are reproducible.
    """
    redact_library_warnings()
    groups: dict[str, list[tuple[Dataset, Path]]] = defaultdict(list)
    repairs: dict[str, list[str]] = defaultdict(list)
    for path in _candidate_files(Path(study_dir)):
        ds = _read_header(path)
        if ds is not None:
            uid = str(ds.SeriesInstanceUID)
            groups[uid].append((ds, path))
            repairs[uid] += [n for n in _repair(ds) if n not in repairs[uid]]
    series = [replace(_make_series(uid, members), repairs=tuple(repairs[uid]))
              for uid, members in groups.items()]
    return sorted(series, key=lambda s: (s.series_number is None, s.series_number or 0,
                                         s.series_uid))


def _candidate_files(root: Path) -> Iterable[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.startswith(".") and path.suffix != ".txt":
            yield path


def _read_header(path: Path) -> Dataset | None:
    try:
        ds = pydicom.dcmread(path, defer_size=_DEFER_BYTES)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        log.debug("skipping %s: %s", path.name, type(exc).__name__)
        return None
    if "SeriesInstanceUID" not in ds:
        log.debug("skipping %s: no SeriesInstanceUID", path.name)
        return None
    _identity_from_meta(ds)
    return ds


def _identity_from_meta(ds: Dataset) -> None:
    """SOP Class/Instance UID from the file meta when the data set omits them.

    Real archives send such files (the UIDs only in the Part 10 header); every consumer,
    highdicom's references included, reads the data set's own attributes.
    """
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        return
    if "SOPClassUID" not in ds and meta.get("MediaStorageSOPClassUID"):
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
    if "SOPInstanceUID" not in ds and meta.get("MediaStorageSOPInstanceUID"):
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID


def _repair(ds: Dataset) -> list[str]:
    """Repair values strict libraries refuse (see :mod:`dicom_io.repair`); log keywords only."""
    try:
        notes = repair_values(ds)
    except Exception as exc:  # a header too odd to repair is still loaded as it is
        log.warning("could not check header values of instance …%s (%s)",
                    str(ds.get("SOPInstanceUID", ""))[-12:], type(exc).__name__)
        return []
    if notes:
        log.info("instance …%s: %s", str(ds.get("SOPInstanceUID", ""))[-12:], "; ".join(notes))
    return notes


def _make_series(uid: str, members: list[tuple[Dataset, Path]]) -> SeriesInstances:
    members.sort(key=lambda m: (_int_or_none(m[0].get("InstanceNumber")) or 0,
                                str(m[0].get("SOPInstanceUID", ""))))
    first = members[0][0]
    return SeriesInstances(
        series_uid=uid,
        modality=str(first.get("Modality", "")),
        description=str(first.get("SeriesDescription", "")),
        series_number=_int_or_none(first.get("SeriesNumber")),
        datasets=tuple(m[0] for m in members),
        paths=tuple(m[1] for m in members),
    )


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class _Frame:
    """One 2-D image with its plane geometry: a classic instance or one enhanced frame."""

    position: tuple[float, float, float]
    orientation: tuple[float, ...]
    pixel_spacing: tuple[float, float]
    shape: tuple[int, int]
    slope: float
    intercept: float
    sop_uid: str
    source: Dataset
    frame_index: int | None
    temporal: tuple[int, str] = (0, "")  # (temporal position, acquisition time)


def series_to_volume(
    datasets: Sequence[Dataset] | SeriesInstances,
    *,
    rel_tol: float = 0.01,
    abs_tol_mm: float = 0.01,
) -> Volume:
    """Stack a series into a float32 :class:`Volume` with rescale applied.

    Slices are sorted along the normal of the image plane (row x column direction), the
    origin is the first slice's ImagePositionPatient, and spacing between slices must be
    regular within ``max(abs_tol_mm, rel_tol * step)``. Raises :class:`GeometryError` for
    fewer than two slices, mixed orientations, sizes or pixel spacings, duplicate
    positions, missing slices, uneven spacing, slices not stacked along the normal, or
    objects that are not CT/MR/PET images (SEG, SR, secondary capture, parametric map …).
    """
    items = datasets.datasets if isinstance(datasets, SeriesInstances) else datasets
    for ds in items:
        sop_class = ds.get("SOPClassUID")
        if sop_class is not None and not is_volume_image(sop_class):
            name = getattr(sop_class, "name", "") or str(sop_class)
            raise GeometryError(f"not an image series a volume can be built from ({name})")
    frames = [frame for ds in items for frame in _frames_of(ds)]
    position = datasets.temporal_position if isinstance(datasets, SeriesInstances) else None
    if position is not None and any(f.frame_index is not None for f in frames):
        # a multi-frame instance holds every phase; classic parts hold only their own
        frames = [f for f in _number_temporal(frames) if f.temporal[0] == position]
    return _volume_of(frames, rel_tol, abs_tol_mm)


def without_unusable_instances(series: SeriesInstances) -> tuple[SeriesInstances, list[str]]:
    """The series less the classic instances that cannot join its grid, with the reasons.

    One slice without ImagePositionPatient (or of another size, orientation or pixel spacing
    than the rest) must not cost the whole study: it is left out and the reason is kept for
    the report. Multi-frame instances are kept as they are (their frames are not separable
    here). Returns the series unchanged and no notes when nothing had to go.
    """
    keep: list[tuple[Dataset, Path]] = []
    notes: list[str] = []
    shapes: dict[tuple[object, ...], int] = defaultdict(int)
    framed: list[tuple[Dataset, Path, tuple[object, ...] | None]] = []
    for ds, path in zip(series.datasets, series.paths, strict=True):
        if "PerFrameFunctionalGroupsSequence" in ds:
            framed.append((ds, path, None))
            continue
        try:
            frame = _classic_frame(ds)
        except (GeometryError, ValueError, TypeError) as exc:
            notes.append(f"instance …{str(ds.get('SOPInstanceUID', '?'))[-12:]} excluded: "
                         f"{getattr(exc, 'reason', exc)}")
            continue
        if "PixelData" not in ds:
            notes.append(f"instance …{frame.sop_uid[-12:]} excluded: no PixelData")
            continue
        plane: tuple[object, ...] = (tuple(round(v, 3) for v in frame.orientation), frame.shape,
                                     tuple(round(v, 4) for v in frame.pixel_spacing))
        shapes[plane] += 1
        framed.append((ds, path, plane))
    common = max(shapes, key=lambda g: shapes[g]) if shapes else None
    for ds, path, grid in framed:
        if grid is not None and grid != common:
            notes.append(f"instance …{str(ds.get('SOPInstanceUID', '?'))[-12:]} excluded: "
                         "size, orientation or pixel spacing differs from the rest")
            continue
        keep.append((ds, path))
    if not notes or not keep:
        return series, notes if keep else []
    return replace(series, datasets=tuple(d for d, _ in keep),
                   paths=tuple(p for _, p in keep)), notes


def place_by_instance_number(series: SeriesInstances) -> list[str]:
    """Give classic instances without ImagePositionPatient the position their InstanceNumber
    implies, when the rest of the series fixes it; returns a note per placed instance.

    Archives do send a slice whose position was lost on the way; its pixels are good and
    the other slices' numbers and positions say where it belongs (a straight line through
    them within 0.1 mm). Nothing is placed when that line is not straight or the slot is
    taken. The datasets in memory are changed, never the files.
    """
    lost = [ds for ds in series.datasets if "PerFrameFunctionalGroupsSequence" not in ds
            and not ds.get("ImagePositionPatient") and _int_or_none(ds.get("InstanceNumber"))]
    known: list[tuple[int, _Frame]] = []
    for ds in series.datasets:
        number = _int_or_none(ds.get("InstanceNumber"))
        if ds in lost or number is None or "PerFrameFunctionalGroupsSequence" in ds:
            continue
        try:
            known.append((number, _classic_frame(ds)))
        except (GeometryError, ValueError, TypeError):
            continue
    if not lost or len(known) < 3:
        return []
    numbers = np.asarray([n for n, _ in known], dtype=np.float64)
    positions = np.asarray([f.position for _, f in known], dtype=np.float64)
    design = np.column_stack([numbers, np.ones_like(numbers)])
    fit, *_ = np.linalg.lstsq(design, positions, rcond=None)
    if float(np.abs(design @ fit - positions).max()) > 0.1:
        return []
    taken = {round(float(n)) for n in numbers}
    notes = []
    for ds in lost:
        number = _int_or_none(ds.get("InstanceNumber"))
        if number is None or number in taken:
            continue
        place = fit[0] * number + fit[1]
        ds.ImagePositionPatient = [round(float(v), 4) for v in place]
        notes.append(f"instance …{str(ds.get('SOPInstanceUID', '?'))[-12:]} had no "
                     f"ImagePositionPatient: placed by its InstanceNumber {number}")
    return notes


def _volume_of(frames: list[_Frame], rel_tol: float, abs_tol_mm: float) -> Volume:
    """The checked, stacked volume of one set of frames (one phase)."""
    _check_same_plane_type(frames)
    row, col, normal = _axes(frames[0].orientation)
    frames.sort(key=lambda f: float(np.dot(f.position, normal)))
    step = _check_spacing(frames, normal, rel_tol, abs_tol_mm)
    return Volume(
        array=_stack_pixels(frames),
        spacing=(frames[0].pixel_spacing[1], frames[0].pixel_spacing[0], step),
        origin=frames[0].position,
        direction=tuple(float(v) for v in np.column_stack([row, col, normal]).ravel()),
        sop_instance_uids=tuple(f.sop_uid for f in frames),
    )


def split_series(series: SeriesInstances) -> list[SeriesInstances]:
    """One :class:`SeriesInstances` per temporal position of a multi-phase series.

    A dynamic series (all contrast phases in one series, PS3.3 C.7.6.1.1.4 Temporal Position
    Identifier) or an Enhanced/Legacy Converted multi-frame image holding several phases
    (Frame Content: Temporal Position Index, else Frame Acquisition DateTime) would otherwise
    stack into one volume with every slice position repeated. Positions come from the
    temporal tags, else from acquisition times when slice positions repeat. A series with
    one phase is returned as it is.
    """
    frames = _number_temporal(_readable_frames(series.datasets))
    positions = sorted({f.temporal[0] for f in frames})
    if len(positions) < 2:
        return [series]
    parts = []
    for position in positions:
        sources = {id(f.source) for f in frames if f.temporal[0] == position}
        members = [(ds, path) for ds, path in zip(series.datasets, series.paths, strict=True)
                   if id(ds) in sources]
        parts.append(SeriesInstances(
            series.series_uid, series.modality, series.description, series.series_number,
            tuple(m[0] for m in members), tuple(m[1] for m in members), position,
            len(positions), series.repairs))
    return parts


def _readable_frames(datasets: Sequence[Dataset]) -> list[_Frame]:
    """Frames of every instance whose geometry reads; the others are left for
    :func:`without_unusable_instances` to exclude with their reason."""
    frames: list[_Frame] = []
    for ds in datasets:
        try:
            frames += _frames_of(ds)
        except (GeometryError, ValueError, TypeError):
            continue
    return frames


def split_volumes(series: SeriesInstances) -> list[Volume]:
    """One volume per phase of ``series`` (see :func:`split_series`), in temporal order."""
    return [series_to_volume(part) for part in split_series(series)]


def _number_temporal(frames: list[_Frame]) -> list[_Frame]:
    """Frames with their temporal position; all 1 when the series holds one phase.

    Explicit positions (TPI / Temporal Position Index) are kept as written; without them,
    distinct acquisition times number the phases only when slice positions repeat (a
    single-phase series acquired slice by slice has many acquisition times and one phase).
    """
    if any(f.temporal[0] for f in frames):
        return frames
    positions = [tuple(round(v, 2) for v in f.position) for f in frames]
    times = sorted({f.temporal[1] for f in frames})
    if len(set(positions)) == len(positions) or len(times) < 2:
        return [replace(f, temporal=(1, f.temporal[1])) for f in frames]
    return [replace(f, temporal=(times.index(f.temporal[1]) + 1, f.temporal[1]))
            for f in frames]


def _classic_temporal(ds: Dataset) -> tuple[int, str]:
    position = _int_or_none(ds.get("TemporalPositionIdentifier")) or 0
    return position, str(ds.get("AcquisitionTime", "") or "")


def _enhanced_temporal(group: Dataset) -> tuple[int, str]:
    content = group.get("FrameContentSequence")
    if not content:
        return 0, ""
    item = content[0]
    position = _int_or_none(item.get("TemporalPositionIndex")) or 0
    when = str(item.get("FrameAcquisitionDateTime", "") or "")
    return position, when[8:] if len(when) > 8 else when


def _frames_of(ds: Dataset) -> list[_Frame]:
    if "PerFrameFunctionalGroupsSequence" in ds:
        return _enhanced_frames(ds)
    return [_classic_frame(ds)]


def _required(ds: Dataset, keyword: str, where: str) -> Any:
    value = ds.get(keyword)
    if value is None or value == "":
        raise GeometryError(f"{where} has no {keyword}")
    return value


def _classic_frame(ds: Dataset) -> _Frame:
    sop = str(ds.get("SOPInstanceUID", "?"))
    where = f"instance {sop}"
    return _Frame(
        position=_triple(_required(ds, "ImagePositionPatient", where)),
        orientation=tuple(float(v) for v in _required(ds, "ImageOrientationPatient", where)),
        pixel_spacing=_pair(_required(ds, "PixelSpacing", where)),
        shape=(int(_required(ds, "Rows", where)), int(_required(ds, "Columns", where))),
        slope=float(ds.get("RescaleSlope", 1.0) or 1.0),
        intercept=float(ds.get("RescaleIntercept", 0.0) or 0.0),
        sop_uid=sop,
        source=ds,
        frame_index=None,
        temporal=_classic_temporal(ds),
    )


def _enhanced_frames(ds: Dataset) -> list[_Frame]:
    """Frames of an Enhanced CT/MR instance; per-frame groups override shared ones."""
    shared = (ds.SharedFunctionalGroupsSequence[0]
              if "SharedFunctionalGroupsSequence" in ds else Dataset())
    return [_enhanced_frame(ds, group, shared, index)
            for index, group in enumerate(ds.PerFrameFunctionalGroupsSequence)]


def _enhanced_frame(ds: Dataset, group: Dataset, shared: Dataset, index: int) -> _Frame:
    sop = str(ds.get("SOPInstanceUID", "?"))
    where = f"frame {index + 1} of instance {sop}"

    def attr(seq: str, keyword: str, default: Any = None) -> Any:
        return _functional_group_value(group, shared, seq, keyword, default, where)

    return _Frame(
        position=_triple(attr("PlanePositionSequence", "ImagePositionPatient")),
        orientation=tuple(
            float(v) for v in attr("PlaneOrientationSequence", "ImageOrientationPatient")
        ),
        pixel_spacing=_pair(attr("PixelMeasuresSequence", "PixelSpacing")),
        shape=(int(_required(ds, "Rows", sop)), int(_required(ds, "Columns", sop))),
        slope=float(attr("PixelValueTransformationSequence", "RescaleSlope", 1.0)),
        intercept=float(attr("PixelValueTransformationSequence", "RescaleIntercept", 0.0)),
        sop_uid=sop,
        source=ds,
        frame_index=index,
        temporal=_enhanced_temporal(group),
    )


def _functional_group_value(
    per_frame: Dataset, shared: Dataset, seq: str, keyword: str, default: Any, where: str
) -> Any:
    for group in (per_frame, shared):
        items = group.get(seq)
        if items and keyword in items[0] and items[0][keyword].value not in (None, ""):
            return items[0][keyword].value
    if default is None:
        raise GeometryError(f"{where} has no {seq} > {keyword}")
    return default


def _triple(value: Any) -> tuple[float, float, float]:
    x, y, z = (float(v) for v in value)
    return x, y, z


def _pair(value: Any) -> tuple[float, float]:
    a, b = (float(v) for v in value)
    return a, b


def _axes(orientation: Sequence[float]) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Unit row, column and normal directions; rejects a degenerate orientation."""
    row = np.asarray(orientation[:3], dtype=np.float64)
    col = np.asarray(orientation[3:6], dtype=np.float64)
    if min(np.linalg.norm(row), np.linalg.norm(col)) < 1e-6:
        raise GeometryError("ImageOrientationPatient has a zero direction")
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    if abs(float(np.dot(row, col))) > 1e-3:
        raise GeometryError("ImageOrientationPatient row and column are not orthogonal")
    return row, col, np.cross(row, col)


def _check_same_plane_type(frames: Sequence[_Frame]) -> None:
    if len(frames) < 2:
        raise GeometryError(f"a volume needs at least 2 slices, got {len(frames)}")
    ref = frames[0]
    for frame in frames[1:]:
        if not np.allclose(frame.orientation, ref.orientation, atol=_ORIENTATION_TOL):
            raise GeometryError(f"mixed orientations: {frame.sop_uid} differs from "
                                f"{ref.sop_uid}")
        if frame.shape != ref.shape:
            raise GeometryError(f"mixed image sizes: {frame.shape} and {ref.shape} (rows, cols)")
        if not np.allclose(frame.pixel_spacing, ref.pixel_spacing, atol=_PIXEL_SPACING_TOL_MM):
            raise GeometryError(f"mixed pixel spacing: {frame.pixel_spacing} and "
                                f"{ref.pixel_spacing} mm")
    if int(ref.source.get("SamplesPerPixel", 1)) != 1:
        raise GeometryError("colour images cannot form a scalar volume")


def _check_spacing(
    frames: Sequence[_Frame], normal: FloatArray, rel_tol: float, abs_tol_mm: float
) -> float:
    """The regular slice step (mm) of frames sorted along ``normal``, or GeometryError."""
    positions = np.asarray([f.position for f in frames], dtype=np.float64)
    along = positions @ normal
    gaps = np.diff(along)
    if np.any(gaps <= abs_tol_mm):
        at = float(along[int(np.argmin(gaps))])
        raise GeometryError(f"duplicate slice positions at {at:.3f} mm along the normal")
    step = float(np.median(gaps))
    tol = max(abs_tol_mm, rel_tol * step)
    for index, gap in enumerate(gaps):
        _check_gap(float(gap), step, tol, float(along[index]))
    _check_no_shear(positions, normal, tol)
    return float((along[-1] - along[0]) / (len(frames) - 1))


def _check_gap(gap: float, step: float, tol: float, at: float) -> None:
    if abs(gap - step) <= tol:
        return
    multiple = round(gap / step)
    if multiple >= 2 and abs(gap - multiple * step) <= tol:
        raise GeometryError(f"gap: {multiple - 1} missing slice(s) after {at:.3f} mm "
                            f"(step {step:.3f} mm)")
    raise GeometryError(f"uneven slice spacing: {gap:.3f} mm after {at:.3f} mm where the "
                        f"step is {step:.3f} mm")


def _check_no_shear(positions: FloatArray, normal: FloatArray, tol: float) -> None:
    """Slices must line up along the normal (a gantry-tilted CT does not)."""
    offsets = positions - positions[0]
    in_plane = offsets - np.outer(offsets @ normal, normal)
    drift = float(np.max(np.linalg.norm(in_plane, axis=1)))
    if drift > tol:
        raise GeometryError(f"slices are not stacked along the image normal (in-plane drift "
                            f"{drift:.3f} mm; gantry tilt?)")


def _stack_pixels(frames: Sequence[_Frame]) -> npt.NDArray[np.float32]:
    """Rescaled float32 pixels in frame order; multi-frame pixel data is decoded once."""
    cache: dict[int, npt.NDArray[Any]] = {}
    out = np.empty((len(frames), *frames[0].shape), dtype=np.float32)
    for z, frame in enumerate(frames):
        key = id(frame.source)
        if key not in cache:
            cache[key] = np.asarray(frame.source.pixel_array).reshape(-1, *frame.shape)
        pixels = cache[key][frame.frame_index or 0]
        out[z] = pixels.astype(np.float32) * np.float32(frame.slope) + np.float32(frame.intercept)
    return out
