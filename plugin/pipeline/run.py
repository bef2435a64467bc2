"""The pipeline of one study, as steps over one :class:`StudyContext`:

load → label → select (bundle and volumes) → segment → reader ROI → measure → predict →
RECIST against priors → report. Composes the three rooms; holds no DICOM or model logic.
A study no segmentation bundle fits still gets predictions and a report that says why.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dicom_io.phases import load_site_rules
from dicom_io.roi import image_series
from dicom_io.selection import label_all
from dicom_io.series import load_study
from export.common import RESEARCH_USE_TEXT
from plugin.pipeline.context import (
    PipelineError,
    PipelineSettings,
    Progress,
    StudyContext,
)
from plugin.pipeline.models import pipeline_version, segmentation_bundles
from plugin.pipeline.prediction import predict_step
from plugin.pipeline.recist import recist_step
from plugin.pipeline.report import report_step, seg_version
from plugin.pipeline.segment import measure_step, reader_roi_step, segment_step
from plugin.pipeline.select import NoSegmentationInputs, choose_segmentation

__all__ = ["PipelineError", "PipelineSettings", "StudyResult", "process_study"]

log = logging.getLogger(__name__)


@dataclass
class StudyResult:
    """The files written for one study and the summary that describes them."""

    study_uid: str
    files: list[Path] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def process_study(study_dir: Path, out_dir: Path, settings: PipelineSettings | None = None,
                  progress: Progress | None = None) -> StudyResult:
    """Run the whole pipeline on the instances under ``study_dir``; write into ``out_dir``."""
    settings = settings or PipelineSettings()
    rules = load_site_rules(settings.phase_rules) if settings.phase_rules else None
    ctx = StudyContext(Path(study_dir), Path(out_dir), settings, rules, progress=progress)
    ctx.bundles = segmentation_bundles(settings.bundle_dirs)
    with ctx.step("load series"):
        ctx.series = load_study(ctx.study_dir)
        if not ctx.series:
            raise PipelineError(f"no DICOM instances found under {study_dir}")
    with ctx.step("label phases"):
        ctx.labelled = label_all(image_series(ctx.series), rules)
    with ctx.step("build volumes"):
        try:
            ctx.inputs = choose_segmentation(ctx.labelled, ctx.bundles, rules)
        except NoSegmentationInputs as exc:
            ctx.not_run = str(exc)
            log.warning("segmentation not run: %s", exc)
    if ctx.inputs is not None:
        try:
            with ctx.step("segment"):
                segment_step(ctx)
            with ctx.step("reader ROI"):
                reader_roi_step(ctx)
            with ctx.step("measure"):
                measure_step(ctx)
        except ValueError as exc:  # the data, not the node: report it, never end without one
            log.exception("segmentation failed on this study")
            bundle = ctx.inputs.bundle
            ctx.not_run = f"{bundle.name} {bundle.version} failed on this study: {exc}"
            ctx.segmentation = ctx.measurements = None
    with ctx.step("predict"):
        predict_step(ctx)
    if ctx.segmentation is not None:
        with ctx.step("recist"):
            recist_step(ctx)
    with ctx.step("export"):
        report_step(ctx)
    summary = _summary(ctx)
    (ctx.out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return StudyResult(ctx.study_uid, ctx.files, summary)


def _summary(ctx: StudyContext) -> dict[str, Any]:
    common = {
        "study_instance_uid": ctx.study_uid,
        "pipeline_version": pipeline_version(ctx.bundles),
        "research_use": RESEARCH_USE_TEXT,
        "series": [item.summary for item in ctx.labelled],
        "response_models": [o.summary() for o in ctx.predictions],
        "files": [p.name for p in ctx.files],
    }
    if ctx.inputs is None or ctx.segmentation is None or ctx.measurements is None:
        lead = ctx.bundles[0]
        return {**common,
                "model": {"name": lead.name, "version": lead.version, "ran": False,
                          "reason": ctx.not_run},
                "segmentation": {"ran": False, "reason": ctx.not_run,
                                 "bundles_considered": [f"{b.name} {b.version}"
                                                        for b in ctx.bundles]},
                "inputs": {}, "measurements": None,
                "response": {"note": "not assessed: the current study was not segmented",
                             "priors": []},
                "timings_s": ctx.timings}
    bundle, m = ctx.inputs.bundle, ctx.measurements
    return {
        **common,
        "result_version": seg_version(ctx),
        "model": {"name": bundle.name, "version": bundle.version, "providers": ctx.providers,
                  "reason": ctx.inputs.reason},
        "segmentation": {"ran": True, "bundle": f"{bundle.name} {bundle.version}",
                         "reason": ctx.inputs.reason},
        "inputs": {ch: {"series_uid": s.series_uid, "phase": s.phase, "reason": s.reason}
                   for ch, s in ctx.inputs.selected.items()},
        "measurements": {
            "liver_volume_ml": round(m.liver_volume_ml, 2),
            "tumour_volume_ml": round(m.tumour_volume_ml, 2),
            "tumour_burden_pct": round(m.tumour_burden_pct, 3),
            "lesions": [_lesion_json(lesion) for lesion in m.lesions],
        },
        "response": ctx.recist.summary() if ctx.recist else {},
        "tumour_roi": ctx.roi.summary() if ctx.roi else {},
        "timings_s": {**ctx.timings, **{f"segment/{k}": round(v, 4) for k, v in
                                        ctx.segmentation.timings.items()}},
    }


def _lesion_json(lesion: Any) -> dict[str, Any]:
    data = asdict(lesion)
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in data.items()
            if k in ("label", "volume_ml", "longest_diameter_mm", "viable_diameter_mm",
                     "centroid_zyx", "voxel_count", "mean_probability")}
