"""Values shared by every Hepatica result object (SEG, SR, SC).

Why one module: the disclaimer, the manufacturer and the way result UIDs are
derived must be identical across the three object families, otherwise a viewer
or an archive would see three different "devices" and re-processing would
duplicate rather than replace results.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

__all__ = [
    "AIR_CODING_SCHEME",
    "AIR_PROCESSING_ALGORITHM",
    "MANUFACTURER",
    "RESEARCH_USE_TEXT",
    "UID_PREFIX",
    "AlgorithmInfo",
    "LesionLike",
    "ResultIdentity",
    "algorithm_family_code",
    "contributing_equipment",
    "declare_air_scheme",
    "derive_uid",
    "device_uid",
    "file_digest",
    "require_same_study",
]

RESEARCH_USE_TEXT = "RESEARCH USE ONLY — not for diagnostic use"
MANUFACTURER = "Hepatica"
# pydicom's documented prefix for UIDs generated from hashed entropy sources
# (PS3.5 §9 only requires a registered root; a site can pass its own).
UID_PREFIX = "1.2.826.0.1.3680043.8.498."
# All result objects are written as UTF-8: the disclaimer contains an em dash,
# which is outside the default repertoire (PS3.5 §6.1.2.5.3).
CHARACTER_SET = "ISO_IR 192"
_UID_NAMESPACE = "hepatica-result-uid"

# IHE AIR Rev 1.1, 6.5.3.1: the Contributing Equipment item that describes an algorithm has
# Purpose of Reference (Newcode1, 99IHE, "Processing Algorithm"), a code IHE defined while
# DICOM has none (CID 7005 has no such concept; DCM 109103 is "Modifying Equipment").
# One constant, so the code can follow when DICOM assigns one.
AIR_SCHEME = "99IHE"
AIR_PROCESSING_ALGORITHM = hd.sr.CodedConcept(
    value="Newcode1", scheme_designator=AIR_SCHEME, meaning="Processing Algorithm"
)
AIR_CODING_SCHEME = hd.coding_schemes.CodingSchemeIdentificationItem(
    designator=AIR_SCHEME,
    name="IHE Radiology codes defined pending DICOM assignment",
    responsible_organization="IHE International",
)


@dataclass(frozen=True)
class AlgorithmInfo:
    """Identity of the model that produced a result (IHE AIR: name, version, family).

    ``family`` is Hepatica's own family name of the bundle ("segmentation",
    "response", ...); the DICOM Algorithm Family code is derived from it.
    ``model_digest`` identifies the trained weights (e.g. :func:`file_digest` of the model
    file): it enters the Device UID, so retraining under the same name and version still
    gives a new device. Empty: the UID depends on name and version only.
    """

    name: str
    version: str
    family: str
    model_digest: str = ""


class LesionLike(Protocol):
    """What the exporters read from one measured lesion.

    A Protocol (read-only properties) so that ``inference``'s frozen
    ``LesionMeasurement`` satisfies it without ``export`` importing ``inference``.
    """

    @property
    def label(self) -> int:
        """1-based lesion number; lesion k is SEG segment k + 1."""

    @property
    def volume_ml(self) -> float:
        """Lesion volume in millilitres."""

    @property
    def longest_diameter_mm(self) -> float:
        """Longest diameter of the whole lesion in millimetres."""

    @property
    def viable_diameter_mm(self) -> float | None:
        """Longest diameter of the enhancing (viable) part, as mRECIST measures it.

        None when no arterial phase was available to tell viable from necrotic tissue."""

    @property
    def centroid_zyx(self) -> tuple[float, float, float]:
        """Centroid as a voxel index on the source grid."""

    @property
    def longest_diameter_endpoints_zyx(
        self,
    ) -> tuple[tuple[float, float, float], tuple[float, float, float]] | None:
        """The two voxel centres ``[z, y, x]`` (same z) joined by the longest diameter.

        z indexes the source images in SEG order. None when unknown: the report then has
        no planar (TID 1410) group for the lesion, which viewers need to draw it."""


def derive_uid(*parts: str, prefix: str = UID_PREFIX) -> str:
    """Return a UID that depends only on ``parts``.

    Deterministic so that processing the same study again with the same
    pipeline version replaces the earlier result objects instead of adding
    copies next to them.
    """
    if not parts:
        raise ValueError("derive_uid needs at least one part to hash")
    return str(generate_uid(prefix=prefix, entropy_srcs=[_UID_NAMESPACE, *parts]))


@dataclass(frozen=True)
class ResultIdentity:
    """Study, series and instance identity of one result object."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    series_number: int
    instance_number: int = 1

    @classmethod
    def derive(
        cls,
        study_instance_uid: str,
        pipeline_version: str,
        kind: str,
        series_number: int,
        instance_number: int = 1,
    ) -> ResultIdentity:
        """Derive the identity of result ``kind`` (e.g. "seg") for one study.

        The series UID hashes study, pipeline version and kind; the instance UID
        adds the instance number, so a series of heatmaps keeps one series UID.
        """
        series_uid = derive_uid(study_instance_uid, pipeline_version, kind)
        sop_uid = derive_uid(study_instance_uid, pipeline_version, kind, str(instance_number))
        return cls(study_instance_uid, series_uid, sop_uid, series_number, instance_number)


def algorithm_family_code(algorithm: AlgorithmInfo) -> hd.sr.CodedConcept:
    """DICOM Algorithm Family (CID 7162) for a Hepatica bundle.

    Every Hepatica bundle is a trained model, hence "Artificial Intelligence";
    the finer Hepatica family travels in the algorithm parameters.
    """
    del algorithm  # one family for all bundles today; kept for future bundles
    return hd.sr.CodedConcept.from_code(codes.cid7162.ArtificialIntelligence)


def file_digest(*paths: Path | str) -> str:
    """SHA-256 (hex) over the bytes of ``paths`` in order: a model's ``model_digest``."""
    if not paths:
        raise ValueError("file_digest needs at least one file")
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def device_uid(algorithm: AlgorithmInfo) -> str:
    """Device UID of the algorithm: name, version and weights digest, hashed.

    IHE AIR asks for a new Device UID whenever the model changes (e.g. retraining), so a
    reader can tell results of two trainings apart even under one name and version. The same
    UID is the SR's Device Observer UID (TID 1004): one device, one identity.
    """
    return derive_uid("device", algorithm.name, algorithm.version, algorithm.model_digest)


def contributing_equipment(
    algorithm: AlgorithmInfo, software_versions: str
) -> hd.ContributingEquipment:
    """Contributing Equipment item describing the algorithm (IHE AIR Rev 1.1, 6.5.3.1).

    Purpose "Processing Algorithm", Manufacturer, Manufacturer's Model Name (the model),
    Software Versions (the model's version first, then Hepatica's) and Device UID. The
    Contribution Description carries the research-use disclaimer so that it travels in
    every object, whatever the object's own text attributes allow.
    """
    item = hd.ContributingEquipment(
        manufacturer=MANUFACTURER,
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=algorithm.name,
        software_versions=[algorithm.version, software_versions],
        contribution_description=f"{algorithm.name} {algorithm.version}. {RESEARCH_USE_TEXT}",
    )
    # highdicom 0.28 accepts only CID 7005 codes here; the context group is a defined
    # (extensible) one, so the AIR code replaces the placeholder after construction.
    item.PurposeOfReferenceCodeSequence = [AIR_PROCESSING_ALGORITHM]
    item.DeviceUID = device_uid(algorithm)
    return item


def declare_air_scheme(dataset: Dataset) -> None:
    """Add 99IHE to the Coding Scheme Identification Sequence (PS3.3 C.12.1.1.4).

    For objects whose highdicom constructor takes no coding schemes (SEG, SC): a reader of
    the Contributing Equipment item can then look up where its purpose code comes from.
    """
    schemes = list(dataset.get("CodingSchemeIdentificationSequence", []))
    if all(item.CodingSchemeDesignator != AIR_SCHEME for item in schemes):
        dataset.CodingSchemeIdentificationSequence = [*schemes, AIR_CODING_SCHEME]


def require_same_study(source_images: Sequence[Dataset]) -> str:
    """Return the one Study Instance UID of ``source_images`` or raise.

    Results go back into the study they were computed from; mixing studies
    would silently attach a result to the wrong examination.
    """
    if not source_images:
        raise ValueError("at least one source image is required")
    studies = {str(ds.StudyInstanceUID) for ds in source_images}
    if len(studies) != 1:
        raise ValueError(f"source images belong to {len(studies)} studies: {sorted(studies)}")
    return studies.pop()
