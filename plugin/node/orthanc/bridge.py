"""Python logging → Orthanc's log, so one log file tells what happened to a study."""

from __future__ import annotations

import logging
from collections.abc import Callable

__all__ = ["OrthancLogHandler", "install"]

LogFunction = Callable[[str], None]


class OrthancLogHandler(logging.Handler):
    """Sends records to ``orthanc.LogInfo``/``LogWarning``/``LogError`` (passed in)."""

    def __init__(self, info: LogFunction, warning: LogFunction, error: LogFunction) -> None:
        super().__init__()
        self._info, self._warning, self._error = info, warning, error
        self.setFormatter(logging.Formatter("hepatica %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if record.levelno >= logging.ERROR:
                self._error(text)
            elif record.levelno >= logging.WARNING:
                self._warning(text)
            else:
                self._info(text)
        except Exception:  # logging must never break a callback
            self.handleError(record)


def install(info: LogFunction, warning: LogFunction, error: LogFunction,
            level: int = logging.INFO) -> OrthancLogHandler:
    """Attach the bridge to the root logger (once; a second call replaces the first)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, OrthancLogHandler)]:
        root.removeHandler(old)
    handler = OrthancLogHandler(info, warning, error)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
