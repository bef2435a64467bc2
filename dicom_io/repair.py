"""Repair, or blank, header values a strict DICOM library refuses, and say so.

Archives hold values like PatientBirthDate ``1961-07-23`` (a DA with dashes) or PatientSex
``MALE``. pydicom reads them with a warning, but highdicom refuses to copy them into a SEG
or SR, which used to fail the whole study. Values with an unambiguous meaning are rewritten
in the standard form; anything else is emptied (these attributes are Type 2 or 3 in the
modules highdicom copies, so empty is valid). Each change is reported by keyword only:
the values are patient data and never reach a note or a log.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable

from pydicom import config
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.valuerep import validate_value

__all__ = ["repair_values"]

_DASHED_DATE = re.compile(r"(\d{4})[-./ ](\d{1,2})[-./ ](\d{1,2})")
_COLON_TIME = re.compile(r"(\d{2}):(\d{2})(?::(\d{2})(\.\d{1,6})?)?")
_AGE = re.compile(r"\d{3}[DWMY]")
_PATIENT_SEX = BaseTag(0x00100040)
_SEX_WORDS = {"M": "M", "MALE": "M", "F": "F", "FEMALE": "F", "O": "O", "OTHER": "O"}


def _valid(vr: str, value: str) -> bool:
    try:
        validate_value(vr, value, config.RAISE)
    except (ValueError, TypeError):
        return False
    return True


def _date(value: str) -> str | None:
    text = value.strip()
    match = _DASHED_DATE.fullmatch(text)
    if match:
        text = f"{match[1]}{int(match[2]):02d}{int(match[3]):02d}"
    try:
        dt.datetime.strptime(text, "%Y%m%d")
    except ValueError:
        return None
    return text


def _time(value: str) -> str | None:
    text = value.strip()
    match = _COLON_TIME.fullmatch(text)
    if match:
        text = match[1] + match[2] + (match[3] or "") + (match[4] or "")
    return text if _valid("TM", text) else None


def _datetime(value: str) -> str | None:
    text = value.strip().replace("T", "")
    date = _date(text[:10]) if _DASHED_DATE.match(text) else None
    if date is not None:
        text = date + text[10:].replace(":", "").lstrip()
    return text if _valid("DT", text) else None


def _age(value: str) -> str | None:
    text = value.strip().upper()
    if text.isdigit() and len(text) <= 3:
        text = text.zfill(3) + "Y"
    return text if _AGE.fullmatch(text) else None


def _sex(value: str) -> str | None:
    return _SEX_WORDS.get(value.strip().upper())


_FIXERS: dict[str, Callable[[str], str | None]] = {
    "DA": _date, "TM": _time, "DT": _datetime, "AS": _age,
}


def repair_values(ds: Dataset) -> list[str]:
    """Fix ``ds`` in place (top level only); returns one note per changed attribute."""
    notes: list[str] = []
    for tag in list(ds.keys()):
        if tag.is_private:
            continue
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            continue
        fixer = _sex if tag == _PATIENT_SEX else _FIXERS.get(vr)
        if fixer is None:
            continue
        element = ds[tag]
        values = element.value if isinstance(element.value, MultiValue) else [element.value]
        texts = [str(v) for v in values if v not in (None, "")]
        if not texts or all(fixer(t) == t for t in texts):
            continue
        fixed = [fixer(t) for t in texts]
        keyword = element.keyword or str(tag)
        if all(f is not None for f in fixed):
            element.value = fixed if len(fixed) > 1 else fixed[0]
            notes.append(f"{keyword}: rewritten in standard {vr} form")
        else:
            element.value = ""
            notes.append(f"{keyword}: invalid {vr} value removed")
    return notes
