"""plugin.pipeline.clinical: REST store, watched folder and SR in the study, first source wins."""

from __future__ import annotations

import json
from pathlib import Path

from pydicom.dataset import Dataset

from plugin.node.orthanc.store import OrthancStore
from plugin.pipeline.clinical import from_folder, from_sr, gather_clinical

STUDY = "1.2.826.0.1.3680043.8.498.1"


def _code(meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "X", "99SITE", meaning
    return item


def _site_sr(manufacturer: str = "Site LIS") -> Dataset:
    num = Dataset()
    num.ValueType = "NUM"
    num.ConceptNameCodeSequence = [_code("Platelets")]
    value = Dataset()
    value.NumericValue = "98"
    num.MeasuredValueSequence = [value]
    code = Dataset()
    code.ValueType = "CODE"
    code.ConceptNameCodeSequence = [_code("AFP response")]
    code.ConceptCodeSequence = [_code("No response")]
    container = Dataset()
    container.ValueType = "CONTAINER"
    container.ContentSequence = [num, code]
    sr = Dataset()
    sr.Modality, sr.Manufacturer = "SR", manufacturer
    sr.ContentSequence = [container]
    return sr


def test_sr_items_become_variables_but_not_hepatica_own() -> None:
    assert from_sr([_site_sr()]) == {"platelets": 98.0, "afp_response": "no_response"}
    assert from_sr([_site_sr("Hepatica")]) == {}


def test_folder_json_and_csv(tmp_path: Path) -> None:
    (tmp_path / f"{STUDY}.json").write_text(json.dumps({"Platelets": 120}))
    (tmp_path / "lab.csv").write_text("patient_id,dilated_vasculature,albumin\nP7,1,\nP8,0,40\n")
    (tmp_path / "broken.json").write_text("{")
    assert from_folder(tmp_path, STUDY, "P7") == {"platelets": 120, "dilated_vasculature": 1}


def test_rest_wins_over_folder_wins_over_sr(tmp_path: Path) -> None:
    store = OrthancStore(tmp_path / "orthanc.sqlite3")
    store.set_clinical(STUDY, {"platelets": 150})
    store.close()
    folder = tmp_path / "clinical"
    folder.mkdir()
    (folder / f"{STUDY}.json").write_text(json.dumps({"platelets": 120, "afp_response":
                                                      "response"}))
    inputs = gather_clinical(STUDY, "P7", store=tmp_path / "orthanc.sqlite3", folder=folder,
                             study_datasets=[_site_sr()])
    assert inputs.values == {"platelets": 150, "afp_response": "response"}
    assert inputs.origin == {"platelets": "REST", "afp_response": "folder clinical"}
