"""The one selection path reaches every step: site rules and fallback for heatmaps, response
models and priors; a clinical SR in the study reaches the nomogram; result UIDs follow content.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ComprehensiveSRStorage, ExplicitVRLittleEndian, generate_uid

from dicom_io.phases import load_site_rules
from dicom_io.priors import PriorsError
from dicom_io.selection import label_all, select_volume
from dicom_io.series import load_study
from dicom_io.synthetic import PhantomSpec, make_phantom, write_phantom_study
from inference.bundle import load_bundle
from plugin.pipeline.models import SHIPPED_BUNDLES
from plugin.pipeline.prediction import PredictionInputs, ResponseSettings, run_response_models
from plugin.pipeline.recist import measure_study_dir
from plugin.pipeline.run import PipelineSettings, process_study
from plugin.research.radiomics_cohort import largest_lesion

SMALL_MR = PhantomSpec(rows=128, columns=128, slices=32, pixel_spacing_mm=3.0,
                       slice_spacing_mm=6.0, lesion_plan=(40.0,), necrotic_fraction=0.0)
CRYPTIC = "ZZ-SPAET-X"
SITE_RULE = '[[mr]]\nlabel = "DP"\npattern = "spaet"\n[[ct]]\nlabel = "CT_PVP"\npattern = "spaet"\n'


def _rename(series_dir: Path, description: str) -> None:
    """A description no shipped rule knows, and no timing to fall back on."""
    for path in series_dir.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.SeriesDescription = description
        if "ContrastBolusStartTime" in ds:
            del ds.ContrastBolusStartTime
        ds.save_as(path)


def _broken_repeat(series_dir: Path, into: Path) -> str:
    """A later repeat of a series (ranked first) whose slices all sit at one position."""
    shutil.copytree(series_dir, into)
    uid = generate_uid()
    for path in into.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.SOPInstanceUID = uid, 99, generate_uid()
        ds.ImagePositionPatient = [0.0, 0.0, 0.0]
        ds.AcquisitionTime = ds.SeriesTime = "235959"
        ds.save_as(path)
    return uid


def _rules(tmp: Path) -> Path:
    path = tmp / "site_rules.toml"
    path.write_text(SITE_RULE)
    return path


@pytest.fixture(scope="module")
def mr_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mr")
    write_phantom_study(make_phantom(424_271, SMALL_MR), folder)
    dicom = folder / "dicom"
    _rename(dicom / "DP", CRYPTIC)
    _broken_repeat(dicom / "AP", dicom / "AP_REPEAT")
    return dicom


def test_heatmaps_follow_site_rules_and_fallback(mr_study: Path, tmp_path: Path) -> None:
    plain = process_study(mr_study, tmp_path / "plain")
    assert "heatmap_04_DP.dcm" not in {p.name for p in plain.files}
    ruled = process_study(mr_study, tmp_path / "ruled",
                          PipelineSettings(phase_rules=(_rules(tmp_path),)))
    names = {p.name for p in ruled.files}
    assert {"seg.dcm", "sr.dcm"} <= names and any(n.endswith("_DP.dcm") for n in names)
    assert any(n.endswith("_AP.dcm") for n in names)  # the broken repeat was passed over
    # the DP image itself is in the study only under the site's name
    assert len([n for n in names if n.startswith("heatmap")]) == 4


def test_priors_follow_site_rules_and_fallback(mr_study: Path, tmp_path: Path) -> None:
    bundle = load_bundle(SHIPPED_BUNDLES / "liver-tumour-seg")
    seen: list[int] = []

    def segment_labels(channels: list) -> np.ndarray:  # type: ignore[type-arg]
        seen.append(channels[0].shape[0])
        return np.zeros(channels[0].shape, np.uint8)

    point = measure_study_dir(mr_study, bundle, None, segment_labels)
    assert seen == [32] and point.study_uid  # the broken AP repeat was skipped
    prior = tmp_path / "prior"
    shutil.copytree(mr_study, prior)
    _rename(prior / "AP", CRYPTIC)
    shutil.rmtree(prior / "AP_REPEAT")
    with pytest.raises(PriorsError, match="no usable series for AP"):
        measure_study_dir(prior, bundle, None, segment_labels)
    site = tmp_path / "ap_rule.toml"
    site.write_text('[[mr]]\nlabel = "AP"\npattern = "spaet"\n')
    measure_study_dir(prior, bundle, load_site_rules([site]), segment_labels)
    assert len(seen) == 2


@pytest.fixture(scope="module")
def ct_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    folder = tmp_path_factory.mktemp("ct")
    phantom = make_phantom(5, PhantomSpec(modality="CT"))
    write_phantom_study(phantom, folder)
    dicom = folder / "dicom"
    pvp = next(p for p in dicom.iterdir() if "PVP" in p.name)
    _rename(pvp, CRYPTIC)
    _broken_repeat(pvp, dicom / "PVP_REPEAT")
    return dicom, phantom.labels > 0, largest_lesion(phantom.lesion_labels).astype(np.uint16)


def _predict(ct: tuple[Path, np.ndarray, np.ndarray], data_dir: Path, rules_file: Path | None,
             extra: list[Dataset] | None = None) -> dict[str, object]:
    dicom, organ, lesion = ct
    rules = load_site_rules([rules_file]) if rules_file else None
    labelled = label_all(load_study(dicom), rules)
    reference = select_volume(labelled, "AP", rules)
    first = reference.datasets[0]
    context = PredictionInputs(str(first.StudyInstanceUID), str(first.PatientID), labelled,
                               reference.volume, organ, lesion, "CT", rules)
    outcomes = run_response_models(context, extra or [], PipelineSettings(),
                                   ResponseSettings(data_dir))
    return {o.name: o for o in outcomes}


def test_response_models_follow_site_rules_and_fallback(ct_study: tuple[Path, np.ndarray,
                                                                        np.ndarray],
                                                        tmp_path: Path) -> None:
    plain = _predict(ct_study, tmp_path / "a", None)["hepatica-radiomics-pd-ct"]
    assert plain.prediction is None and "PVP" in plain.reason  # type: ignore[attr-defined]
    ruled = _predict(ct_study, tmp_path / "b", _rules(tmp_path))["hepatica-radiomics-pd-ct"]
    assert ruled.prediction is not None, ruled.reason  # type: ignore[attr-defined]


def _clinical_sr(like: Path) -> Dataset:
    """A site's clinical SR (platelets, dilated vasculature) in the same study."""
    image = pydicom.dcmread(next(like.rglob("*.dcm")), stop_before_pixels=True)

    def code(meaning: str) -> Dataset:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "X", "99SITE", meaning
        return item

    def num(meaning: str, value: str) -> Dataset:
        item = Dataset()
        item.ValueType, item.ConceptNameCodeSequence = "NUM", [code(meaning)]
        measured = Dataset()
        measured.NumericValue = value
        item.MeasuredValueSequence = [measured]
        return item

    sr = Dataset()
    sr.file_meta = FileMetaDataset()
    sr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr.file_meta.MediaStorageSOPClassUID = ComprehensiveSRStorage
    sr.SOPClassUID, sr.SOPInstanceUID = ComprehensiveSRStorage, generate_uid()
    sr.file_meta.MediaStorageSOPInstanceUID = sr.SOPInstanceUID
    sr.StudyInstanceUID, sr.SeriesInstanceUID = image.StudyInstanceUID, generate_uid()
    sr.PatientID, sr.Modality, sr.Manufacturer, sr.SeriesNumber = (
        image.PatientID, "SR", "Site LIS", 500)
    sr.ValueType = "CONTAINER"
    sr.ContentSequence = [num("Platelets", "98"), num("Dilated vasculature", "1")]
    return sr


def test_a_clinical_sr_in_the_study_reaches_the_nomogram(
        ct_study: tuple[Path, np.ndarray, np.ndarray], tmp_path: Path) -> None:
    dicom = ct_study[0]
    sr = _clinical_sr(dicom)
    outcomes = _predict(ct_study, tmp_path / "c", _rules(tmp_path), [sr])
    nomogram = outcomes["hepatica-nomogram-pd-no-afp"]
    assert nomogram.prediction is not None, nomogram.reason  # type: ignore[attr-defined]
    assert "SR in study" in nomogram.inputs_used["platelets"]  # type: ignore[attr-defined]


def test_the_pipeline_reads_the_clinical_sr_and_uids_follow_content(
        ct_study: tuple[Path, np.ndarray, np.ndarray], tmp_path: Path) -> None:
    """Through process_study: the study's own SR file is read; the same inputs give the same
    UIDs, new clinical values a new SR UID while the SEG keeps its UID."""
    study = tmp_path / "study"
    shutil.copytree(ct_study[0], study)
    shutil.rmtree(study / "PVP_REPEAT")
    settings = PipelineSettings(phase_rules=(_rules(tmp_path),),
                                response=ResponseSettings(tmp_path / "data"))
    first = process_study(study, tmp_path / "one", settings)
    again = process_study(study, tmp_path / "two", settings)
    sr_dir = study / "CLINICAL"
    sr_dir.mkdir()
    _clinical_sr(study).save_as(sr_dir / "clinical.dcm", enforce_file_format=True)
    third = process_study(study, tmp_path / "three", settings)

    def uids(result: object) -> dict[str, str]:
        return {p.name: str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
                for p in result.files}  # type: ignore[attr-defined]

    assert uids(first) == uids(again)
    assert uids(third)["seg.dcm"] == uids(first)["seg.dcm"]
    assert uids(third)["sr.dcm"] != uids(first)["sr.dcm"]
    summary = json.loads((tmp_path / "three" / "summary.json").read_text())
    served = {o["name"]: o for o in summary["response_models"]}
    assert "probability" in served["hepatica-radiomics-pd-ct"], served
    nomogram = served["hepatica-nomogram-pd-no-afp"]
    assert "probability" in nomogram and "SR in study" in nomogram["inputs_used"]["platelets"]


def test_blank_descriptions_same_labels_by_inspect_and_segmented(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 10's acceptance: SeriesDescription, ProtocolName and SequenceName blanked."""
    from plugin.cli import main

    write_phantom_study(make_phantom(424_272, SMALL_MR), tmp_path / "orig")
    blank = tmp_path / "blank"
    shutil.copytree(tmp_path / "orig" / "dicom", blank)
    for path in blank.rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        for keyword in ("SeriesDescription", "ProtocolName", "SequenceName"):
            if keyword in ds:
                ds.data_element(keyword).value = ""
        ds.save_as(path)

    def labels(folder: Path) -> dict[str, str]:
        assert main(["inspect", str(folder), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        return {s["series_uid"]: s["label"] for s in report["series"]}

    original, blanked = labels(tmp_path / "orig" / "dicom"), labels(blank)
    assert blanked == original and set(blanked.values()) == {"PRE", "AP", "PVP", "DP"}
    result = process_study(blank, tmp_path / "out")
    assert result.summary["segmentation"]["ran"] is True
    assert result.summary["measurements"]["liver_volume_ml"] > 500


def test_a_segmentation_that_fails_on_the_data_still_reports(
        mr_study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import plugin.pipeline.run as run_module

    def refuse(ctx: object) -> None:
        raise ValueError("grid too small for the model")

    monkeypatch.setattr(run_module, "segment_step", refuse)
    result = process_study(mr_study, tmp_path / "out")
    assert [p.name for p in result.files] == ["sr.dcm"]
    assert "failed on this study: grid too small" in result.summary["segmentation"]["reason"]


def test_a_birth_date_written_with_dashes_is_repaired_and_reported(tmp_path: Path) -> None:
    """Issue 15: `1961-07-23` used to kill the study (highdicom refuses the DA value)."""
    write_phantom_study(make_phantom(424_273, SMALL_MR), tmp_path / "study")
    dicom = tmp_path / "study" / "dicom"
    for path in dicom.rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.PatientBirthDate = "1961-07-23"
        ds.save_as(path)
    result = process_study(dicom, tmp_path / "out")
    assert {"seg.dcm", "sr.dcm"} <= {p.name for p in result.files}
    sr = pydicom.dcmread(tmp_path / "out" / "sr.dcm")
    assert sr.PatientBirthDate == "19610723"
    notes = [str(item.get("TextValue", "")) for item in sr.ContentSequence[-1].ContentSequence]
    notes += [str(item.get("TextValue", "")) for item in sr.ContentSequence]
    assert any("PatientBirthDate" in n for n in notes), notes
    assert not any("1961-07-23" in n for n in notes)
