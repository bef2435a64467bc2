"""Library warnings and log lines without the values they quote (patient data).

pydicom warns *and* logs about every invalid value it reads, quoting the value: a name, an
ID, a birth date. Hepatica's logs travel further than the images, so those lines are
rewritten with the quoted values replaced, and exact repeats are dropped.
"""

from __future__ import annotations

import logging
import re
import threading
import warnings
from typing import TextIO

__all__ = ["redact_library_warnings", "redact_values"]

# A quoted value in a library message: 'Doe^Jane', "12345", b'...'. DICOM libraries quote
# the offending value when they warn about it; the rest of the message says what is wrong.
_QUOTED = re.compile(r"""b?'(?:[^'\\\n]|\\.)*'|b?"(?:[^"\\\n]|\\.)*\"""")
_REDACTED = "'…'"
_LIBRARY_LOGGERS = ("pydicom", "pynetdicom", "highdicom", "py.warnings")
_MAX_REMEMBERED = 4096


def redact_values(text: str) -> str:
    """``text`` with every quoted value replaced by ``'…'``."""
    return _QUOTED.sub(_REDACTED, text)


class _Redactor(logging.Filter):
    """Rewrites a library's log record without its quoted values; drops exact repeats.

    pydicom logs *and* warns for every invalid value, once per value: a few hundred odd
    files gave thousands of lines, each with a name or ID in it. Redacted, they collapse
    into a handful of distinct lines, each kept once.
    """

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def first_time(self, text: str) -> bool:
        with self._lock:
            if text in self._seen:
                return False
            if len(self._seen) < _MAX_REMEMBERED:
                self._seen.add(text)
            return True

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = redact_values(record.getMessage())
        except Exception:  # a malformed record: keep its format string only
            text = redact_values(str(record.msg))
        record.msg, record.args = text, None
        if record.exc_info and record.levelno < logging.ERROR:
            record.exc_info = None  # tracebacks of library warnings can quote values too
        return self.first_time(f"{record.name}:{text}")


_REDACTOR = _Redactor()
_INSTALL_LOCK = threading.Lock()
_installed = False


def redact_library_warnings() -> None:
    """Make pydicom/pynetdicom/highdicom warnings and log lines value-free (idempotent).

    Installs a filter on the libraries' loggers (and on ``py.warnings``, where
    :func:`logging.captureWarnings` sends warnings) and wraps :func:`warnings.showwarning`
    so that warnings printed to stderr are redacted and printed once.
    """
    global _installed
    with _INSTALL_LOCK:
        if _installed:
            return
        for name in _LIBRARY_LOGGERS:
            logging.getLogger(name).addFilter(_REDACTOR)
        original = warnings.showwarning

        def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
            text = redact_values(str(message))
            if _REDACTOR.first_time(f"warning:{category.__name__}:{text}"):
                original(text, category, filename, lineno, file, line)

        warnings.showwarning = show
        _installed = True

