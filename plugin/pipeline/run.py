"""The pipeline of one study: series → phases → volumes → segmentation → measurements →
SEG, TID 1500 SR and heatmaps. Composes the three rooms; holds no DICOM or model logic.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from dicom_io.phases import PhaseRules, load_site_rules
from dicom_io.roi import image_series
from dicom_io.selection import LabelledSeries, choose, label_all
from dicom_io.series import GeometryError, load_study, series_to_volume
from dicom_io.volume import Volume, resample_like
from export.common import RESEARCH_USE_TEXT, AlgorithmInfo, ResultIdentity
from export.sc.sop import build_heatmap_image
from export.seg.sop import build_segmentation
from export.sr.sop import build_measurement_report
from inference.bundle import Bundle
from inference.measurements import StudyMeasurements, measure
from inference.runtime import create_session
from inference.segmentation import SegmentationResult, segment
from plugin import __version__
from plugin.pipeline.models import pipeline_version, segmentation_bundle
from plugin.pipeline.partial_report import report_without_segmentation
from plugin.pipeline.prediction import (
    ResponseOutcome,
    ResponseSettings,
    response_sr_parts,
    run_for_pipeline,
)
from plugin.pipeline.reader_roi import choose_tumour_roi
from plugin.pipeline.recist import PriorResponse, PriorSettings, run_in_pipeline

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

HEATMAP_PHASES = ("PRE", "AP", "PVP", "DP")


class PipelineError(RuntimeError):
    """The study cannot be processed; the message says why and what to do."""


class MissingPhaseError(PipelineError):
    """The segmentation bundle lacks an input phase: it cannot run, the SR says why."""


@dataclass(frozen=True)
class PipelineSettings:
    """What the pipeline needs from the configuration."""

    bundle_dirs: tuple[Path, ...] = ()
    series_number_base: int = 9900
    providers: tuple[str, ...] = ()
    response: ResponseSettings = field(default_factory=ResponseSettings)
    priors: PriorSettings | None = None  # RECIST/mRECIST against prior studies (issue 4)
    phase_rules: tuple[Path, ...] = ()  # site files extending dicom_io/phase_rules.toml


@dataclass
class StudyResult:
    """The files written for one study and the summary that describes them."""

    study_uid: str
    files: list[Path] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


class _Timer:
    def __init__(self, progress: Progress | None) -> None:
        self.timings: dict[str, float] = {}
        self._progress = progress

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        if self._progress:
            self._progress(name)
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - started, 4)


@dataclass(frozen=True)
class _Inputs:
    arterial: Volume
    channels: list[Volume]
    arterial_datasets: list[Dataset]
    labelled: list[LabelledSeries]
    choices: dict[str, str]
    used_series: dict[str, str]


def process_study(study_dir: Path, out_dir: Path, settings: PipelineSettings | None = None,
                  progress: Progress | None = None) -> StudyResult:
    """Run the whole pipeline on the instances under ``study_dir``; write into ``out_dir``."""
    settings = settings or PipelineSettings()
    timer = _Timer(progress)
    bundle = segmentation_bundle(settings.bundle_dirs)
    rules = load_site_rules(settings.phase_rules) if settings.phase_rules else None
    with timer.step("load series"):
        series = load_study(study_dir)
        if not series:
            raise PipelineError(f"no DICOM instances found under {study_dir}")
    with timer.step("label phases"):
        labelled = label_all(image_series(series), rules)
    with timer.step("build volumes"):
        try:
            inputs = _inputs(labelled, bundle, rules)
        except MissingPhaseError as exc:
            return _without_segmentation(labelled, bundle, settings, out_dir, exc, timer)
    with timer.step("segment"):
        session = create_session(bundle.model_file, providers=list(settings.providers) or None)
        seg = segment(bundle, session, [v.array for v in inputs.channels],
                      inputs.arterial.spacing)
    with timer.step("reader ROI"):
        roi = choose_tumour_roi(series, inputs.arterial, seg.labels)
        seg = replace(seg, labels=roi.labels)
    with timer.step("measure"):
        measurements = measure(seg.labels, inputs.arterial.spacing,
                               arterial=inputs.arterial.array,
                               tumour_probability=seg.tumour_probability)
    with timer.step("response models"):
        responses = run_for_pipeline(inputs.labelled, inputs.arterial, inputs.arterial_datasets,
                                     seg.labels, measurements.lesion_labels, settings)
    with timer.step("priors and response"):
        recist = run_in_pipeline(settings.priors, inputs.arterial_datasets[0], inputs.arterial,
                                 seg.labels, measurements, bundle, session)
    out_dir.mkdir(parents=True, exist_ok=True)
    study_uid = str(inputs.arterial_datasets[0].StudyInstanceUID)
    result = StudyResult(study_uid)
    with timer.step("export"):
        result.files = _export(inputs, seg, measurements, bundle, settings, out_dir, responses,
                               recist, roi.text())
    result.summary = _summary(study_uid, inputs, measurements, bundle, session_providers(session),
                              timer.timings, result.files, seg.timings)
    result.summary["response_models"] = [o.summary() for o in responses]
    result.summary["response"] = recist.summary()
    result.summary["tumour_roi"] = roi.summary()
    (out_dir / "summary.json").write_text(json.dumps(result.summary, indent=2))
    return result


def session_providers(session: object) -> list[str]:
    """The execution providers the session actually runs on."""
    return list(getattr(session, "providers", []))


def _without_segmentation(labelled: list[LabelledSeries], bundle: Bundle,
                          settings: PipelineSettings, out_dir: Path, error: MissingPhaseError,
                          timer: _Timer) -> StudyResult:
    """No prediction from the segmentation model: an SR with the reason, the rest that runs."""
    log.warning("segmentation model not run: %s", error)
    with timer.step("export"):
        try:
            files, summary = report_without_segmentation(
                labelled, bundle, settings, out_dir, str(error), _software_versions(bundle))
        except ValueError as exc:
            raise PipelineError(f"{error}; no report either: {exc}") from exc
    summary["timings_s"] = timer.timings
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return StudyResult(str(summary["study_instance_uid"]), files, summary)


def _inputs(labelled: list[LabelledSeries], bundle: Bundle,
            rules: PhaseRules | None = None) -> _Inputs:
    volumes: dict[str, tuple[Volume, LabelledSeries]] = {}
    choices: dict[str, str] = {}
    for phase in bundle.inputs.phases:
        volume, item, reason = _volume_for(labelled, phase, rules)
        volumes[phase], choices[phase] = (volume, item), reason
    reference_phase = bundle.inputs.phases[0]
    arterial, arterial_item = volumes[reference_phase]
    channels = [resample_like(volumes[p][0], arterial) for p in bundle.inputs.phases]
    by_uid = {str(ds.SOPInstanceUID): ds for ds in arterial_item.series.datasets}
    ordered = [by_uid[uid] for uid in arterial.sop_instance_uids]
    used = {p: volumes[p][1].series.series_uid for p in bundle.inputs.phases}
    return _Inputs(arterial, channels, ordered, labelled, choices, used)


def _volume_for(labelled: Sequence[LabelledSeries], phase: str, rules: PhaseRules | None = None
                ) -> tuple[Volume, LabelledSeries, str]:
    """The first candidate series for ``phase`` that stacks into a regular volume."""
    failed: dict[str, str] = {}
    while True:
        choice = choose(labelled, phase, frozenset(failed), rules)
        if choice.chosen is None:
            detail = "; ".join(f"series {uid[-12:]}: {why}" for uid, why in failed.items())
            raise MissingPhaseError(f"the segmentation model needs a {phase} series: "
                                f"{choice.reason}" + (f" ({detail})" if detail else ""))
        try:
            return series_to_volume(choice.chosen.series), choice.chosen, choice.reason
        except GeometryError as exc:
            log.warning("series %s not usable for %s: %s", choice.chosen.series.series_uid[-12:],
                        phase, exc.reason)
            failed[choice.chosen.series.series_uid] = exc.reason


def _algorithm(bundle: Bundle) -> AlgorithmInfo:
    return AlgorithmInfo(name=bundle.name, version=bundle.version, family=bundle.family)


def _software_versions(bundle: Bundle) -> str:
    return f"hepatica {__version__}; {bundle.name} {bundle.version}"


def _export(inputs: _Inputs, seg: SegmentationResult, measurements: StudyMeasurements,
            bundle: Bundle, settings: PipelineSettings, out_dir: Path,
            responses: Sequence[ResponseOutcome] = (),
            recist: PriorResponse | None = None,
            notes: Sequence[tuple[str, str]] = ()) -> list[Path]:
    study_uid = str(inputs.arterial_datasets[0].StudyInstanceUID)
    response_groups, response_notes = response_sr_parts(responses, study_uid)
    version = pipeline_version(bundle)
    base = settings.series_number_base
    algorithm, software = _algorithm(bundle), _software_versions(bundle)
    lesion_labels = _lesion_label_map(seg, measurements)
    seg_id = ResultIdentity.derive(study_uid, version, "seg", base + 1)
    seg_ds = build_segmentation(
        inputs.arterial_datasets, seg.labels > 0, lesion_labels,
        series_instance_uid=seg_id.series_instance_uid, sop_instance_uid=seg_id.sop_instance_uid,
        series_number=seg_id.series_number, algorithm=algorithm, software_versions=software)
    files = [_save(seg_ds, out_dir / "seg.dcm")]
    sr_id = ResultIdentity.derive(study_uid, version, "sr", base + 2)
    sr_ds = build_measurement_report(
        inputs.arterial_datasets, seg_ds, measurements.lesions,
        liver_volume_ml=measurements.liver_volume_ml,
        tumour_burden_pct=measurements.tumour_burden_pct,
        liver_outline_zyx=measurements.liver_outline_zyx,
        series_instance_uid=sr_id.series_instance_uid, sop_instance_uid=sr_id.sop_instance_uid,
        series_number=sr_id.series_number, algorithm=algorithm, software_versions=software,
        extra_text=[*_provenance_text(inputs), *notes, *response_notes,
                    *(recist.text() if recist else [])],
        extra_groups=[*response_groups, *(recist.groups(seg_ds) if recist else [])])
    files.append(_save(sr_ds, out_dir / "sr.dcm"))
    files += _heatmaps(inputs, seg, measurements, study_uid, version, base + 3, software, out_dir)
    return files


def _lesion_label_map(seg: SegmentationResult, measurements: StudyMeasurements
                      ) -> npt.NDArray[np.uint16]:
    """Lesion k of the measurements as label k (the SEG's segment k + 1)."""
    if measurements.lesion_labels is None:
        return np.zeros(seg.labels.shape, np.uint16)
    return measurements.lesion_labels


def _provenance_text(inputs: _Inputs) -> list[tuple[str, str]]:
    notes = [("Research use", RESEARCH_USE_TEXT)]
    for phase, reason in inputs.choices.items():
        uid = inputs.used_series[phase]
        notes.append((f"Input series {phase}", f"SeriesInstanceUID {uid}: {reason}"))
    return notes


def _heatmaps(inputs: _Inputs, seg: SegmentationResult, measurements: StudyMeasurements,
              study_uid: str, version: str, series_number: int, software: str,
              out_dir: Path) -> list[Path]:
    z = _heatmap_slice(seg, measurements)
    source = inputs.arterial_datasets[z]
    caption = _caption(measurements)
    files: list[Path] = []
    for number, (phase, volume) in enumerate(_heatmap_backgrounds(inputs), start=1):
        ident = ResultIdentity.derive(study_uid, version, "heatmap", series_number, number)
        image = build_heatmap_image(
            volume.array[z], seg.tumour_probability[z], source_image=source, phase_label=phase,
            caption_lines=caption, series_instance_uid=ident.series_instance_uid,
            sop_instance_uid=ident.sop_instance_uid, series_number=series_number,
            instance_number=number, software_versions=software)
        files.append(_save(image, out_dir / f"heatmap_{number:02d}_{phase}.dcm"))
    return files


def _heatmap_backgrounds(inputs: _Inputs) -> Iterator[tuple[str, Volume]]:
    """Every labelled contrast phase, on the arterial grid (one image each)."""
    seen: set[str] = set()
    for phase in HEATMAP_PHASES:
        choice = choose(inputs.labelled, phase)
        if choice.chosen is None or phase in seen:
            continue
        try:
            volume = series_to_volume(choice.chosen.series)
        except GeometryError:
            continue
        seen.add(phase)
        yield choice.chosen.label.label, resample_like(volume, inputs.arterial)


def _heatmap_slice(seg: SegmentationResult, measurements: StudyMeasurements) -> int:
    """The slice through the largest lesion, else through the middle of the liver."""
    if measurements.lesions:
        return int(measurements.lesions[0].longest_diameter_slice)
    organ = np.flatnonzero((seg.labels > 0).any(axis=(1, 2)))
    return int(organ[len(organ) // 2]) if len(organ) else seg.labels.shape[0] // 2


def _caption(measurements: StudyMeasurements) -> list[str]:
    m = measurements
    lines = [f"Tumour probability; {len(m.lesions)} lesion(s); liver "
             f"{m.liver_volume_ml:.0f} ml; burden {m.tumour_burden_pct:.1f} %"]
    if measurements.lesions:
        big = measurements.lesions[0]
        lines.append(f"Largest lesion {big.longest_diameter_mm:.1f} mm, viable "
                     f"{big.viable_diameter_mm:.1f} mm")
    return lines


def _save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def _summary(study_uid: str, inputs: _Inputs, measurements: StudyMeasurements, bundle: Bundle,
             providers: list[str], timings: dict[str, float], files: list[Path],
             model_timings: dict[str, float]) -> dict[str, Any]:
    return {
        "study_instance_uid": study_uid,
        "pipeline_version": pipeline_version(bundle),
        "research_use": RESEARCH_USE_TEXT,
        "model": {"name": bundle.name, "version": bundle.version, "providers": providers},
        "series": [item.summary for item in inputs.labelled],
        "inputs": {p: {"series_uid": inputs.used_series[p], "reason": r}
                   for p, r in inputs.choices.items()},
        "measurements": {
            "liver_volume_ml": round(measurements.liver_volume_ml, 2),
            "tumour_volume_ml": round(measurements.tumour_volume_ml, 2),
            "tumour_burden_pct": round(measurements.tumour_burden_pct, 3),
            "lesions": [_lesion_json(lesion) for lesion in measurements.lesions],
        },
        "timings_s": {**timings, **{f"segment/{k}": round(v, 4) for k, v in
                                    model_timings.items()}},
        "files": [p.name for p in files],
    }


def _lesion_json(lesion: Any) -> dict[str, Any]:
    data = asdict(lesion)
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in data.items()
            if k in ("label", "volume_ml", "longest_diameter_mm", "viable_diameter_mm",
                     "centroid_zyx", "voxel_count", "mean_probability")}
