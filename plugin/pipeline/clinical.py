"""Clinical variables of a study, from wherever the site can send them.

Three sources, first one wins per variable:

1. **REST** - ``POST /hepatica/studies/{StudyInstanceUID}/clinical`` with a JSON object, on
   the Orthanc plugin (stored in ``data_dir/orthanc.sqlite3`` by ``plugin.node.orthanc.store``).
2. **Watched folder** ``data_dir/clinical/`` - the embedded node's way (no extra server to
   secure): ``<StudyInstanceUID>.json`` holding ``{"name": value, ...}``, or any ``*.json``
   with ``{"study_instance_uid" | "patient_id": ..., "variables": {...}}``, or any ``*.csv``
   with a ``study_instance_uid`` or ``patient_id`` column and one column per variable. The
   folder is read when the study is processed, so files must be there before the study is
   stable (or the study re-sent).
3. **DICOM SR in the study** not written by Hepatica: each NUM, TEXT or CODE item is a
   variable named by its concept name (lower case, spaces as underscores), e.g. a NUM
   "Platelets" -> ``platelets``.

Where each value came from is kept, so the SR can say which inputs a prediction used.
"""

from __future__ import annotations

import csv
import json
import logging
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from inference.response import ClinicalValue
from plugin.node.orthanc.store import validate_clinical

__all__ = ["ClinicalInputs", "from_folder", "from_sr", "from_store", "gather_clinical"]

log = logging.getLogger(__name__)
HEPATICA_MANUFACTURER = "Hepatica"


@dataclass(frozen=True)
class ClinicalInputs:
    """Variable -> value, and variable -> where it came from."""

    values: dict[str, ClinicalValue] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)

    def merged_under(self, values: Mapping[str, ClinicalValue], origin: str) -> ClinicalInputs:
        """These inputs plus ``values`` for the variables not already known."""
        new = {k: v for k, v in values.items() if k not in self.values and v not in (None, "")}
        return ClinicalInputs({**self.values, **new},
                              {**self.origin, **{k: origin for k in new}})


def _normalise(name: str) -> str:
    return "_".join(name.strip().lower().replace("-", " ").split())


def from_store(database: Path, study_uid: str) -> dict[str, ClinicalValue]:
    """Variables POSTed to the Orthanc plugin's REST route (read-only, no schema changes)."""
    if not database.is_file():
        return {}
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5.0) as db:
        try:
            row = db.execute("SELECT variables FROM clinical WHERE study_uid = ?",
                             (study_uid,)).fetchone()
        except sqlite3.OperationalError:
            return {}
    loaded: dict[str, ClinicalValue] = json.loads(row[0]) if row else {}
    return {_normalise(k): v for k, v in loaded.items()}


def from_folder(folder: Path, study_uid: str, patient_id: str = "") -> dict[str, ClinicalValue]:
    """Variables for the study (or its patient) in the watched folder's JSON and CSV files."""
    if not folder.is_dir():
        return {}
    found: dict[str, ClinicalValue] = {}
    for path in sorted(folder.iterdir()):
        try:
            found.update(_file_values(path, study_uid, patient_id))
        except (OSError, ValueError, KeyError) as exc:
            log.warning("clinical file %s skipped: %s", path.name, exc)
    return {_normalise(k): v for k, v in found.items()}


def _file_values(path: Path, study_uid: str, patient_id: str) -> dict[str, ClinicalValue]:
    if path.suffix.lower() == ".json":
        document = json.loads(path.read_text())
        if path.stem == study_uid:
            return validate_clinical(document)
        if _matches(document, study_uid, patient_id):
            return validate_clinical(document["variables"])
    elif path.suffix.lower() == ".csv":
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                if _matches(row, study_uid, patient_id):
                    values = {k: _parse(v) for k, v in row.items()
                              if k not in ("study_instance_uid", "patient_id")}
                    return validate_clinical({k: v for k, v in values.items() if v is not None})
    return {}


def _matches(document: Any, study_uid: str, patient_id: str) -> bool:
    if not isinstance(document, Mapping):
        return False
    uid, pid = document.get("study_instance_uid"), document.get("patient_id")
    return bool((uid and uid == study_uid) or (patient_id and pid and pid == patient_id))


def _parse(text: str | None) -> ClinicalValue:
    if text is None or text.strip() == "":
        return None
    try:
        number = float(text)
    except ValueError:
        return text.strip()
    return int(number) if number.is_integer() and "." not in text else number


def from_sr(datasets: Iterable[Dataset]) -> dict[str, ClinicalValue]:
    """Variables in structured reports of the study that Hepatica did not write."""
    found: dict[str, ClinicalValue] = {}
    for ds in datasets:
        if ds.get("Modality") != "SR" or ds.get("Manufacturer") == HEPATICA_MANUFACTURER:
            continue
        for item in _items(ds.get("ContentSequence", [])):
            name_seq = item.get("ConceptNameCodeSequence")
            value = _item_value(item)
            if name_seq and value is not None:
                found.setdefault(_normalise(str(name_seq[0].CodeMeaning)), value)
    return found


def _items(sequence: Iterable[Dataset]) -> Iterable[Dataset]:
    for item in sequence:
        yield item
        yield from _items(item.get("ContentSequence", []))


def _item_value(item: Dataset) -> ClinicalValue:
    kind = item.get("ValueType")
    if kind == "NUM" and item.get("MeasuredValueSequence"):
        return float(item.MeasuredValueSequence[0].NumericValue)
    if kind == "TEXT":
        return str(item.TextValue)
    if kind == "CODE" and item.get("ConceptCodeSequence"):
        return _normalise(str(item.ConceptCodeSequence[0].CodeMeaning))
    return None


def gather_clinical(study_uid: str, patient_id: str, *, store: Path | None = None,
                    folder: Path | None = None, study_datasets: Iterable[Dataset] = ()
                    ) -> ClinicalInputs:
    """All three sources merged: REST store, then watched folder, then SR in the study."""
    inputs = ClinicalInputs()
    if store is not None:
        inputs = inputs.merged_under(from_store(store, study_uid), "REST")
    if folder is not None:
        inputs = inputs.merged_under(from_folder(folder, study_uid, patient_id),
                                     f"folder {folder.name}")
    return inputs.merged_under(from_sr(study_datasets), "SR in study")
