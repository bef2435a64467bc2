"""TID 1500 Measurement Report of the liver and its lesions (Comprehensive 3D SR).

Shape (PS3.16 TID 1500): one TID 1411 volumetric group per lesion, each
referencing its SEG segment, followed by a TID 1410 planar group drawing its
longest diameter (same tracking UID) when the end points are known; one TID 1411
group for the liver with its volume and the tumour burden, followed by a TID 1410
group outlining the liver on one slice (same tracking UID) when the outline is known;
and the TID 1500 row
12 "Qualitative Evaluations"
container holding TEXT items (row 14): the research-use disclaimer first, then
the pipeline's ``extra_text`` notes as "name: value".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from export.common import (
    AIR_CODING_SCHEME,
    CHARACTER_SET,
    MANUFACTURER,
    RESEARCH_USE_TEXT,
    AlgorithmInfo,
    LesionLike,
    algorithm_family_code,
    contributing_equipment,
    derive_uid,
    device_uid,
    require_same_study,
)
from export.seg.sop import LIVER_SEGMENT_NUMBER, lesion_segment_number
from export.sr import codes
from export.sr.anchor import anchor_groups
from export.sr.library import image_library

__all__ = [
    "SERIES_DESCRIPTION",
    "build_measurement_report",
    "lesion_tracking_uid",
]

SERIES_DESCRIPTION = "Hepatica liver and tumour measurements"
Chord = tuple[tuple[float, float, float], tuple[float, float, float]]
"""Two voxel centres ``[z, y, x]`` on one source slice (a lesion's longest diameter)."""
Outline = Sequence[tuple[float, float, float]]
"""Voxel centres ``[z, y, x]`` around a closed contour on one source slice (the liver's)."""


def lesion_tracking_uid(segmentation_uid: str, segment_number: int) -> str:
    """Tracking Unique Identifier of one segment, stable across re-processing."""
    return derive_uid(segmentation_uid, "tracking", str(segment_number))


def build_measurement_report(
    source_images: Sequence[Dataset],
    segmentation: Dataset,
    lesions: Sequence[LesionLike],
    *,
    liver_volume_ml: float,
    tumour_burden_pct: float,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int,
    algorithm: AlgorithmInfo,
    software_versions: str,
    extra_text: Sequence[tuple[str, str]] = (),
    instance_number: int = 1,
    extra_groups: Sequence[hd.sr.MeasurementsAndQualitativeEvaluations] = (),
    liver_outline_zyx: Outline | None = None,
    other_algorithms: Sequence[AlgorithmInfo] = (),
) -> hd.sr.Comprehensive3DSR:
    """Build the TID 1500 report for ``lesions`` segmented in ``segmentation``.

    Evidence (source images and the SEG) must belong to one study, the SR joins
    it. Lesion k refers to SEG segment k + 1 (see ``export.seg``). ``extra_groups``
    (TID 1501, no ROI of their own) follow the lesion groups. The z of a lesion's
    ``longest_diameter_endpoints_zyx`` indexes ``source_images`` (the SEG's order), as
    does the z of ``liver_outline_zyx`` (drawn as the liver's TID 1410 group when given).
    ``extra_groups`` are tied to a lesion or to the liver (``export.sr.anchor``).
    ``other_algorithms`` (e.g. the response models, with their ``model_digest``) get their
    own Contributing Equipment items; any other algorithm a group names gets one too.
    """
    require_same_study([*source_images, segmentation])
    _check_segments(segmentation, lesions)
    algorithm_id = _algorithm_id(algorithm)
    groups: list[hd.sr.MeasurementsAndQualitativeEvaluations
                 | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
                 | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations] = [
        _liver_group(segmentation, liver_volume_ml, tumour_burden_pct, algorithm_id)]
    outline = _liver_outline_group(source_images, segmentation, liver_outline_zyx, algorithm_id)
    groups += outline
    for lesion in lesions:
        groups.append(_lesion_group(segmentation, lesion, algorithm_id))
        groups += _long_axis_group(source_images, segmentation, lesion, algorithm_id)
    # TID 1501 groups (response models, RECIST): each tied to a lesion or to the liver
    groups += anchor_groups(
        extra_groups,
        segments_by_uid={
            lesion_tracking_uid(str(segmentation.SOPInstanceUID), number):
                _referenced_segment(segmentation, number)
            for number in (lesion_segment_number(x.label) for x in lesions)},
        liver_segment=_referenced_segment(segmentation, LIVER_SEGMENT_NUMBER),
        liver_region=_image_region(outline[0]) if outline else None,
        algorithm_id=algorithm_id)
    return wrap_report(groups, source_images, [*source_images, segmentation], extra_text,
                       series_instance_uid=series_instance_uid, sop_instance_uid=sop_instance_uid,
                       series_number=series_number, instance_number=instance_number,
                       algorithm=algorithm, software_versions=software_versions,
                       other_algorithms=other_algorithms)


def wrap_report(groups: Sequence[Any], source_images: Sequence[Dataset],
                evidence: Sequence[Dataset], extra_text: Sequence[tuple[str, str]], *,
                series_instance_uid: str, sop_instance_uid: str, series_number: int,
                instance_number: int, algorithm: AlgorithmInfo,
                software_versions: str,
                other_algorithms: Sequence[AlgorithmInfo] = ()) -> hd.sr.Comprehensive3DSR:
    """TID 1500 around ``groups``, with the notes, as a Comprehensive 3D SR object.

    The one place both the full and the partial report get their document identity, so
    the two never differ in manufacturer, coding schemes or character set. Contributing
    Equipment (IHE AIR): ``algorithm``, then ``other_algorithms``, then every other
    algorithm a group's TID 4019 names (name and version only: no digest is known).
    """
    algorithms = _algorithms(algorithm, other_algorithms, groups)
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(algorithm),
        procedure_reported=codes.PROCEDURE_REPORTED,
        imaging_measurements=list(groups),
        referenced_images=None,  # the Image Library goes in below, already encoded
    )
    report[0].ContentSequence.append(_qualitative_evaluations(extra_text))
    sr = hd.sr.Comprehensive3DSR(
        evidence=list(evidence), content=report[0],
        series_instance_uid=series_instance_uid, series_number=series_number,
        sop_instance_uid=sop_instance_uid, instance_number=instance_number,
        manufacturer=MANUFACTURER, is_complete=True, series_description=SERIES_DESCRIPTION,
        software_versions=software_versions, manufacturer_model_name=algorithm.name,
        contributing_equipment=[contributing_equipment(a, software_versions) for a in algorithms],
        coding_schemes=[codes.CODING_SCHEME, AIR_CODING_SCHEME],
        specific_character_set=CHARACTER_SET,
    )
    _add_image_library(sr, source_images)
    return sr


def _add_image_library(sr: hd.sr.Comprehensive3DSR, source_images: Sequence[Dataset]) -> None:
    """TID 1500 row 3: the Image Library, where ``hd.sr.MeasurementReport`` puts it (after
    the procedure reported, before the first container).

    Added after the SR is built, so that highdicom neither deep-copies nor walks it (it is
    most of the document: ``export.sr.library``); the evidence is the same, as every source
    image is evidence anyway. Only highdicom's in-memory ``sr.content`` view lacks it; the
    data set, the file and anything read from it have it.
    """
    if not source_images:
        return
    content = sr.ContentSequence
    at = next((i for i, item in enumerate(content) if item.ValueType == "CONTAINER"),
              len(content))
    content.insert(at, image_library(source_images))


def _algorithms(algorithm: AlgorithmInfo, others: Sequence[AlgorithmInfo],
                groups: Sequence[Any]) -> list[AlgorithmInfo]:
    """Every algorithm of the report once: the given ones, then those only groups name.

    Only groups with a measurement count: a "not run" group names a model that made nothing.
    """
    found = [algorithm, *others]
    for group in groups:
        content = group[0].ContentSequence
        text = {item.ConceptNameCodeSequence[0].CodeValue: str(item.TextValue)
                for item in content if item.ValueType == "TEXT"}
        if _ALGORITHM_NAME in text and any(item.ValueType == "NUM" for item in content):
            found.append(AlgorithmInfo(text[_ALGORITHM_NAME], text.get(_ALGORITHM_VERSION, ""),
                                       family=""))
    unique: dict[tuple[str, str], AlgorithmInfo] = {}
    for item in found:
        unique.setdefault((item.name, item.version), item)
    return list(unique.values())


_ALGORITHM_NAME, _ALGORITHM_VERSION = "111001", "111003"


def _image_region(group: hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations) -> Dataset:
    """The SCOORD "Image Region" item of a TID 1410 group."""
    for item in group[0].ContentSequence:
        if item.ValueType == "SCOORD":
            region: Dataset = item
            return region
    raise ValueError("planar group without an image region")


def _check_segments(segmentation: Dataset, lesions: Sequence[LesionLike]) -> None:
    """Raise unless every referenced segment exists in ``segmentation``.

    A measurement group pointing at a missing segment would be unreadable, so
    the mismatch is reported here with the numbers involved.
    """
    available = {int(item.SegmentNumber) for item in segmentation.get("SegmentSequence", [])}
    wanted = [LIVER_SEGMENT_NUMBER, *(lesion_segment_number(x.label) for x in lesions)]
    missing = sorted(set(wanted) - available)
    if missing:
        raise ValueError(f"segmentation lacks segments {missing}; it has {sorted(available)}")
    if len(set(wanted)) != len(wanted):
        raise ValueError(f"lesion labels repeat: {[x.label for x in lesions]}")


def _algorithm_id(algorithm: AlgorithmInfo) -> hd.sr.AlgorithmIdentification:
    """TID 4019 Algorithm Identification, repeated in every group (IHE AIR)."""
    return hd.sr.AlgorithmIdentification(
        name=algorithm.name,
        version=algorithm.version,
        parameters=[f"hepatica_family={algorithm.family}"],
        family=algorithm_family_code(algorithm),
        manufacturer=MANUFACTURER,
    )


def _observation_context(algorithm: AlgorithmInfo) -> hd.sr.ObservationContext:
    """Device observer: the algorithm, not a person, made these observations."""
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=device_uid(algorithm),  # the Contributing Equipment item's Device UID
        name=algorithm.name,
        manufacturer_name=MANUFACTURER,
        model_name=f"{algorithm.name} {algorithm.version}",
    )
    observer = hd.sr.ObserverContext(
        observer_type=codes.OBSERVER_DEVICE,
        observer_identifying_attributes=device,
    )
    return hd.sr.ObservationContext(observer_device_context=observer)


def _tracking(segmentation: Dataset, segment_number: int, label: str) -> hd.sr.TrackingIdentifier:
    """Tracking identifier (TEXT) and UID (UIDREF) of one measured segment."""
    uid = lesion_tracking_uid(str(segmentation.SOPInstanceUID), segment_number)
    return hd.sr.TrackingIdentifier(uid=uid, identifier=label)


def _lesion_group(
    segmentation: Dataset, lesion: LesionLike, algorithm_id: hd.sr.AlgorithmIdentification
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    """TID 1411 group of one lesion: volume, longest and viable diameters."""
    segment_number = lesion_segment_number(lesion.label)
    measurements = [
        _measurement(codes.VOLUME, lesion.volume_ml, codes.UNIT_MILLILITRE),
        _measurement(codes.LONGEST_DIAMETER, lesion.longest_diameter_mm, codes.UNIT_MILLIMETRE),
    ]
    if lesion.viable_diameter_mm is not None:  # absent without an arterial phase
        measurements.append(_measurement(codes.VIABLE_DIAMETER, lesion.viable_diameter_mm,
                                         codes.UNIT_MILLIMETRE))
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(segmentation, segment_number, f"Lesion {lesion.label}"),
        referenced_segment=_referenced_segment(segmentation, segment_number),
        finding_type=codes.LESION_FINDING_TYPE,
        finding_category=codes.LESION_FINDING_CATEGORY,
        finding_sites=[hd.sr.FindingSite(codes.FINDING_SITE_LIVER)],
        algorithm_id=algorithm_id,
        measurements=measurements,
    )


def _long_axis_group(
    source_images: Sequence[Dataset],
    segmentation: Dataset,
    lesion: LesionLike,
    algorithm_id: hd.sr.AlgorithmIdentification,
) -> list[hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations]:
    """TID 1410 group: the lesion's longest diameter as a line on its source slice.

    Viewers (OHIF among them) draw and list planar groups, not segment-referenced
    ones; the shared tracking UID ties the line to the lesion's TID 1411 group.
    Empty without end points, or when the slice is a frame of a multi-frame image
    (its frame number is not known here).
    """
    ends = lesion.longest_diameter_endpoints_zyx
    if ends is None:
        return []
    image = _slice_image(source_images, ends)
    if int(image.get("NumberOfFrames", 1) or 1) > 1:
        return []
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=_polyline(image, ends, lesion.longest_diameter_mm),
        source_image=hd.sr.SourceImageForRegion.from_source_image(image),
    )
    segment_number = lesion_segment_number(lesion.label)
    return [hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(segmentation, segment_number, f"Lesion {lesion.label}"),
        referenced_region=region,
        finding_type=codes.LESION_FINDING_TYPE,
        finding_category=codes.LESION_FINDING_CATEGORY,
        finding_sites=[hd.sr.FindingSite(codes.FINDING_SITE_LIVER)],
        algorithm_id=algorithm_id,
        measurements=[_measurement(codes.LONGEST_DIAMETER, lesion.longest_diameter_mm,
                                   codes.UNIT_MILLIMETRE)],
    )]


def _slice_image(source_images: Sequence[Dataset], ends: Chord) -> Dataset:
    """The source image both end points lie on; raises unless they share one slice."""
    z = ends[0][0]
    if ends[1][0] != z or z != int(z) or not 0 <= z < len(source_images):
        raise ValueError(f"diameter end points {ends} are not on one of the "
                         f"{len(source_images)} source slices")
    return source_images[int(z)]


def _polyline(image: Dataset, ends: Chord, length_mm: float) -> npt.NDArray[np.float64]:
    """(column, row) of the two voxel centres, checked against the measured length.

    SCOORD image coordinates put (0, 0) at the top left corner of the top left
    pixel (PS3.3 C.18.6), so the centre of pixel (row r, column c) is (c + 0.5, r + 0.5).
    """
    data = np.array([[x + 0.5, y + 0.5] for _, y, x in ends], dtype=np.float64)
    row_mm, column_mm = (float(v) for v in image.PixelSpacing)
    (c0, r0), (c1, r1) = data
    drawn = float(np.hypot((c1 - c0) * column_mm, (r1 - r0) * row_mm))
    if abs(drawn - length_mm) > 0.01:
        raise ValueError(f"diameter end points {ends} are {drawn:.3f} mm apart on the "
                         f"source image, not the measured {length_mm:.3f} mm")
    return data


def _liver_group(
    segmentation: Dataset,
    liver_volume_ml: float,
    tumour_burden_pct: float,
    algorithm_id: hd.sr.AlgorithmIdentification,
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    """TID 1411 group of the liver: its volume and the share taken by tumour."""
    measurements = [
        _measurement(codes.VOLUME, liver_volume_ml, codes.UNIT_MILLILITRE),
        _measurement(codes.TUMOUR_BURDEN, tumour_burden_pct, codes.UNIT_PERCENT),
    ]
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(segmentation, LIVER_SEGMENT_NUMBER, "Liver"),
        referenced_segment=_referenced_segment(segmentation, LIVER_SEGMENT_NUMBER),
        finding_type=codes.LIVER_FINDING_TYPE,
        finding_category=codes.LIVER_FINDING_CATEGORY,
        finding_sites=[hd.sr.FindingSite(codes.FINDING_SITE_LIVER)],
        algorithm_id=algorithm_id,
        measurements=measurements,
    )


def _liver_outline_group(
    source_images: Sequence[Dataset],
    segmentation: Dataset,
    outline: Outline | None,
    algorithm_id: hd.sr.AlgorithmIdentification,
) -> list[hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations]:
    """TID 1410 group: the liver's outline on one source slice and the area it encloses.

    Same tracking UID as the liver's TID 1411 group, so viewers that place every tracked
    finding on an image (OHIF reads the first SCOORD of each tracking UID) can draw the
    liver. The outline is a closed POLYLINE (first point repeated last: a polygon, PS3.3
    C.18.6.1.2) of voxel centres; its Area is the polygon's, in mm². Empty without an
    outline or on a multi-frame source (frame unknown).
    """
    if outline is None:
        return []
    points = list(outline)
    z = points[0][0] if points else -1.0
    if (len(points) < 3 or any(p[0] != z for p in points) or z != int(z)
            or not 0 <= z < len(source_images)):
        raise ValueError(f"liver outline of {len(points)} points is not a contour on one of "
                         f"the {len(source_images)} source slices")
    image = source_images[int(z)]
    if int(image.get("NumberOfFrames", 1) or 1) > 1:
        return []
    data = np.array([[x + 0.5, y + 0.5] for _, y, x in [*points, points[0]]], dtype=np.float64)
    row_mm, column_mm = (float(v) for v in image.PixelSpacing)
    columns, rows = data[:, 0] * column_mm, data[:, 1] * row_mm
    area = 0.5 * abs(float(np.dot(columns[:-1], rows[1:]) - np.dot(rows[:-1], columns[1:])))
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=data,
        source_image=hd.sr.SourceImageForRegion.from_source_image(image),
    )
    return [hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(segmentation, LIVER_SEGMENT_NUMBER, "Liver"),
        referenced_region=region,
        finding_type=codes.LIVER_FINDING_TYPE,
        finding_category=codes.LIVER_FINDING_CATEGORY,
        finding_sites=[hd.sr.FindingSite(codes.FINDING_SITE_LIVER)],
        algorithm_id=algorithm_id,
        measurements=[_measurement(codes.AREA, area, codes.UNIT_SQUARE_MILLIMETRE)],
    )]


def _referenced_segment(segmentation: Dataset, segment_number: int) -> hd.sr.ReferencedSegment:
    """Reference to one segment and to the source images its frames derive from.

    Not ``ReferencedSegment.from_segmentation``: highdicom 0.28 looks for the
    segment number only in the per-frame groups, but a SEG with a single
    segment (a liver without lesions) carries it in the shared groups.
    """
    shared = segmentation.SharedFunctionalGroupsSequence[0]
    sources: dict[str, str] = {}
    for frame in segmentation.PerFrameFunctionalGroupsSequence:
        identification = frame.get("SegmentIdentificationSequence") or shared.get(
            "SegmentIdentificationSequence"
        )
        if int(identification[0].ReferencedSegmentNumber) != segment_number:
            continue
        for derivation in frame.get("DerivationImageSequence", []):
            for source in derivation.get("SourceImageSequence", []):
                sources[source.ReferencedSOPInstanceUID] = source.ReferencedSOPClassUID
    return hd.sr.ReferencedSegment(
        sop_class_uid=segmentation.SOPClassUID,
        sop_instance_uid=segmentation.SOPInstanceUID,
        segment_number=segment_number,
        source_images=[hd.sr.SourceImageForSegmentation(c, u) for u, c in sources.items()],
    )


def _measurement(
    name: hd.sr.CodedConcept, value: float, unit: hd.sr.CodedConcept
) -> hd.sr.Measurement:
    """One TID 300 numeric measurement; rejects NaN so readers never see it."""
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name.meaning} is not a finite number: {value}")
    return hd.sr.Measurement(name=name, value=float(value), unit=unit)


def _qualitative_evaluations(extra_text: Sequence[tuple[str, str]]) -> hd.sr.ContainerContentItem:
    """TID 1500 row 12 container: the disclaimer and the pipeline's notes as TEXT."""
    container = hd.sr.ContainerContentItem(
        name=codes.QUALITATIVE_EVALUATIONS,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    texts = [RESEARCH_USE_TEXT, *(f"{name}: {value}" for name, value in extra_text)]
    container.ContentSequence = hd.sr.ContentSequence(
        [
            hd.sr.TextContentItem(
                name=codes.COMMENT,
                value=text,
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
            for text in texts
        ]
    )
    return container
