"""A stand-in for the ``orthanc`` module of orthanc-python 4.0, for unit tests.

It records what the plugin script registers and serves ``RestApiGet``/``RestApiPost`` from
a dictionary, raising ``OrthancException`` for unknown paths as the real module does. The
signatures follow the real ones the script uses (``SendHttpStatus`` takes a str body and its
size; 405 must go through ``SendMethodNotAllowed``), because the fake is only worth having
if code that passes here works inside Orthanc.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import IntEnum
from typing import Any


class OrthancException(Exception):
    pass


class ChangeType(IntEnum):
    COMPLETED_SERIES = 0
    NEW_INSTANCE = 2
    NEW_STUDY = 5
    STABLE_STUDY = 11
    ORTHANC_STARTED = 12
    ORTHANC_STOPPED = 13


class ResourceType(IntEnum):
    PATIENT = 0
    STUDY = 1
    SERIES = 2
    INSTANCE = 3


configuration: dict[str, Any] = {}
resources: dict[str, Any] = {}
posts: dict[str, Callable[[bytes], Any]] = {}
logs: list[tuple[str, str]] = []
change_callbacks: list[Callable[[int, int, str], None]] = []
rest_callbacks: dict[str, Callable[..., None]] = {}


def reset(config: dict[str, Any]) -> None:
    configuration.clear()
    configuration.update(config)
    for registry in (resources, posts, rest_callbacks):
        registry.clear()
    logs.clear()
    change_callbacks.clear()


def GetConfiguration() -> str:
    return json.dumps(configuration)


def RestApiGet(uri: str) -> bytes:
    if uri not in resources:
        raise OrthancException("Unknown resource")
    value = resources[uri]
    return value if isinstance(value, bytes) else json.dumps(value).encode()


def RestApiPost(uri: str, body: bytes | str) -> bytes:
    if uri not in posts:
        raise OrthancException("Unknown resource")
    data = body.encode() if isinstance(body, str) else body
    return json.dumps(posts[uri](data)).encode()


def LogInfo(message: str) -> None:
    logs.append(("info", message))


def LogWarning(message: str) -> None:
    logs.append(("warning", message))


def LogError(message: str) -> None:
    logs.append(("error", message))


def RegisterOnChangeCallback(callback: Callable[[int, int, str], None]) -> None:
    change_callbacks.append(callback)


def RegisterRestCallback(pattern: str, callback: Callable[..., None]) -> None:
    rest_callbacks[pattern] = callback


class RestOutput:
    """Collects one answer, refusing the calls Orthanc refuses."""

    def __init__(self) -> None:
        self.status: int | None = None
        self.body: bytes = b""
        self.content_type = ""

    def AnswerBuffer(self, body: bytes | str, content_type: str) -> None:
        self.status, self.content_type = 200, content_type
        self.body = body.encode() if isinstance(body, str) else body

    def SendHttpStatus(self, status: int, body: str, size: int) -> None:
        if status in (200, 301, 401, 405) or not isinstance(body, str):
            raise OrthancException("Parameter out of range")
        self.status, self.body = status, body.encode()[:size]

    def SendMethodNotAllowed(self, allowed: str) -> None:
        self.status, self.body = 405, b""


def call_rest(uri: str, method: str = "GET", body: bytes = b"",
              query: dict[str, str] | None = None) -> RestOutput:
    """Route ``uri`` the way Orthanc does (full-match of the registered regexes)."""
    import re

    for pattern, callback in rest_callbacks.items():
        found = re.fullmatch(pattern, uri)
        if found:
            output = RestOutput()
            callback(output, uri, method=method, groups=found.groups(), get=query or {},
                     body=body)
            return output
    raise LookupError(f"no route for {uri}")
