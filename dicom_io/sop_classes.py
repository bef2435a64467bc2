"""What a liver CT/MR study may hold, and which transfer syntaxes this node can decode.

A study as an archive keeps it carries more than the images the pipeline reads: a reader's
SEG or RT Structure Set (our best tumour ROI), clinical and dose SRs, key-object notes,
presentation states, parametric maps, a scanned request (Encapsulated PDF), our own earlier
results, vendor raw data. An SCP that refuses any of them makes a PACS's C-MOVE of the
study report failed sub-operations, so every class here is accepted and kept with the
study; only :data:`VOLUME_IMAGE_CLASSES` ever become volumes.

Transfer syntaxes are derived from the pixel decoders pydicom actually has at import time
(pylibjpeg and its plugins are core dependencies): a syntax whose decoder is missing is
never accepted, so nothing is stored that the pipeline cannot read later.
"""

from __future__ import annotations

from pydicom import uid as u
from pydicom.pixels.decoders.base import get_decoder

__all__ = [
    "ACCEPTED_TRANSFER_SYNTAXES",
    "COMPRESSED_CANDIDATES",
    "IMAGE_CLASSES",
    "NON_IMAGE_CLASSES",
    "STORAGE_CLASSES",
    "VOLUME_IMAGE_CLASSES",
    "is_volume_image",
]

# Images a volume can be built from (single-frame, Enhanced and Legacy Converted Enhanced).
VOLUME_IMAGE_CLASSES: frozenset[str] = frozenset({
    u.CTImageStorage, u.EnhancedCTImageStorage, u.LegacyConvertedEnhancedCTImageStorage,
    u.MRImageStorage, u.EnhancedMRImageStorage, u.LegacyConvertedEnhancedMRImageStorage,
    u.PositronEmissionTomographyImageStorage, u.EnhancedPETImageStorage,
    u.LegacyConvertedEnhancedPETImageStorage,
})

# Other images a liver study carries: screen captures, colour MR, maps derived from series.
IMAGE_CLASSES: frozenset[str] = VOLUME_IMAGE_CLASSES | {
    u.EnhancedMRColorImageStorage,
    u.SecondaryCaptureImageStorage,
    u.MultiFrameSingleBitSecondaryCaptureImageStorage,
    u.MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    u.MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    u.MultiFrameTrueColorSecondaryCaptureImageStorage,
    u.ParametricMapStorage,
}

_LABEL_MAP_SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.7"  # Sup 243 (2024); highdicom LABELMAP
_SIEMENS_CSA_NON_IMAGE = "1.3.12.2.1107.5.9.1"  # private; in most Siemens MR studies

NON_IMAGE_CLASSES: frozenset[str] = frozenset({
    # segmentations and structures a reader (or Hepatica) drew
    u.SegmentationStorage, _LABEL_MAP_SEGMENTATION, u.SurfaceSegmentationStorage,
    u.RTStructureSetStorage,
    # structured reports of every kind, key objects
    u.BasicTextSRStorage, u.EnhancedSRStorage, u.ComprehensiveSRStorage,
    u.Comprehensive3DSRStorage, u.ExtensibleSRStorage, u.KeyObjectSelectionDocumentStorage,
    u.XRayRadiationDoseSRStorage, u.EnhancedXRayRadiationDoseSRStorage,
    u.PatientRadiationDoseSRStorage, u.RadiopharmaceuticalRadiationDoseSRStorage,
    u.AcquisitionContextSRStorage, u.PlannedImagingAgentAdministrationSRStorage,
    u.PerformedImagingAgentAdministrationSRStorage, u.ImplantationPlanSRStorage,
    u.MammographyCADSRStorage, u.ChestCADSRStorage, u.ColonCADSRStorage,
    u.SimplifiedAdultEchoSRStorage, u.WaveformAnnotationSRStorage,
    # presentation states
    u.GrayscaleSoftcopyPresentationStateStorage, u.ColorSoftcopyPresentationStateStorage,
    u.PseudoColorSoftcopyPresentationStateStorage, u.BlendingSoftcopyPresentationStateStorage,
    u.AdvancedBlendingPresentationStateStorage,
    u.VariableModalityLUTSoftcopyPresentationStateStorage,
    u.GrayscalePlanarMPRVolumetricPresentationStateStorage,
    u.CompositingPlanarMPRVolumetricPresentationStateStorage,
    u.VolumeRenderingVolumetricPresentationStateStorage,
    u.SegmentedVolumeRenderingVolumetricPresentationStateStorage,
    u.MultipleVolumeRenderingVolumetricPresentationStateStorage,
    # registrations, value maps, documents, protocols, raw data
    u.SpatialRegistrationStorage, u.DeformableSpatialRegistrationStorage,
    u.RealWorldValueMappingStorage, u.EncapsulatedPDFStorage, u.EncapsulatedCDAStorage,
    u.CTPerformedProcedureProtocolStorage, u.RawDataStorage, u.MRSpectroscopyStorage,
    _SIEMENS_CSA_NON_IMAGE,
})

STORAGE_CLASSES: tuple[str, ...] = tuple(sorted(IMAGE_CLASSES | NON_IMAGE_CLASSES))
"""Every storage SOP class accepted, sorted; fewer than 127 so a C-GET SCU can propose all."""

_UNCOMPRESSED: tuple[str, ...] = (
    u.ExplicitVRLittleEndian, u.ImplicitVRLittleEndian, u.DeflatedExplicitVRLittleEndian,
    u.ExplicitVRBigEndian,
)
COMPRESSED_CANDIDATES: tuple[str, ...] = (
    u.JPEGBaseline8Bit, u.JPEGExtended12Bit, u.JPEGLossless, u.JPEGLosslessSV1,
    u.JPEGLSLossless, u.JPEGLSNearLossless, u.JPEG2000Lossless, u.JPEG2000,
    u.HTJ2KLossless, u.HTJ2KLosslessRPCL, u.HTJ2K, u.RLELossless,
)


def _decodable(syntax: str) -> bool:
    try:
        return bool(get_decoder(u.UID(syntax)).is_available)
    except NotImplementedError:
        return False


ACCEPTED_TRANSFER_SYNTAXES: tuple[str, ...] = (
    *_UNCOMPRESSED, *(ts for ts in COMPRESSED_CANDIDATES if _decodable(ts)),
)
"""Uncompressed and deflated first (preferred when a peer offers several), then every
compressed syntax pydicom can decode here."""


def is_volume_image(sop_class_uid: object) -> bool:
    """True for the classes :func:`dicom_io.series.series_to_volume` may stack."""
    return str(sop_class_uid or "").strip("\0 ") in VOLUME_IMAGE_CLASSES
