"""Write a result object to a DICOM file without pydicom walking its tree once per level.

Why: pydicom treats a data set built in memory as having "no original encoding", so before
writing it (and again before writing each nested item) it runs its ambiguous-VR correction
over the whole subtree below, converting any already-encoded element on the way. For an SR
content tree that is quadratic in its depth: most of the SR's write time. Our objects hold
no ambiguous VR (``US or SS``, ``OB or OW`` …) outside image pixel modules, so each data set
that holds none is marked as already in the encoding it is about to be written in, which is
the use pydicom documents for ``Dataset.set_original_encoding``. The bytes written are the
same (``tests/export/test_export_write.py``).
"""

from __future__ import annotations

from pathlib import Path

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian

__all__ = ["mark_encoding", "save_result"]


def save_result(ds: Dataset, path: Path) -> Path:
    """``ds.save_as(path)`` as a DICOM file (preamble and file meta), marked first."""
    mark_encoding(ds)
    ds.save_as(path, enforce_file_format=True)
    return path


def mark_encoding(ds: Dataset) -> None:
    """Mark every data set of ``ds`` free of ambiguous VRs as encoded in the transfer syntax
    it will be written in; data sets with one are left for pydicom to correct."""
    meta = getattr(ds, "file_meta", None)
    syntax = UID(str(meta.get("TransferSyntaxUID", ExplicitVRLittleEndian))) if meta else \
        ExplicitVRLittleEndian
    if syntax.is_compressed and syntax.is_deflated:
        return  # deflated: pydicom encodes the data set separately; leave it as it is
    _mark(ds, syntax.is_implicit_VR, syntax.is_little_endian)


def _mark(ds: Dataset, implicit: bool, little: bool) -> bool:
    """Mark ``ds`` when nothing in its subtree has an ambiguous VR; return whether it was.

    A subtree holding one stays unmarked up to the root, so pydicom corrects it with every
    ancestor at hand, as it would have.
    """
    clean = True
    for elem in ds.elements():  # raw elements stay raw: they are already encoded
        vr = elem.VR or ""
        if " or " in vr:
            clean = False
        elif vr == "SQ" and isinstance(elem, DataElement):
            for item in elem.value or ():
                clean = _mark(item, implicit, little) and clean
    if clean:
        # the character set pydicom compares with is the one the data set itself resolves
        ds.set_original_encoding(implicit, little, ds._character_set)
    return clean
