"""export.sr.response_models: per-model TID 1501 groups and notes inside the TID 1500 report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pytest
from export_testutils import ALGORITHM, SOFTWARE_VERSIONS, Lesion, dciodvfy_errors, needs_dciodvfy
from pydicom.dataset import Dataset

from export.common import ResultIdentity
from export.seg import build_segmentation
from export.sr import build_measurement_report
from export.sr import codes as sr_codes
from export.sr.response_models import response_model_groups, response_model_notes


@dataclass(frozen=True)
class _Result:
    name: str
    version: str
    probability: float | None
    threshold: float = 0.5
    label: str = "progressive disease"
    reason: str = "predicted"
    inputs_used: Mapping[str, str] = field(default_factory=dict)
    contributions: Sequence[tuple[str, float]] = ()


RESULTS = [
    _Result("hepatica-radiomics-pd-ct", "0.1.0", 0.73, 0.41,
            inputs_used={"phase AP": "series 1.2.3"},
            contributions=(("AP_tumour_original_firstorder_Mean", -0.8),)),
    _Result("hepatica-nomogram-pd", "0.1.0", None,
            reason="not run: missing inputs: clinical:platelets"),
]


def _sr(sources: list[Dataset], liver: npt.NDArray[np.bool_], labels: npt.NDArray[np.int16],
        lesions: list[Lesion]) -> Dataset:
    study = str(sources[0].StudyInstanceUID)
    seg_id = ResultIdentity.derive(study, "0.1.0", "seg", 901)
    seg = build_segmentation(sources, liver, labels, series_instance_uid=seg_id.series_instance_uid,
                             sop_instance_uid=seg_id.sop_instance_uid, series_number=901,
                             algorithm=ALGORITHM, software_versions=SOFTWARE_VERSIONS)
    ident = ResultIdentity.derive(study, "0.1.0", "sr", 902)
    return build_measurement_report(
        sources, seg, lesions, liver_volume_ml=1500.0, tumour_burden_pct=0.1,
        series_instance_uid=ident.series_instance_uid, sop_instance_uid=ident.sop_instance_uid,
        series_number=902, algorithm=ALGORITHM, software_versions=SOFTWARE_VERSIONS,
        extra_text=response_model_notes(RESULTS),
        extra_groups=response_model_groups(RESULTS, study))


def test_one_group_per_model_that_ran(source_images: list[Dataset],
                                      liver_mask: npt.NDArray[np.bool_],
                                      lesion_labels: npt.NDArray[np.int16],
                                      lesions: list[Lesion], tmp_path: Path) -> None:
    sr = _sr(source_images, liver_mask, lesion_labels, lesions)
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    report = hd.sr.MeasurementReport.from_sequence([hd.sr.srread(path)])
    groups = report.get_image_measurement_groups()
    (group,) = groups
    (probability,) = group.get_measurements(name=sr_codes.PREDICTED_PROBABILITY)
    assert probability.value == pytest.approx(0.73)
    texts = [item.TextValue for container in sr.ContentSequence
             if container.ConceptNameCodeSequence[0].CodeValue == "C0034375"
             for item in container.ContentSequence]
    assert any("hepatica-nomogram-pd" in t and "missing inputs" in t for t in texts)
    assert any("AP_tumour_original_firstorder_Mean -0.800" in t for t in texts)


@needs_dciodvfy
@pytest.mark.dcmtk
def test_response_sr_passes_dciodvfy(source_images: list[Dataset],
                                     liver_mask: npt.NDArray[np.bool_],
                                     lesion_labels: npt.NDArray[np.int16],
                                     lesions: list[Lesion], tmp_path: Path) -> None:
    path = tmp_path / "sr.dcm"
    _sr(source_images, liver_mask, lesion_labels, lesions).save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
