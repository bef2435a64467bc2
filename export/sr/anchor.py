"""Tie the report's ROI-less TID 1501 groups to a finding that has a place in the images.

Why: the response-model groups and the RECIST groups (``export.sr.response_models``,
``export.sr.response``) have no ROI of their own, and two readers of the report stumble on that:

- OHIF 3.13 merges the groups of one Tracking UID and reads the first SCOORD of every UID,
  unguarded: a UID without one stops the SR viewport (``docs/orthanc.md``).
- PixelMed's DicomSRValidator decides between TID 1410, 1411 and 1501 once for the whole
  Imaging Measurements container: as soon as one group references a segment, every group is
  checked as TID 1411, and one without an ROI is an error.

So, in a report with a SEG, each such group keeps its own tracking identifier and UID (IHE
AIR: every group has both) and TID 1501 lets it carry images and coordinates (rows 10b-10d):

- a group tracking a lesion of this report gets that lesion's Referenced Segment (OHIF merges
  it with the lesion's long-axis line);
- any other group (a model's prediction, a whole-liver response, a baseline lesion not found
  now) is an observation about the liver: it gets the liver's Referenced Segment and, when the
  liver outline is known, that outline as an "Approximate spatial location" (DCM 121226,
  CID 7551) selected from its slice, so OHIF has coordinates to place it.

A group without TID 4019 Algorithm Identification gets the report's, so every group names the
algorithm whose output it rests on (IHE AIR).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import TypeVar

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

__all__ = ["anchor_groups", "tracking_uid_of"]

G = TypeVar("G", bound=hd.sr.MeasurementsAndQualitativeEvaluations)

_TRACKING_UID = "112040"
_ALGORITHM_NAME = "111001"
_REFERENCED_SEGMENT = "121191"
_IMAGE_REGION = "111030"


def tracking_uid_of(group: Sequence[Dataset]) -> str | None:
    """The group's Tracking Unique Identifier (TID 4108), if any."""
    for item in group[0].ContentSequence:
        if item.ConceptNameCodeSequence[0].CodeValue == _TRACKING_UID:
            return str(item.UID)
    return None


def anchor_groups(
    groups: Sequence[G],
    *,
    segments_by_uid: Mapping[str, hd.sr.ReferencedSegment],
    liver_segment: hd.sr.ReferencedSegment,
    liver_region: Dataset | None,
    algorithm_id: hd.sr.AlgorithmIdentification,
) -> list[G]:
    """Copies of ``groups`` with a segment reference, a location and an algorithm each.

    ``segments_by_uid`` maps each lesion's tracking UID to its Referenced Segment;
    ``liver_region`` is the SCOORD "Image Region" item of the liver outline group (or None).
    The inputs are not modified.
    """
    anchored = []
    for group in groups:
        own = copy.deepcopy(group)
        content = own[0].ContentSequence
        uid = tracking_uid_of(own)
        if not _has(content, _REFERENCED_SEGMENT, _IMAGE_REGION):
            if uid is not None and uid in segments_by_uid:
                content.extend(copy.deepcopy(segments_by_uid[uid]))
            else:
                content.extend(copy.deepcopy(liver_segment))
                if liver_region is not None:
                    content.append(_approximate_location(liver_region))
        if not _has(content, _ALGORITHM_NAME):
            content.extend(copy.deepcopy(algorithm_id))
        anchored.append(own)
    return anchored


def _has(content: Sequence[Dataset], *code_values: str) -> bool:
    return any(item.ConceptNameCodeSequence[0].CodeValue in code_values for item in content)


def _approximate_location(region: Dataset) -> Dataset:
    """The liver outline SCOORD renamed "Approximate spatial location" (CID 7551)."""
    location = copy.deepcopy(region)
    location.ConceptNameCodeSequence = [
        hd.sr.CodedConcept.from_code(codes.DCM.ApproximateSpatialLocation)
    ]
    return location
