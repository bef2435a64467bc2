"""Secondary-capture RGB heatmap of one slice, text burned in.

The picture is a screenshot for people, not data for machines: it says so with
``BurnedInAnnotation`` = YES and Image Type DERIVED/SECONDARY, and it refers to
the slice it was drawn from (Source Image Sequence) so a viewer can jump there.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from export.common import (
    CHARACTER_SET,
    MANUFACTURER,
    RESEARCH_USE_TEXT,
    AlgorithmInfo,
    contributing_equipment,
    declare_air_scheme,
)
from export.sc.codes import (
    BODY_PART,
    DERIVATION_DESCRIPTION,
    PURPOSE_SOURCE_IMAGE,
    SERIES_DESCRIPTION,
)
from export.sc.render import render_heatmap

__all__ = ["build_heatmap_image"]

# Named when the caller gives no model: the picture is then attributed to Hepatica itself.
_RENDERER = AlgorithmInfo(name="hepatica-heatmap", version="unknown", family="rendering")


def build_heatmap_image(
    background: npt.NDArray[np.floating],
    probability: npt.NDArray[np.floating],
    *,
    source_image: Dataset,
    phase_label: str,
    caption_lines: Sequence[str],
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int,
    instance_number: int,
    software_versions: str,
    algorithm: AlgorithmInfo | None = None,
) -> hd.sc.SCImage:
    """Render ``probability`` over ``background`` and wrap it as an SC image.

    Patient and study come from ``source_image`` (the result joins its study);
    the RESEARCH USE ONLY text is burned into every image. ``algorithm`` is the model
    whose probability map this is: the Contributing Equipment item (IHE AIR) names it.
    Without it the item names only Hepatica's software (``_RENDERER``), which is not
    what AIR asks for; callers should pass it.
    """
    pixels = render_heatmap(
        background,
        probability,
        title=phase_label,
        caption_lines=caption_lines,
        aspect=_pixel_aspect(source_image),
        modality=str(source_image.get("Modality", "") or ""),
    )
    image = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source_image,
        pixel_array=pixels,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        patient_orientation=_patient_orientation(source_image),
        series_description=SERIES_DESCRIPTION,
        software_versions=software_versions,
        specific_character_set=CHARACTER_SET,
        contributing_equipment=[
            contributing_equipment(algorithm or _RENDERER, software_versions)
        ],
    )
    _describe_derivation(image, source_image)
    declare_air_scheme(image)
    return image


def _describe_derivation(image: hd.sc.SCImage, source_image: Dataset) -> None:
    """Set the optional General Image attributes that highdicom leaves to us.

    PS3.3 C.7.6.1: Burned In Annotation, Derivation Description, Source Image
    Sequence, Image Comments (the disclaimer again, for readers of the header);
    C.7.3.1: Body Part Examined.
    """
    image.BurnedInAnnotation = "YES"
    # Body Part Examined lets a validator see that Laterality (General Series,
    # Type 2C) is not needed: the liver is unpaired.
    image.BodyPartExamined = source_image.get("BodyPartExamined") or BODY_PART
    image.DerivationDescription = DERIVATION_DESCRIPTION
    image.ImageComments = RESEARCH_USE_TEXT
    reference = Dataset()
    reference.ReferencedSOPClassUID = source_image.SOPClassUID
    reference.ReferencedSOPInstanceUID = source_image.SOPInstanceUID
    reference.PurposeOfReferenceCodeSequence = [PURPOSE_SOURCE_IMAGE]
    image.SourceImageSequence = [reference]


def _patient_orientation(source_image: Dataset) -> tuple[str, str]:
    """Row and column directions (e.g. "L", "P") of the source slice.

    The rendering keeps the slice's orientation, so the source's Image
    Orientation (Patient) still tells which way the patient faces.
    """
    cosines = [float(v) for v in source_image.get("ImageOrientationPatient", [1, 0, 0, 0, 1, 0])]
    row, col = np.array(cosines[:3]), np.array(cosines[3:])
    affine = np.stack([row, col, np.cross(row, col)], axis=1)
    directions = hd.spatial.get_closest_patient_orientation(affine)
    return directions[0].value, directions[1].value


def _pixel_aspect(source_image: Dataset) -> float:
    """Row spacing / column spacing, so pixels are drawn with true proportions."""
    spacing = source_image.get("PixelSpacing")
    if not spacing:
        return 1.0
    return float(spacing[0]) / float(spacing[1])
