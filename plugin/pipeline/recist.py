"""Priors and RECIST 1.1 / mRECIST response: the pipeline step that composes the rooms.

For the current study it finds the patient's earlier studies (``dicom_io.priors`` over
DIMSE, or Orthanc's REST API beside Orthanc), segments and measures each with the same
model, orders the time points by date and time, and assesses the response
(``inference.response_criteria``); ``export.sr.response`` turns that into coded TID 1501
groups. Any failure here is recorded as a note in the SR, never fails the study: a missing
prior must not cost the patient the current measurements.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from dicom_io.phases import PhaseRules
from dicom_io.priors import (
    PacsPeer,
    PriorCache,
    PriorsError,
    PriorStudy,
    find_prior_studies,
    get_study,
    move_study,
)
from dicom_io.roi import image_series
from dicom_io.selection import label_all
from dicom_io.series import GeometryError, load_study
from dicom_io.tls import client_tls
from dicom_io.volume import Volume, resample_like
from export.seg.sop import lesion_segment_number
from export.sr.response import LesionResponseRow, OverallResponse, response_groups
from export.sr.sop import lesion_tracking_uid
from inference.bundle import Bundle
from inference.measurements import StudyMeasurements, measure
from inference.response_criteria import (
    LesionObservation,
    ResponseAssessment,
    TimePoint,
    assess_response,
)
from plugin.pipeline.context import StudyContext

__all__ = [
    "DimsePriors",
    "PriorResponse",
    "PriorSettings",
    "PriorSource",
    "assess_priors",
    "measure_study_dir",
    "recist_step",
    "timepoint_of",
]

log = logging.getLogger(__name__)

MeasureDir = Callable[[Path], TimePoint]


class PriorSource(Protocol):
    """Finds and retrieves a patient's earlier studies; returns (study, local folder)."""

    def fetch(self, patient_id: str, study_uid: str, study_date: dt.date
              ) -> list[tuple[PriorStudy, Path]]: ...


@dataclass(frozen=True)
class PriorSettings:
    """Where priors come from; ``source`` None turns the step off."""

    source: PriorSource | None = None


@dataclass
class DimsePriors:
    """C-FIND, then C-MOVE to our own SCP (files land in ``spool_dir``) or C-GET, cached."""

    peer: PacsPeer
    own_ae: str
    lookback_days: int
    cache: PriorCache
    retrieve: str = "move"
    spool_dir: Path | None = None
    expect: Callable[[str], None] = field(default=lambda uid: None)

    def fetch(self, patient_id: str, study_uid: str, study_date: dt.date
              ) -> list[tuple[PriorStudy, Path]]:
        found = find_prior_studies(self.peer, patient_id, before=study_date,
                                   lookback_days=self.lookback_days, exclude=[study_uid])
        return [(prior, self._retrieved(prior.study_uid)) for prior in found]

    def _retrieved(self, study_uid: str) -> Path:
        cached = self.cache.lookup(study_uid)
        if cached is not None:
            return cached
        if self.retrieve == "move" and self.spool_dir is not None:
            self.expect(study_uid)  # our SCP must file it without queueing a job
            count = move_study(self.peer, study_uid, self.own_ae)
            folder = self.spool_dir / study_uid
        else:
            folder = self.cache.folder(study_uid)
            count = get_study(self.peer, study_uid, folder)
        self.cache.mark_complete(study_uid, folder, count)
        return folder


@dataclass(frozen=True)
class PriorResponse:
    """What the step found: the assessment, or why there is none."""

    assessment: ResponseAssessment | None
    note: str
    priors: tuple[str, ...] = ()
    current: TimePoint | None = None

    def text(self) -> list[tuple[str, str]]:
        """SR notes (TID 1500 row 14) and summary lines."""
        a = self.assessment
        if a is None:
            return [("Response (RECIST 1.1 / mRECIST)", self.note)]
        return [("Response RECIST 1.1", f"{a.recist}: sum {a.current_sum_mm:.1f} mm, baseline "
                 f"{a.baseline_sum_mm:.1f} mm ({a.change_from_baseline_pct:+.1f} %), nadir "
                 f"{a.nadir_sum_mm:.1f} mm, new lesions {a.new_lesions}"),
                ("Response mRECIST", f"{a.mrecist}: viable sum {a.current_viable_sum_mm:.1f} mm,"
                 f" baseline {a.baseline_viable_sum_mm:.1f} mm "
                 f"({a.viable_change_from_baseline_pct:+.1f} %)"),
                ("Response method", f"{self.note}; {a.rules}")]

    def groups(self, segmentation: Dataset) -> list[hd.sr.MeasurementsAndQualitativeEvaluations]:
        """Coded TID 1501 groups; lesion groups share the TID 1411 groups' tracking UIDs."""
        a = self.assessment
        if a is None:
            return []
        overall = [OverallResponse("RECIST 1.1", a.recist, a.baseline_sum_mm, a.nadir_sum_mm,
                                   a.current_sum_mm, a.new_lesions, a.baseline_study_uid),
                   OverallResponse("mRECIST", a.mrecist, a.baseline_viable_sum_mm,
                                   a.nadir_viable_sum_mm, a.current_viable_sum_mm,
                                   a.new_lesions, a.baseline_study_uid)]
        seg_uid = str(segmentation.SOPInstanceUID)
        rows = [_row(x, seg_uid, a.baseline_study_uid) for x in a.lesions]
        return response_groups(overall, rows)

    def summary(self) -> dict[str, Any]:
        a = self.assessment
        out: dict[str, Any] = {"note": self.note, "priors": list(self.priors)}
        if a is not None:
            out.update(recist=a.recist, mrecist=a.mrecist, new_lesions=a.new_lesions,
                       baseline_sum_mm=round(a.baseline_sum_mm, 2),
                       current_sum_mm=round(a.current_sum_mm, 2),
                       baseline_viable_sum_mm=round(a.baseline_viable_sum_mm, 2),
                       current_viable_sum_mm=round(a.current_viable_sum_mm, 2))
        return out


def _row(lesion: Any, seg_uid: str, baseline_uid: str) -> LesionResponseRow:
    if lesion.current_label is not None:
        label, uid = (f"Lesion {lesion.current_label}",
                      lesion_tracking_uid(seg_uid, lesion_segment_number(lesion.current_label)))
    else:  # a baseline lesion not found now: tracked under the baseline's identity
        label = f"Baseline lesion {lesion.baseline_label} (not found)"
        uid = lesion_tracking_uid(baseline_uid, 1000 + int(lesion.baseline_label))
    return LesionResponseRow(label, uid, lesion.status, lesion.baseline_diameter_mm,
                             lesion.current_diameter_mm, lesion.baseline_viable_mm,
                             lesion.current_viable_mm)


def _when(ds: Dataset) -> str:
    date = str(ds.get("StudyDate", "") or "")
    time = str(ds.get("StudyTime", "") or "").split(".")[0]
    return (date + time.ljust(6, "0"))[:14]


def timepoint_of(ds: Dataset, arterial: Volume, labels: npt.NDArray[np.integer],
                 measurements: StudyMeasurements) -> TimePoint:
    """A time point in patient mm: lesion centroids and the liver's centroid."""
    organ = np.argwhere(labels > 0)
    liver = (arterial.index_to_patient(organ.mean(axis=0))[0] if len(organ)
             else np.zeros(3))
    lesions = tuple(LesionObservation(
        x.label, _triple(arterial.index_to_patient(x.centroid_zyx)[0]), x.longest_diameter_mm,
        x.viable_diameter_mm) for x in measurements.lesions)
    return TimePoint(str(ds.StudyInstanceUID), _when(ds), _triple(liver), lesions)


def _triple(values: npt.NDArray[np.float64]) -> tuple[float, float, float]:
    return float(values[0]), float(values[1]), float(values[2])


def measure_study_dir(study_dir: Path, bundle: Bundle, rules: PhaseRules | None,
                      segment_labels: Callable[[list[Volume]], npt.NDArray[np.integer]],
                      ) -> TimePoint:
    """Segment and measure a prior study the way the current one is (same model, same
    selection path and site rules)."""
    from plugin.pipeline.select import NoSegmentationInputs, choose_segmentation

    labelled = label_all(image_series(load_study(study_dir)), rules)
    try:
        inputs = choose_segmentation(labelled, [bundle], rules)
    except NoSegmentationInputs as exc:
        raise PriorsError(f"prior study not usable: {exc}") from exc
    reference = inputs.reference.volume
    channels = [resample_like(s.volume, reference) for s in inputs.selected.values()]
    labels = segment_labels(channels)
    measurements = measure(labels, reference.spacing, arterial=reference.array,
                           origin_xyz=reference.origin, direction=reference.direction)
    return timepoint_of(inputs.datasets[0], reference, labels, measurements)


def assess_priors(settings: PriorSettings | None, current: TimePoint, first: Dataset,
                  measure_dir: MeasureDir) -> PriorResponse:
    """Fetch the priors, measure them, assess; every failure becomes the note."""
    if settings is None or settings.source is None:
        return PriorResponse(None, "no prior studies queried (priors disabled)")
    try:
        found = settings.source.fetch(str(first.get("PatientID", "")),
                                      str(first.StudyInstanceUID), _study_date(first))
    except (PriorsError, OSError, LookupError, RuntimeError) as exc:
        log.warning("priors not available: %s", exc)
        return PriorResponse(None, f"priors not available: {exc}", current=current)
    points, used = [current], []
    for prior, folder in found:
        try:
            points.append(measure_dir(folder))
            used.append(prior.study_uid)
        except (PriorsError, GeometryError, ValueError) as exc:
            log.warning("prior …%s not measurable: %s", prior.study_uid[-12:], exc)
    if len(points) < 2:
        return PriorResponse(None, f"no measurable prior study ({len(found)} found)",
                             current=current)
    assessment = assess_response(points)
    note = (f"{len(used)} prior study/studies, baseline {assessment.baseline_study_uid} "
            f"(time points ordered by StudyDate/StudyTime)")
    return PriorResponse(assessment, note, tuple(used), current)


def _study_date(ds: Dataset) -> dt.date:
    text = str(ds.get("StudyDate", "") or "")
    try:
        return dt.datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        return dt.date.today()


def recist_step(ctx: StudyContext) -> None:
    """RECIST 1.1 / mRECIST: the current study as a time point, its priors measured alike."""
    from inference.segmentation import segment

    assert ctx.inputs is not None and ctx.segmentation is not None
    assert ctx.measurements is not None
    bundle, session = ctx.inputs.bundle, ctx.extra["session"]

    def segment_labels(channels: list[Volume]) -> npt.NDArray[np.integer]:
        return segment(bundle, session, [v.array for v in channels], channels[0].spacing,
                       direction=channels[0].direction).labels

    first = ctx.inputs.datasets[0]
    current = timepoint_of(first, ctx.reference_volume, ctx.segmentation.labels,
                           ctx.measurements)
    ctx.recist = assess_priors(ctx.settings.priors, current, first, lambda folder:
                               measure_study_dir(folder, bundle, ctx.rules, segment_labels))


def dimse_priors(config: Any, expect: Callable[[str], None]) -> PriorSettings | None:
    """Priors over DIMSE from a ``HepaticaConfig`` (None when ``[priors] enabled`` is off)."""
    p = config.priors
    if not p.enabled:
        return None
    own = config.listener.ae_title
    tls = client_tls(p.tls_certificate, p.tls_key, p.tls_ca, p.tls_verify_hostname)
    peer = PacsPeer(p.ae_title, p.host, p.port, own, p.timeout_seconds, tls)
    return PriorSettings(DimsePriors(peer, own, p.lookback_days, PriorCache(config.priors_dir),
                                     p.retrieve, config.spool_dir, expect))
