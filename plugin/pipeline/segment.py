"""Pipeline steps: segment the liver and tumours, let a reader's ROI stand in for the
model's tumour, and measure (volume, longest diameter, viable diameter)."""

from __future__ import annotations

from dataclasses import replace

from dicom_io.volume import resample_like
from inference.measurements import measure
from inference.runtime import create_session
from inference.segmentation import segment
from plugin.pipeline.context import StudyContext
from plugin.pipeline.reader_roi import choose_tumour_roi


def segment_step(ctx: StudyContext) -> None:
    """Run the chosen bundle on its channels, resampled onto the reference grid."""
    assert ctx.inputs is not None
    bundle, reference = ctx.inputs.bundle, ctx.reference_volume
    ctx.channels = [resample_like(s.volume, reference) for s in ctx.inputs.selected.values()]
    session = create_session(bundle.model_file, providers=list(ctx.settings.providers) or None)
    ctx.providers = list(getattr(session, "providers", []))
    ctx.extra["session"] = session
    ctx.segmentation = segment(bundle, session, [v.array for v in ctx.channels],
                               reference.spacing, direction=reference.direction)


def reader_roi_step(ctx: StudyContext) -> None:
    """A reader's SEG/RTSTRUCT tumour in the study replaces the model's (the SR says so)."""
    assert ctx.segmentation is not None
    ctx.roi = choose_tumour_roi(ctx.series, ctx.reference_volume, ctx.segmentation.labels)
    ctx.segmentation = replace(ctx.segmentation, labels=ctx.roi.labels)


def measure_step(ctx: StudyContext) -> None:
    assert ctx.segmentation is not None
    reference = ctx.reference_volume
    ctx.measurements = measure(ctx.segmentation.labels, reference.spacing,
                               arterial=reference.array,
                               tumour_probability=ctx.segmentation.tumour_probability)
