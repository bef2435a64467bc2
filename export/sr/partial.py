"""TID 1500 report of a study on which the segmentation model could not run.

A study that lacks a phase the segmentation bundle needs (no portal-venous series, say) has
no SEG to point at, so TID 1411 groups are impossible; yet the reader should learn, in the
study, that Hepatica saw it and why there are no measurements. TID 1500 needs at least one
Imaging Measurements group, so each model that could not run gets a TID 1501 group with its
Algorithm Identification (TID 4019) and a tracking identifier that says "not run", and the
reason follows as TEXT in the Qualitative Evaluations container, after the disclaimer.
Groups of models that did run without the segmentation come after them.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset

from export.common import (
    AlgorithmInfo,
    derive_uid,
    require_same_study,
)
from export.sr import codes
from export.sr.sop import (
    _algorithm_id,
    wrap_report,
)

__all__ = ["build_report_without_segmentation", "not_run_group"]


def not_run_group(algorithm: AlgorithmInfo, study_uid: str
                  ) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """TID 1501 group naming a model that produced nothing for this study."""
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=derive_uid("not-run", algorithm.name, algorithm.version, study_uid),
            identifier=f"{algorithm.name} {algorithm.version}: not run"),
        algorithm_id=_algorithm_id(algorithm),
        finding_sites=[hd.sr.FindingSite(codes.FINDING_SITE_LIVER)],
    )


def build_report_without_segmentation(
    source_images: Sequence[Dataset],
    *,
    not_run: Sequence[AlgorithmInfo],
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int,
    algorithm: AlgorithmInfo,
    software_versions: str,
    extra_text: Sequence[tuple[str, str]] = (),
    extra_groups: Sequence[hd.sr.MeasurementsAndQualitativeEvaluations] = (),
    instance_number: int = 1,
) -> hd.sr.Comprehensive3DSR:
    """The report with one "not run" group per model in ``not_run``, then ``extra_groups``.

    ``extra_text`` should carry each reason; the images referenced are the study's.
    """
    if not source_images:
        raise ValueError("a report needs at least one source image of the study to reference")
    if not not_run and not extra_groups:
        raise ValueError("nothing to report: no model that failed to run and no other groups")
    require_same_study(list(source_images))
    study_uid = str(source_images[0].StudyInstanceUID)
    groups = [not_run_group(a, study_uid) for a in not_run] + list(extra_groups)
    return wrap_report(groups, source_images, source_images, extra_text,
                       series_instance_uid=series_instance_uid, sop_instance_uid=sop_instance_uid,
                       series_number=series_number, instance_number=instance_number,
                       algorithm=algorithm, software_versions=software_versions)
