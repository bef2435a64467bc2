"""DICOM Segmentation (BINARY) of the liver and each liver lesion.

Why BINARY and not LABELMAP: the liver segment overlaps every lesion segment
(a label map cannot express overlap), and the LABELMAP SOP Class is unknown to
Debian's ``dciodvfy`` and to many archives (see ``docs/export.md``).
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from export.common import (
    CHARACTER_SET,
    MANUFACTURER,
    RESEARCH_USE_TEXT,
    AlgorithmInfo,
    algorithm_family_code,
    contributing_equipment,
    declare_air_scheme,
    require_same_study,
)
from export.seg.codes import (
    LESION_CATEGORY,
    LESION_COLOR,
    LESION_TYPE,
    LIVER_CATEGORY,
    LIVER_COLOR,
    LIVER_TYPE,
)

__all__ = [
    "LIVER_SEGMENT_NUMBER",
    "SERIES_DESCRIPTION",
    "build_segmentation",
    "lesion_segment_number",
]

LIVER_SEGMENT_NUMBER = 1
SERIES_DESCRIPTION = "Hepatica liver and tumour segmentation"
_CONTENT_LABEL = "HEPATICA_LIVER"  # CS, 16 characters at most
_BODY_PART = "ABDOMEN"  # PS3.16 Annex L defined term, when the source names none


def lesion_segment_number(label: int) -> int:
    """SEG segment number of lesion ``label`` (lesion k is segment k + 1)."""
    return LIVER_SEGMENT_NUMBER + label


def build_segmentation(
    source_images: Sequence[Dataset],
    liver_mask: npt.NDArray[np.bool_],
    lesion_labels: npt.NDArray[np.integer],
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int,
    algorithm: AlgorithmInfo,
    software_versions: str,
    instance_number: int = 1,
    device_serial_number: str = "1",
) -> hd.seg.Segmentation:
    """Build a BINARY SEG: segment 1 the liver, segment k + 1 lesion k.

    ``liver_mask`` and ``lesion_labels`` are ``[z, y, x]`` with z in the order of
    ``source_images``. Lesion labels must be 1..K without gaps so that segment
    numbers stay consecutive, as PS3.3 C.8.20.2 requires.
    """
    require_same_study(source_images)
    n_lesions = _check_inputs(source_images, liver_mask, lesion_labels)
    identification = _algorithm_identification(algorithm)
    descriptions = [_liver_description(identification)]
    descriptions += [_lesion_description(k, identification) for k in range(1, n_lesions + 1)]
    seg = hd.seg.Segmentation(
        source_images=list(source_images),
        pixel_array=_stack_segments(liver_mask, lesion_labels, n_lesions),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=algorithm.name,
        software_versions=software_versions,
        device_serial_number=device_serial_number,
        content_description=RESEARCH_USE_TEXT,
        content_label=_CONTENT_LABEL,
        series_description=SERIES_DESCRIPTION,
        contributing_equipment=[contributing_equipment(algorithm, software_versions)],
        omit_empty_frames=True,
        specific_character_set=CHARACTER_SET,
    )
    # General Series: Body Part Examined tells validators (PixelMed) that Laterality
    # (Type 2C, paired body parts only) is not needed; the liver is unpaired.
    seg.BodyPartExamined = source_images[0].get("BodyPartExamined") or _BODY_PART
    _state_unpaired(seg)
    declare_air_scheme(seg)
    return seg


def _state_unpaired(seg: Dataset) -> None:
    """Frame Anatomy (shared): the frames show the abdomen, an unpaired region ("U").

    Why: PixelMed's validator asks for Laterality whenever neither Image nor Frame
    Laterality is present (it cannot tell paired body parts), while dciodvfy rightly
    refuses Laterality for an unpaired one. Frame Laterality "U" states the fact and
    satisfies both; the Frame Anatomy macro is not in the SEG IOD's functional groups, so
    the object becomes a Standard Extended SOP Class (dciodvfy: warnings only). See
    ``docs/air_conformance.md``.
    """
    anatomy = Dataset()
    anatomy.AnatomicRegionSequence = [hd.sr.CodedConcept.from_code(codes.SCT.Abdomen)]
    anatomy.FrameLaterality = "U"
    seg.SharedFunctionalGroupsSequence[0].FrameAnatomySequence = [anatomy]


def _check_inputs(
    source_images: Sequence[Dataset],
    liver_mask: npt.NDArray[np.bool_],
    lesion_labels: npt.NDArray[np.integer],
) -> int:
    """Validate shapes and labels; return the number of lesions.

    Raises with the reason, because a SEG whose frames do not match its source
    images would be displayed on the wrong slices.
    """
    expected = (len(source_images), int(source_images[0].Rows), int(source_images[0].Columns))
    for name, array in (("liver_mask", liver_mask), ("lesion_labels", lesion_labels)):
        if array.shape != expected:
            raise ValueError(f"{name} has shape {array.shape}, source images give {expected}")
    if not np.issubdtype(lesion_labels.dtype, np.integer):
        raise TypeError(f"lesion_labels must be an integer array, not {lesion_labels.dtype}")
    present = np.unique(lesion_labels[lesion_labels != 0])
    if not np.array_equal(present, np.arange(1, present.size + 1)):
        raise ValueError(f"lesion labels must be 1..K without gaps, found {present.tolist()}")
    return int(present.size)


def _stack_segments(
    liver_mask: npt.NDArray[np.bool_],
    lesion_labels: npt.NDArray[np.integer],
    n_lesions: int,
) -> npt.NDArray[np.bool_]:
    """Return ``[z, y, x, segment]`` booleans; segments may overlap (BINARY).

    Stored segment by segment (the last axis a view over contiguous segment planes): each
    segment's frames are then contiguous, and highdicom's overlap check (a sum over the
    segment axis) runs over whole planes instead of 2-4 bytes at a time, 4x faster.
    """
    layers = [liver_mask.astype(bool)]
    layers += [lesion_labels == k for k in range(1, n_lesions + 1)]
    return np.moveaxis(np.stack(layers, axis=0), 0, -1)


def _algorithm_identification(algorithm: AlgorithmInfo) -> hd.AlgorithmIdentificationSequence:
    """Algorithm Identification Sequence for AUTOMATIC segments (IHE AIR)."""
    return hd.AlgorithmIdentificationSequence(
        name=algorithm.name,
        family=algorithm_family_code(algorithm),
        version=algorithm.version,
        source=MANUFACTURER,
        parameters={"hepatica_family": algorithm.family},
    )


def _liver_description(
    identification: hd.AlgorithmIdentificationSequence,
) -> hd.seg.SegmentDescription:
    """Segment 1: the whole liver, tumours included."""
    return hd.seg.SegmentDescription(
        segment_number=LIVER_SEGMENT_NUMBER,
        segment_label="Liver",
        segmented_property_category=LIVER_CATEGORY,
        segmented_property_type=LIVER_TYPE,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=identification,
        display_color=LIVER_COLOR,
    )


def _lesion_description(
    label: int, identification: hd.AlgorithmIdentificationSequence
) -> hd.seg.SegmentDescription:
    """Segment k + 1: lesion k, located in the liver."""
    return hd.seg.SegmentDescription(
        segment_number=lesion_segment_number(label),
        segment_label=f"Lesion {label}",
        segmented_property_category=LESION_CATEGORY,
        segmented_property_type=LESION_TYPE,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=identification,
        anatomic_regions=[LIVER_TYPE],
        display_color=LESION_COLOR,
    )
