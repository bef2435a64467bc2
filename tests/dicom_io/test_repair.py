"""Values a DICOM library refuses are repaired or emptied at load time, with a note that names
the attribute and never the value; highdicom then accepts the instance as evidence."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import highdicom as hd
import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from dicom_io.repair import repair_values
from dicom_io.series import load_study
from tests.dicom_io.conftest import make_series, write_series


def _odd(**values: str) -> Dataset:
    ds = make_series(2, modality="CT", sop_class="1.2.840.10008.5.1.4.1.1.2")[0]
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20240101", "101010", "A1", "1"
    ds.ReferringPhysicianName, ds.PatientSex = "", "F"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for keyword, value in values.items():
            setattr(ds, keyword, value)
    return ds


def _key_object(ds: Dataset) -> hd.ko.KeyObjectSelectionDocument:
    return hd.ko.KeyObjectSelectionDocument(
        evidence=[ds],
        content=hd.ko.KeyObjectSelection(document_title=codes.DCM.Manifest,
                                         referenced_objects=[ds]),
        series_instance_uid=generate_uid(), series_number=1, sop_instance_uid=generate_uid(),
        instance_number=1, manufacturer="test")


def test_highdicom_refuses_the_raw_value() -> None:
    """The defect: a birth date written with dashes made highdicom refuse the study."""
    with pytest.raises(ValueError):
        _key_object(_odd(PatientBirthDate="1961-07-23"))


def test_loaded_series_is_repaired_noted_and_accepted_by_highdicom(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ds = _odd(PatientBirthDate="1961-07-23", PatientSex="FEMALE", StudyTime="10:10:10",
              PatientAge="61", AcquisitionDate="someday")
    write_series([ds], tmp_path / "study")
    caplog.clear()  # what the test itself logged while making the file
    caplog.set_level(logging.DEBUG)
    (series,) = load_study(tmp_path / "study")
    loaded = series.first
    assert loaded.PatientBirthDate == "19610723"
    assert loaded.PatientSex == "F"
    assert loaded.StudyTime == "101010"
    assert loaded.PatientAge == "061Y"
    assert loaded.AcquisitionDate == ""
    assert "PatientBirthDate: rewritten in standard DA form" in series.repairs
    assert "AcquisitionDate: invalid DA value removed" in series.repairs
    for value in ("1961-07-23", "FEMALE", "someday", "10:10:10"):
        assert value not in caplog.text
        assert all(value not in note for note in series.repairs)
    assert str(_key_object(loaded).PatientBirthDate) == "19610723"


def test_valid_values_are_untouched() -> None:
    ds = _odd(PatientBirthDate="19610723", PatientSex="O", PatientAge="045Y")
    assert repair_values(ds) == []
    assert ds.PatientBirthDate == "19610723"


@pytest.mark.parametrize(("raw", "fixed"), [
    ("1961.07.23", "19610723"), ("1961/7/3", "19610703"), ("19610231", ""), ("23.07.1961", ""),
])
def test_date_forms(raw: str, fixed: str) -> None:
    ds = _odd(PatientBirthDate=raw)
    assert len(repair_values(ds)) == 1
    assert ds.PatientBirthDate == fixed
