"""When the segmentation model cannot run: an SR that says so, and the models that still can.

A study without a phase the segmentation bundle needs (no portal-venous series, say) used to
fail as a job, leaving nothing in the study. Now it gets a TID 1500 report without the
segmentation-derived groups (``export.sr.partial``): which model did not run and why, the
series Hepatica saw, and whatever the response bundles make of the study - each records its
own reason (``plugin.pipeline.prediction``), so the ones whose inputs are present still
predict. No SEG, heatmaps or RECIST/mRECIST: they all need the segmentation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from dicom_io.selection import LabelledSeries, choose
from dicom_io.series import GeometryError, series_to_volume
from dicom_io.volume import Volume
from export.common import RESEARCH_USE_TEXT, AlgorithmInfo, ResultIdentity
from export.sr.partial import build_report_without_segmentation
from inference.bundle import Bundle
from plugin.pipeline.models import pipeline_version
from plugin.pipeline.prediction import ResponseOutcome, response_sr_parts, run_for_pipeline

__all__ = ["IMAGE_MODALITIES", "report_without_segmentation"]

log = logging.getLogger(__name__)
IMAGE_MODALITIES = frozenset({"MR", "CT"})


def report_without_segmentation(labelled: Sequence[LabelledSeries], bundle: Bundle,
                                settings: Any, out_dir: Path, reason: str, software: str
                                ) -> tuple[list[Path], dict[str, Any]]:
    """Write ``sr.dcm`` into ``out_dir``; return the files and the summary."""
    images = _study_images(labelled)
    if not images:
        raise ValueError("the study has no MR or CT images to reference")
    study_uid = str(images[0].StudyInstanceUID)
    responses = _response_models(labelled, bundle, settings)
    groups, notes = response_sr_parts(responses, study_uid)
    algorithm = AlgorithmInfo(name=bundle.name, version=bundle.version, family=bundle.family)
    ident = ResultIdentity.derive(study_uid, pipeline_version(bundle), "sr",
                                  settings.series_number_base + 2)
    text = [("Research use", RESEARCH_USE_TEXT),
            (f"Model {bundle.name} {bundle.version}", f"not run: {reason}"),
            ("Measurements", "none: without the segmentation there is no SEG, no liver or "
                             "lesion measurement, no heatmap and no RECIST/mRECIST response"),
            *notes]
    sr = build_report_without_segmentation(
        images, not_run=[algorithm], series_instance_uid=ident.series_instance_uid,
        sop_instance_uid=ident.sop_instance_uid, series_number=ident.series_number,
        algorithm=algorithm, software_versions=software, extra_text=text, extra_groups=groups)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    return [path], _summary(study_uid, bundle, labelled, reason, responses, [path])


def _study_images(labelled: Sequence[LabelledSeries]) -> list[Dataset]:
    """Every MR/CT instance once (phases of a dynamic series share instances)."""
    seen: dict[str, Dataset] = {}
    for item in labelled:
        for ds in item.series.datasets:
            if str(ds.get("Modality", "")).upper() in IMAGE_MODALITIES:
                seen.setdefault(str(ds.SOPInstanceUID), ds)
    return list(seen.values())


def _reference(labelled: Sequence[LabelledSeries], phases: Sequence[str]
               ) -> tuple[Volume, list[Dataset]] | None:
    """The grid response models read on: the bundle's first present phase, else any series."""
    chosen = [c.chosen for c in (choose(labelled, p) for p in phases) if c.chosen is not None]
    for item in [*chosen, *labelled]:
        try:
            volume = series_to_volume(item.series)
        except GeometryError:
            continue
        by_uid = {str(ds.SOPInstanceUID): ds for ds in item.series.datasets}
        return volume, [by_uid[uid] for uid in volume.sop_instance_uids]
    return None


def _response_models(labelled: Sequence[LabelledSeries], bundle: Bundle,
                     settings: Any) -> list[ResponseOutcome]:
    """Every response bundle, told there is no segmentation; each says what it lacked."""
    found = _reference(labelled, bundle.inputs.phases)
    if found is None:
        log.warning("no series stacks into a volume: response models not run")
        return []
    volume, datasets = found
    empty = np.zeros(volume.shape, dtype=np.uint8)
    return run_for_pipeline(labelled, volume, datasets, empty, None, settings)


def _summary(study_uid: str, bundle: Bundle, labelled: Sequence[LabelledSeries], reason: str,
             responses: Sequence[ResponseOutcome], files: list[Path]) -> dict[str, Any]:
    return {
        "study_instance_uid": study_uid,
        "pipeline_version": pipeline_version(bundle),
        "research_use": RESEARCH_USE_TEXT,
        "model": {"name": bundle.name, "version": bundle.version, "ran": False,
                  "reason": reason},
        "segmentation": {"ran": False, "reason": reason},
        "series": [item.summary for item in labelled],
        "inputs": {},
        "measurements": None,
        "response_models": [o.summary() for o in responses],
        "response": {"note": "not assessed: the current study was not segmented",
                     "priors": []},
        "files": [p.name for p in files],
    }
