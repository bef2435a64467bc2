"""Keep patient identifiers out of logs while still letting operators correlate lines."""

from __future__ import annotations

import hashlib

__all__ = ["hash_identifier"]


def hash_identifier(value: object) -> str:
    """First 12 hex digits of the SHA-256 of ``str(value)``.

    Logs travel further than the images (support tickets, log shippers), so a patient
    name or ID must never appear in clear; a short hash still shows that two lines are
    about the same patient. An absent value hashes to the literal ``"-"``.
    """
    if value is None or str(value) == "":
        return "-"
    return hashlib.sha256(str(value).encode("utf-8")).hexdigest()[:12]
