"""Pipeline step: the result objects — SEG, TID 1500 SR and heatmaps, or, when no
segmentation bundle could run, an SR that says why (and what the response models made of
the study). Every object's UIDs derive from the study and a content version of exactly
what went into it (``plugin.pipeline.models.content_version``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from dicom_io.selection import NoUsableSeries, select_volume
from dicom_io.volume import Volume, resample_like
from export.common import RESEARCH_USE_TEXT, AlgorithmInfo, ResultIdentity
from export.sc.explanation import build_explanation_image
from export.sc.sop import build_heatmap_image
from export.seg.sop import build_segmentation
from export.sr.partial import build_report_without_segmentation
from export.sr.sop import build_measurement_report
from export.write import save_result
from inference.bundle import Bundle
from inference.measurements import StudyMeasurements
from inference.segmentation import SegmentationResult
from plugin import __version__
from plugin.pipeline.context import PipelineError, StudyContext
from plugin.pipeline.image_models import ExplanationImage, source_dataset
from plugin.pipeline.models import (
    bundle_digest,
    content_version,
    installed_bundles,
    model_sha256,
)
from plugin.pipeline.prediction import ResponseOutcome, response_sr_parts

log = logging.getLogger(__name__)

HEATMAP_PHASES = ("PRE", "AP", "PVP", "DP")
EXPLANATION_SERIES_OFFSET = 10  # explanation series k of the study: base + 10 + k
IMAGE_MODALITIES = frozenset({"MR", "CT"})


def report_step(ctx: StudyContext) -> None:
    """Write the study's result objects into ``ctx.out_dir`` (``ctx.files``)."""
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    if ctx.segmentation is None:
        ctx.files = [_report_without_segmentation(ctx)]
    else:
        ctx.files = _full_report(ctx)


def software_versions(bundle: Bundle) -> str:
    return f"hepatica {__version__}; {bundle.name} {bundle.version}"


def _algorithm(bundle: Bundle) -> AlgorithmInfo:
    """The model's identity for IHE AIR; its Device UID follows the weights' hash."""
    return AlgorithmInfo(name=bundle.name, version=bundle.version, family=bundle.family,
                         model_digest=model_sha256(bundle))


def _prediction_algorithms(ctx: StudyContext) -> list[AlgorithmInfo]:
    """The response models that predicted, as contributing equipment of the SR."""
    bundles = {(b.name, b.version): b for b in installed_bundles(ctx.settings.bundle_dirs)}
    return [_algorithm(bundles[(o.name, o.version)]) for o in ctx.predictions
            if o.prediction is not None and (o.name, o.version) in bundles]


def _instances(datasets: Sequence[Dataset]) -> str:
    return ",".join(sorted(str(ds.SOPInstanceUID) for ds in datasets))


def seg_version(ctx: StudyContext) -> str:
    """What the SEG depends on: package, model, the input instances, a reader's ROI."""
    assert ctx.inputs is not None and ctx.roi is not None
    inputs = [f"{ch}:{_instances(s.item.series.datasets)}" for ch, s in
              ctx.inputs.selected.items()]
    return content_version("seg", bundle_digest(ctx.inputs.bundle), *inputs, ctx.roi.note)


def sr_version(ctx: StudyContext, base: str) -> str:
    """The SR adds the predictions (their models and inputs) and the RECIST assessment."""
    predictions = [{k: v for k, v in o.summary().items() if k != "seconds"}
                   for o in ctx.predictions]
    recist = ctx.recist.summary() if ctx.recist else None
    return content_version("sr", base, json.dumps([predictions, recist], sort_keys=True,
                                                  default=str))


def _full_report(ctx: StudyContext) -> list[Path]:
    assert ctx.inputs is not None and ctx.segmentation is not None
    assert ctx.measurements is not None and ctx.roi is not None
    datasets, bundle = ctx.inputs.datasets, ctx.inputs.bundle
    seg, measurements = ctx.segmentation, ctx.measurements
    study_uid, base = ctx.study_uid, ctx.settings.series_number_base
    groups, notes = response_sr_parts(ctx.predictions, study_uid)
    algorithm, software = _algorithm(bundle), software_versions(bundle)
    version = seg_version(ctx)
    seg_id = ResultIdentity.derive(study_uid, version, "seg", base + 1)
    seg_ds = build_segmentation(
        datasets, seg.labels > 0, _lesion_label_map(seg, measurements),
        series_instance_uid=seg_id.series_instance_uid, sop_instance_uid=seg_id.sop_instance_uid,
        series_number=seg_id.series_number, algorithm=algorithm, software_versions=software)
    files = [_save(seg_ds, ctx.out_dir / "seg.dcm")]
    sr_id = ResultIdentity.derive(study_uid, sr_version(ctx, version), "sr", base + 2)
    recist = ctx.recist
    sr_ds = build_measurement_report(
        datasets, seg_ds, measurements.lesions,
        liver_volume_ml=measurements.liver_volume_ml,
        tumour_burden_pct=measurements.tumour_burden_pct,
        liver_outline_zyx=measurements.liver_outline_zyx,
        series_instance_uid=sr_id.series_instance_uid, sop_instance_uid=sr_id.sop_instance_uid,
        series_number=sr_id.series_number, algorithm=algorithm, software_versions=software,
        extra_text=[*provenance_text(ctx), *ctx.roi.text(), *notes,
                    *(recist.text() if recist else [])],
        extra_groups=[*groups, *(recist.groups(seg_ds) if recist else [])],
        other_algorithms=_prediction_algorithms(ctx))
    files.append(_save(sr_ds, ctx.out_dir / "sr.dcm"))
    files += _heatmaps(ctx, version, base + 3, software, algorithm)
    files += _explanations(ctx, version, base + EXPLANATION_SERIES_OFFSET)
    return files


def _explanations(ctx: StudyContext, version: str, first_series: int) -> list[Path]:
    """One secondary-capture series per image response model that explained its prediction:
    the explanation map over each slice it points at, the prediction and the model burned in
    (``export.sc.explanation``)."""
    assert ctx.inputs is not None
    explained = sorted((o for o in ctx.predictions if o.explanation is not None
                        and o.prediction is not None), key=lambda o: o.name)
    installed = {(b.name, b.version): b for b in installed_bundles(ctx.settings.bundle_dirs)}
    files: list[Path] = []
    for k, outcome in enumerate(explained):
        bundle = installed.get((outcome.name, outcome.version))
        if bundle is None:
            continue
        series = first_series + k
        model_version = content_version(version, bundle_digest(bundle), json.dumps(
            {kk: vv for kk, vv in outcome.summary().items() if kk != "seconds"},
            sort_keys=True, default=str))
        software = software_versions(bundle)
        for number, item in enumerate(outcome.explanation.images, start=1):
            ident = ResultIdentity.derive(ctx.study_uid, model_version,
                                          f"explanation-{outcome.name}", series, number)
            image = build_explanation_image(
                item.background, item.overlay,
                source_image=source_dataset(ctx.inputs.datasets, item.reference_z),
                title=f"{outcome.name} {outcome.version}: {outcome.explanation.method} "
                      f"on {item.channel}",
                caption_lines=_explanation_caption(outcome, item),
                algorithm=_algorithm(bundle), method=outcome.explanation.method,
                series_instance_uid=ident.series_instance_uid,
                sop_instance_uid=ident.sop_instance_uid, series_number=series,
                instance_number=number, software_versions=software)
            files.append(_save(image, ctx.out_dir / f"explanation_{k + 1:02d}_{number:02d}_"
                                                    f"{_safe(item.channel)}.dcm"))
    return files


def _explanation_caption(outcome: ResponseOutcome, item: ExplanationImage) -> list[str]:
    p = outcome.prediction
    assert p is not None
    labels = outcome.explanation.prediction.labels
    verdict = p.label if p.positive else (labels[0] if len(labels) == 2 else f"not {p.label}")
    weight = "attention" if outcome.explanation.method == "grad-cam" else "share of map"
    return [f"P({p.label}) = {p.probability:.2f}; predicted: {verdict} "
            f"(threshold {p.threshold:.2f})",
            f"Map: evidence for {outcome.explanation.prediction.explained}; "
            f"{item.channel} on reference slice {item.reference_z + 1}; {weight} "
            f"{item.weight:.2f}",
            "Colour: relative contribution (the map's maximum = 1)"]


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)


def provenance_text(ctx: StudyContext) -> list[tuple[str, str]]:
    """The SR's notes on where the inputs came from and which model was chosen, and why."""
    notes = [("Research use", RESEARCH_USE_TEXT)]
    for series in ctx.series:
        if series.repairs:
            notes.append(("Header values repaired", f"series {series.series_uid}: "
                          + "; ".join(series.repairs)))
    if ctx.inputs is not None:
        notes.append(("Segmentation model", ctx.inputs.reason))
        for channel, selected in ctx.inputs.selected.items():
            notes.append((f"Input series {channel}",
                          f"SeriesInstanceUID {selected.series_uid}: {selected.reason}"))
    return notes


def _lesion_label_map(seg: SegmentationResult, measurements: StudyMeasurements
                      ) -> npt.NDArray[np.uint16]:
    """Lesion k of the measurements as label k (the SEG's segment k + 1)."""
    if measurements.lesion_labels is None:
        return np.zeros(seg.labels.shape, np.uint16)
    return measurements.lesion_labels


def _heatmaps(ctx: StudyContext, version: str, series_number: int, software: str,
              algorithm: AlgorithmInfo) -> list[Path]:
    assert ctx.segmentation is not None and ctx.measurements is not None
    assert ctx.inputs is not None
    seg, measurements = ctx.segmentation, ctx.measurements
    z = _heatmap_slice(seg, measurements)
    source = ctx.inputs.datasets[z]
    caption = _caption(measurements)
    files: list[Path] = []
    series = ResultIdentity.derive(ctx.study_uid, version, "heatmap", series_number)
    for number, phase, volume, instances in _backgrounds(ctx):
        ident = ResultIdentity.derive(ctx.study_uid, content_version(version, instances),
                                      "heatmap", series_number, number)
        image = build_heatmap_image(
            volume.array[z], seg.tumour_probability[z], source_image=source, phase_label=phase,
            caption_lines=caption, series_instance_uid=series.series_instance_uid,
            sop_instance_uid=ident.sop_instance_uid, series_number=series_number,
            instance_number=number, software_versions=software, algorithm=algorithm)
        files.append(_save(image, ctx.out_dir / f"heatmap_{number:02d}_{phase}.dcm"))
    return files


def _backgrounds(ctx: StudyContext) -> Iterator[tuple[int, str, Volume, str]]:
    """Every contrast phase the study has, on the reference grid (one image each).

    The instance number is the phase's place in :data:`HEATMAP_PHASES`, so a phase's image
    keeps its number (and UID) when a late series adds another phase to the study.
    """
    for number, phase in enumerate(HEATMAP_PHASES, start=1):
        try:
            selected = select_volume(ctx.labelled, phase, ctx.rules)
        except NoUsableSeries:
            continue
        yield (number, selected.item.label.label,
               resample_like(selected.volume, ctx.reference_volume),
               _instances(selected.datasets))


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


def _report_without_segmentation(ctx: StudyContext) -> Path:
    """A TID 1500 SR without segmentation groups: which models did not run and why."""
    images = _study_images(ctx)
    if not images:
        raise PipelineError(f"{ctx.not_run}; no report either: the study has no MR or CT "
                            "images to reference")
    bundles = ctx.bundles
    lead = bundles[0]
    groups, notes = response_sr_parts(ctx.predictions, ctx.study_uid)
    version = content_version("not-run", *(bundle_digest(b) for b in bundles), ctx.not_run,
                              _instances(images), json.dumps(
                                  [o.summary() | {"seconds": 0} for o in ctx.predictions],
                                  sort_keys=True, default=str))
    ident = ResultIdentity.derive(ctx.study_uid, version, "sr",
                                  ctx.settings.series_number_base + 2)
    text = [("Research use", RESEARCH_USE_TEXT),
            *[(f"Model {b.name} {b.version}", "not run") for b in bundles],
            ("Segmentation", f"not run: {ctx.not_run}"),
            ("Measurements", "none: without the segmentation there is no SEG, no liver or "
                             "lesion measurement, no heatmap and no RECIST/mRECIST response"),
            *notes]
    sr = build_report_without_segmentation(
        images, not_run=[_algorithm(b) for b in bundles],
        series_instance_uid=ident.series_instance_uid, sop_instance_uid=ident.sop_instance_uid,
        series_number=ident.series_number, algorithm=_algorithm(lead),
        software_versions=software_versions(lead), extra_text=text, extra_groups=groups)
    return _save(sr, ctx.out_dir / "sr.dcm")


def _study_images(ctx: StudyContext) -> list[Dataset]:
    """Every MR/CT instance once (phases of a dynamic series share instances)."""
    seen: dict[str, Dataset] = {}
    for item in ctx.labelled:
        for ds in item.series.datasets:
            if str(ds.get("Modality", "")).upper() in IMAGE_MODALITIES:
                seen.setdefault(str(ds.SOPInstanceUID), ds)
    return list(seen.values())


def _save(ds: Dataset, path: Path) -> Path:
    return save_result(ds, path)
