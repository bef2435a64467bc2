"""DICOM UIDs that name things on disk: checked before they become a path component.

A UID comes from whoever sent the data (a modality, a PACS, an Orthanc that stores any
string), and Hepatica names folders and files after Study, Series and SOP Instance UIDs. A
value such as ``../../x`` or ``/etc`` joined onto a root escapes it, and a later ``rmtree``
of that path deletes someone else's directory. So every UID is checked against the UID
grammar (PS3.5 9.1: digits and dots, at most 64 characters, no empty component) before it
names anything, and :func:`path_under` also checks where the joined path resolves to.

Leading zeros inside a component (``1.2.03``) are tolerated: PS3.5 forbids them, but some
modalities emit them, they are harmless on disk, and refusing the study helps nobody.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["UID_MAX_LENGTH", "InvalidUidError", "checked_uid", "is_valid_uid", "path_under"]

UID_MAX_LENGTH = 64
_UID_RE = re.compile(r"[0-9]+(?:\.[0-9]+)*")


class InvalidUidError(ValueError):
    """A value that is not a DICOM UID was about to name something on disk."""


def is_valid_uid(value: object) -> bool:
    """True when ``value`` is a UID (digits and single dots, 1-64 characters)."""
    return (isinstance(value, str) and len(value) <= UID_MAX_LENGTH
            and _UID_RE.fullmatch(value) is not None)


def checked_uid(value: object, what: str = "UID") -> str:
    """``value`` when it is a valid UID, else :class:`InvalidUidError`.

    The message describes the value without quoting it: a field that should hold a UID but
    does not may hold anything, patient data included, and messages reach logs and the job
    table.
    """
    if is_valid_uid(value):
        assert isinstance(value, str)
        return value
    if not isinstance(value, str):
        shape = f"a {type(value).__name__}"
    elif not value:
        shape = "empty"
    else:
        shape = f"{len(value)} characters, not only digits and single dots"
        if len(value) > UID_MAX_LENGTH:
            shape = f"{len(value)} characters, more than {UID_MAX_LENGTH}"
    raise InvalidUidError(f"{what} is not a valid DICOM UID ({shape})")


def path_under(root: Path, *uids: str, suffix: str = "") -> Path:
    """``root/uid1/uid2…`` (``suffix`` added to the last), every UID checked first.

    The result is also resolved and compared with the resolved root, so that nothing but a
    path below ``root`` can ever come back, whatever the grammar check missed.
    """
    if not uids:
        raise ValueError("path_under needs at least one UID")
    parts = [checked_uid(uid) for uid in uids]
    parts[-1] += suffix
    path = Path(root).joinpath(*parts)
    base = Path(root).resolve()
    if not path.resolve().is_relative_to(base) or path.resolve() == base:
        raise InvalidUidError(f"a UID path left {root}")
    return path
