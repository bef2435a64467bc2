"""A site's annotated studies: image series + a reader's SEG/RTSTRUCT → labelled arrays.

``hepatica train segmentation --studies`` and ``hepatica evaluate segmentation`` read the
studies a site already has in its PACS, exported as DICOM files under one folder (any layout:
files are grouped by StudyInstanceUID). A study counts when it holds a reader's SEG or
RTSTRUCT (``dicom_io.roi``: Hepatica's own results never count) with a liver and/or a tumour
region, and the image series a bundle reads. Each bundle channel is filled as serving fills
it: the phases the bundle accepts for it (``BundleInputs.accepted``), preferred first, chosen
by ``dicom_io.selection``; the annotated series itself wins channel 0 when its phase is
accepted there. The reader's regions are placed on that series' grid in patient space.

What was drawn decides what the labels claim: liver and tumours drawn → 0/1/2; only a liver
→ "liver or tumour" inside it (code 4), since tumours may not have been outlined; only
tumours → "background or liver" outside them (code 3). Studies are named by a hash of their
StudyInstanceUID (``dicom_io.privacy``): no identifier leaves in clear.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from dicom_io.phases import PhaseRules, default_rules
from dicom_io.privacy import hash_identifier
from dicom_io.roi import RoiError, image_series, read_reader_roi, reader_roi_series
from dicom_io.selection import LabelledSeries, choose, label_all
from dicom_io.series import GeometryError, SeriesInstances, load_study, series_to_volume
from dicom_io.volume import Volume, resample_like
from inference.bundle import BundleInputs
from inference.training.domain_randomisation import NOT_TUMOUR, ORGAN

__all__ = ["AnnotatedStudy", "Skipped", "load_annotated_studies"]

log = logging.getLogger(__name__)

LIVER_WORDS = re.compile(r"(?i)liver|hepat|\bleber\b|\bfoie\b|\bhígado\b|\bfegato\b")
"""A non-tumour region whose name matches outlines the liver."""


@dataclass(frozen=True)
class AnnotatedStudy:
    """One study's bundle channels on the annotated grid and the reader's labels."""

    key: str  # hash of the StudyInstanceUID
    modality: str
    phases: tuple[str, ...]  # the phase label that filled each channel
    channels: tuple[npt.NDArray[np.float32], ...]
    labels: npt.NDArray[np.uint8]  # 0/1/2, or partial codes 3/4
    reference: Volume  # geometry of the annotated grid (array = channel 0)
    liver_drawn: bool
    tumour_drawn: bool
    roi: str  # which object(s), for the report (UIDs, no patient identifiers)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return self.reference.spacing


@dataclass(frozen=True)
class Skipped:
    """A study that could not be used, and why."""

    key: str
    reason: str


def group_by_study(root: Path) -> dict[str, list[SeriesInstances]]:
    """Every DICOM series under ``root``, grouped by StudyInstanceUID."""
    groups: dict[str, list[SeriesInstances]] = defaultdict(list)
    for series in load_study(root):
        groups[str(series.first.get("StudyInstanceUID", ""))].append(series)
    return dict(sorted(groups.items()))


def load_annotated_studies(root: Path, inputs: BundleInputs,
                           rules: PhaseRules | None = None
                           ) -> tuple[list[AnnotatedStudy], list[Skipped]]:
    """The usable annotated studies under ``root`` and the skipped ones with reasons."""
    rules = rules or default_rules()
    found: list[AnnotatedStudy] = []
    skipped: list[Skipped] = []
    for uid, series in group_by_study(root).items():
        key = hash_identifier(uid)
        try:
            found.append(_study(key, series, inputs, rules))
        except _Unusable as exc:
            log.info("study %s skipped: %s", key, exc)
            skipped.append(Skipped(key, str(exc)))
    return found, skipped


class _Unusable(ValueError):
    """The study lacks what training or evaluation needs (the message says what)."""


def _study(key: str, series: Sequence[SeriesInstances], inputs: BundleInputs,
           rules: PhaseRules) -> AnnotatedStudy:
    rois = reader_roi_series(series)
    if not rois:
        raise _Unusable("no reader SEG or RTSTRUCT")
    labelled = label_all(image_series(series), rules)
    chosen = _fill_channels(labelled, inputs, _referenced_series(rois), rules)
    try:
        volumes = [series_to_volume(item.series) for item in chosen]
    except GeometryError as exc:
        raise _Unusable(f"image series not a regular grid: {exc.reason}") from exc
    reference = volumes[0]
    _check_image(reference)
    channels = [reference.array] + [resample_like(v, reference).array for v in volumes[1:]]
    liver, tumour, described = _reader_masks(rois, reference)
    return AnnotatedStudy(key, str(chosen[0].series.modality).upper(),
                          tuple(item.label.label for item in chosen),
                          tuple(np.asarray(c, np.float32) for c in channels),
                          _labels(liver, tumour, reference.shape), reference,
                          liver is not None, tumour is not None, described)


MIN_FIELD_MM = 100.0
"""An image narrower than this cannot hold a liver (test objects, scouts, crops)."""


def _check_image(volume: Volume) -> None:
    field = [n * s for n, s in zip(volume.shape[:0:-1], volume.spacing[:2], strict=True)]
    if min(field) < MIN_FIELD_MM:
        raise _Unusable(f"the image covers only {field[0]:.0f} × {field[1]:.0f} mm in plane")
    if float(np.ptp(volume.array)) == 0.0:
        raise _Unusable("the image is blank (one value everywhere)")


def _referenced_series(rois: Sequence[SeriesInstances]) -> set[str]:
    """SeriesInstanceUIDs the reader's objects were drawn on (SEG and RTSTRUCT references)."""
    out: set[str] = set()
    for item in rois:
        ds = item.first
        for ref in ds.get("ReferencedSeriesSequence", []):
            out.add(str(ref.get("SeriesInstanceUID", "")))
        for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
            for study in frame.get("RTReferencedStudySequence", []):
                for ref in study.get("RTReferencedSeriesSequence", []):
                    out.add(str(ref.get("SeriesInstanceUID", "")))
    return out


def _fill_channels(labelled: Sequence[LabelledSeries], inputs: BundleInputs,
                   annotated: set[str], rules: PhaseRules) -> list[LabelledSeries]:
    chosen: list[LabelledSeries] = []
    for index, channel in enumerate(inputs.phases):
        accepted = inputs.accepted(channel)
        pick = None
        if index == 0:  # the series the reader drew on, when the bundle accepts its phase
            pick = next((item for item in labelled if item.series.series_uid in annotated
                         and _accepts(accepted, item.label.label)), None)
        for phase in accepted:
            if pick is not None:
                break
            pick = choose(labelled, phase, rules=rules).chosen
        if pick is None:
            raise _Unusable(f"no series for channel {channel} (accepts {', '.join(accepted)})")
        chosen.append(pick)
    return chosen


def _accepts(accepted: Sequence[str], label: str) -> bool:
    from dicom_io.selection import EQUIVALENT_LABELS

    return any(label in EQUIVALENT_LABELS.get(phase, (phase,)) for phase in accepted)


def _reader_masks(rois: Sequence[SeriesInstances], reference: Volume
                  ) -> tuple[npt.NDArray[np.bool_] | None, npt.NDArray[np.bool_] | None, str]:
    """Union of the liver regions and of the tumour regions over the reader's objects."""
    liver: npt.NDArray[np.bool_] | None = None
    tumour: npt.NDArray[np.bool_] | None = None
    described = []
    for item in rois:
        try:
            roi = read_reader_roi(item, reference)
        except (RoiError, ValueError, AttributeError, KeyError, IndexError) as exc:
            described.append(f"{item.modality} …{item.series_uid[-12:]} unreadable ({exc})")
            continue
        for region in roi.regions:
            if not region.mask.any():
                continue
            if region.tumour:
                tumour = region.mask if tumour is None else tumour | region.mask
            elif LIVER_WORDS.search(region.name):
                liver = region.mask if liver is None else liver | region.mask
            else:
                continue
            described.append(f"{roi.modality} …{roi.sop_instance_uid[-12:]} "
                             f"region {region.number} {region.name!r}")
    if liver is None and tumour is None:
        raise _Unusable("the reader's objects hold no liver or tumour region on the image grid"
                        + (f" ({'; '.join(described)})" if described else ""))
    return liver, tumour, "; ".join(described)


def _labels(liver: npt.NDArray[np.bool_] | None, tumour: npt.NDArray[np.bool_] | None,
            shape: tuple[int, int, int]) -> npt.NDArray[np.uint8]:
    labels = np.zeros(shape, np.uint8)
    if liver is not None and tumour is not None:
        labels[liver | tumour] = 1
        labels[tumour] = 2
    elif liver is not None:
        labels[liver] = ORGAN
    elif tumour is not None:
        labels[:] = NOT_TUMOUR
        labels[tumour] = 2
    return labels
