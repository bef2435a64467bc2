"""TID 1600 Image Library of an SR, its entries encoded once, straight to bytes.

Why not ``highdicom.sr.ImageLibrary`` as it is: it builds every descriptor of every image
as a validated content item (17 items, ~50 datasets per image), ``Comprehensive3DSR`` then
deep-copies the whole tree, and pydicom encodes it element by element on save. For a
64-slice series the library is 87 % of the SR's datasets and most of its build and write
time. Here the library container's Content Sequence is held as one already-encoded
element, as a data set read from a file holds its elements until they are accessed:
pydicom writes it as it is, and reading it (``ds.ContentSequence``) decodes it as usual.

The content is highdicom's: for CT/MR/PT images of the common layout (the cross-sectional
attributes present) the items are encoded here in highdicom's shape, which
``tests/export/test_export_sr_library.py`` checks byte for byte; for any other image the
whole library falls back to ``hd.sr.ImageLibrary``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from functools import lru_cache

import highdicom as hd
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.valuerep import DS

__all__ = ["image_library", "is_image_library"]

_CROSS_SECTIONAL = ("CT", "MR", "PT")
_NEEDED = ("PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient", "SliceThickness",
           "Rows", "Columns", "SOPClassUID", "SOPInstanceUID")
_CONTENT_SEQUENCE = BaseTag(0x0040A730)

Code = tuple[str, str, str]
"""(code value, coding scheme designator, code meaning)"""
_LIBRARY: Code = ("111028", "DCM", "Image Library")
_GROUP: Code = ("126200", "DCM", "Image Library Group")
_SOURCE: Code = ("260753009", "SCT", "Source")
_FRAME_OF_REFERENCE: Code = ("112227", "DCM", "Frame of Reference UID")
_MODALITY: Code = ("121139", "DCM", "Modality")
_PIXELS: Code = ("{pixels}", "UCUM", "Pixels")
_MM: Code = ("mm", "UCUM", "mm")
_UNIT_COSINE: Code = ("{-1:1}", "UCUM", "{-1:1}")
_ROWS: Code = ("110910", "DCM", "Pixel Data Rows")
_COLUMNS: Code = ("110911", "DCM", "Pixel Data Columns")
_HORIZONTAL: Code = ("111026", "DCM", "Horizontal Pixel Spacing")
_VERTICAL: Code = ("111066", "DCM", "Vertical Pixel Spacing")
_THICKNESS: Code = ("112225", "DCM", "Slice Thickness")
_POSITION: tuple[Code, ...] = (("110901", "DCM", "Image Position (Patient) X"),
                               ("110902", "DCM", "Image Position (Patient) Y"),
                               ("110903", "DCM", "Image Position (Patient) Z"))
_ORIENTATION: tuple[Code, ...] = (
    ("110904", "DCM", "Image Orientation (Patient) Row X"),
    ("110905", "DCM", "Image Orientation (Patient) Row Y"),
    ("110906", "DCM", "Image Orientation (Patient) Row Z"),
    ("110907", "DCM", "Image Orientation (Patient) Column X"),
    ("110908", "DCM", "Image Orientation (Patient) Column Y"),
    ("110909", "DCM", "Image Orientation (Patient) Column Z"))
_SPACING_BETWEEN: Code = ("112226", "DCM", "Spacing between slices")


def is_image_library(item: Dataset) -> bool:
    """Whether a content item is the TID 1600 Image Library container."""
    names = item.get("ConceptNameCodeSequence") or []
    return (item.get("ValueType") == "CONTAINER" and len(names) == 1
            and str(names[0].get("CodeValue", "")) == _LIBRARY[0])


def image_library(datasets: Sequence[Dataset]) -> hd.sr.ContainerContentItem:
    """The Image Library container item for ``datasets``, laid out as ``hd.sr.ImageLibrary``
    does: one Image Library Group per (modality, Frame of Reference), in the order first
    met, holding an IMAGE entry with its TID 1602/1604 descriptors per image."""
    if not datasets:
        raise ValueError("Argument 'datasets' must contain at least one item.")
    if not all(_common_layout(ds) for ds in datasets):
        library = hd.sr.ImageLibrary(datasets)[0]
        assert isinstance(library, hd.sr.ContainerContentItem)
        return library
    groups: dict[tuple[Code, str | None], list[bytes]] = {}
    for ds in datasets:
        modality = _modality(str(ds.SOPClassUID))
        frame = str(ds.FrameOfReferenceUID) if "FrameOfReferenceUID" in ds else None
        groups.setdefault((modality, frame), []).append(_item(_entry(ds, modality)))
    # highdicom 0.28 looks for the Frame of Reference on the group's first *entry*, which
    # never has one: its groups carry no Frame of Reference item, so neither do these
    encoded = [_item(_container_head(_GROUP) + _sq(0x0040A730, entries))
               for entries in groups.values()]
    container = hd.sr.ContainerContentItem(
        name=hd.sr.CodedConcept(_LIBRARY[0], _LIBRARY[1], _LIBRARY[2]),
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    # encoded as the SR is written (explicit VR little endian): pydicom keeps it as it is
    container.set_original_encoding(False, True, container._character_set)
    value = b"".join(encoded)
    container[_CONTENT_SEQUENCE] = RawDataElement(  # type: ignore[assignment]
        _CONTENT_SEQUENCE, "SQ", len(value), value, 0, False, True)
    return container


def _common_layout(ds: Dataset) -> bool:
    """CT/MR/PT with every attribute the cross-sectional descriptors read, at top level."""
    return (str(ds.get("Modality", "")) in _CROSS_SECTIONAL
            and all(ds.get(name) is not None for name in _NEEDED)
            and len(ds.PixelSpacing) == 2 and len(ds.ImageOrientationPatient) == 6
            and len(ds.ImagePositionPatient) == 3)


@lru_cache(maxsize=32)
def _modality(sop_class_uid: str) -> Code:
    """The coded modality highdicom gives images of this SOP class (raises for non-images)."""
    image = Dataset()
    image.SOPClassUID = sop_class_uid
    image.SOPInstanceUID = "1.2.3"
    image.Rows = image.Columns = 1
    image.Modality = "OT"  # neither cross-sectional nor projection: the modality item only
    item = hd.sr.ImageLibraryEntryDescriptors(image)[0]
    code = item.ConceptCodeSequence[0]
    return str(code.CodeValue), str(code.CodingSchemeDesignator), str(code.CodeMeaning)


# --- explicit VR little endian, defined lengths (what pydicom writes for new data sets) ---

_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT",
                       "UV"})


def _element(group: int, element: int, vr: str, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\x00" if vr == "UI" else b" "
    if vr in _LONG_VRS:
        return struct.pack("<HH2sHI", group, element, vr.encode(), 0, len(value)) + value
    return struct.pack("<HH2sH", group, element, vr.encode(), len(value)) + value


def _text(tag: int, vr: str, value: str) -> bytes:
    return _element(tag >> 16, tag & 0xFFFF, vr, value.encode("ascii"))


def _item(body: bytes) -> bytes:
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(body)) + body


def _sq(tag: int, items: Iterable[bytes]) -> bytes:
    return _element(tag >> 16, tag & 0xFFFF, "SQ", b"".join(items))


@lru_cache(maxsize=256)
def _code(code: Code) -> bytes:
    """One coded concept as a sequence item (Code Value, Scheme, Meaning)."""
    return _item(_text(0x00080100, "SH", code[0]) + _text(0x00080102, "SH", code[1])
                 + _text(0x00080104, "LO", code[2]))


@lru_cache(maxsize=256)
def _head(value_type: str, name: Code, relationship: str) -> bytes:
    """Relationship Type, Value Type and Concept Name Code Sequence of one content item."""
    return (_text(0x0040A010, "CS", relationship) + _text(0x0040A040, "CS", value_type)
            + _sq(0x0040A043, [_code(name)]))


def _container_head(name: Code) -> bytes:
    return _head("CONTAINER", name, "CONTAINS") + _text(0x0040A050, "CS", "CONTINUOUS")


def _uidref(name: Code, uid: str) -> bytes:
    return _head("UIDREF", name, "HAS ACQ CONTEXT") + _text(0x0040A124, "UI", uid)


def _code_item(name: Code, value: Code) -> bytes:
    return _head("CODE", name, "HAS ACQ CONTEXT") + _sq(0x0040A168, [_code(value)])


def _num(name: Code, value: object, unit: Code) -> bytes:
    """A NUM item as ``hd.sr.NumContentItem`` writes it (FD only for float values)."""
    if not isinstance(value, (int, float)):
        raise TypeError('Argument "value" must have type "int" or "float".')
    measured = _sq(0x004008EA, [_code(unit)])
    if isinstance(value, float):
        measured += _element(0x0040, 0xA161, "FD", struct.pack("<d", float(value)))
    measured += _text(0x0040A30A, "DS", str(DS(value, auto_format=True)))
    return _head("NUM", name, "HAS ACQ CONTEXT") + _sq(0x0040A300, [_item(measured)])


def _entry(ds: Dataset, modality: Code) -> bytes:
    """One IMAGE entry: the reference, then its TID 1602 + TID 1604 descriptors."""
    reference = _item(_text(0x00081150, "UI", str(ds.SOPClassUID))
                      + _text(0x00081155, "UI", str(ds.SOPInstanceUID)))
    spacing, orientation, position = (ds.PixelSpacing, ds.ImageOrientationPatient,
                                      ds.ImagePositionPatient)
    items = [_code_item(_MODALITY, modality)]
    if "FrameOfReferenceUID" in ds:
        items.append(_uidref(_FRAME_OF_REFERENCE, str(ds.FrameOfReferenceUID)))
    items += [_num(_ROWS, ds.Rows, _PIXELS), _num(_COLUMNS, ds.Columns, _PIXELS),
              _num(_HORIZONTAL, spacing[1], _MM), _num(_VERTICAL, spacing[0], _MM),
              _num(_THICKNESS, ds.SliceThickness, _MM)]
    items += [_num(name, position[i], _MM) for i, name in enumerate(_POSITION)]
    items += [_num(name, orientation[i], _UNIT_COSINE) for i, name in enumerate(_ORIENTATION)]
    if "SpacingBetweenSlices" in ds:
        items.append(_num(_SPACING_BETWEEN, ds.SpacingBetweenSlices, _MM))
    return (_sq(0x00081199, [reference]) + _head("IMAGE", _SOURCE, "CONTAINS")
            + _sq(0x0040A730, [_item(i) for i in items]))
