"""Named DICOM status codes answered by Hepatica's service providers.

Values come from DICOM PS3.7 Annex C (general statuses) and PS3.4 Table B.2-1 (Storage
Service Class). The ``0xC2xx`` codes are the "cannot understand" sub-range that pynetdicom
uses for handler failures, so logs read alike on both sides. A named constant instead of a
bare number avoids the classic mistake of answering ``0x0210`` where ``0xC210`` was meant.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["Status", "is_failure", "is_success", "is_warning"]


class Status(IntEnum):
    """C-ECHO / C-STORE response statuses (PS3.4 B.2.3, PS3.7 C)."""

    SUCCESS = 0x0000
    # Warnings (PS3.4 Table B.2-1): the instance was stored.
    COERCION_OF_DATA_ELEMENTS = 0xB000
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS_WARNING = 0xB007
    ELEMENTS_DISCARDED = 0xB006
    # General failures (PS3.7 C.4).
    PROCESSING_FAILURE = 0x0110
    DUPLICATE_SOP_INSTANCE = 0x0111
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    # Storage failures (PS3.4 Table B.2-1).
    OUT_OF_RESOURCES = 0xA700
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000
    # "Cannot understand" sub-codes, as pynetdicom names them.
    CANNOT_DECODE_DATA_SET = 0xC210
    HANDLER_EXCEPTION = 0xC211


def is_success(status: int) -> bool:
    """True for 0x0000 only: a warning is not a plain success."""
    return status == Status.SUCCESS


def is_warning(status: int) -> bool:
    """Warnings (0x0001, 0x0107, 0x0116, 0xBxxx) mean the peer kept the instance."""
    return status in (0x0001, 0x0107, 0x0116) or 0xB000 <= status <= 0xBFFF


def is_failure(status: int) -> bool:
    """Anything that is neither success, warning nor pending (0xFF00/0xFF01) failed."""
    return not (is_success(status) or is_warning(status) or status in (0xFF00, 0xFF01))
