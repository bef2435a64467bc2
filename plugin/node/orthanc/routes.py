"""The REST routes under ``/hepatica/``, as pure functions of parsed requests.

``hepatica_orthanc.py`` registers :data:`ROUTES` with ``orthanc.RegisterRestCallback`` and
passes each request here as a :class:`Request`; :func:`dispatch` is the one place that turns
an exception into an HTTP status and a logged reason.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from dicom_io.uids import InvalidUidError
from plugin.node.jobs import Job, JobState
from plugin.node.orthanc.app import HepaticaOrthanc
from plugin.node.orthanc.store import validate_clinical
from plugin.pipeline.models import NoModelError

__all__ = ["ROUTES", "Request", "Response", "dispatch", "job_json"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    method: str
    groups: tuple[str, ...] = ()
    query: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class Response:
    status: int
    body: Any

    def encoded(self) -> bytes:
        return json.dumps(self.body, indent=1, sort_keys=True).encode()


Handler = Callable[[HepaticaOrthanc, Request], Response]


class HttpError(Exception):
    def __init__(self, status: int, message: str, allow: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.allow = allow


def job_json(job: Job) -> dict[str, Any]:
    data = asdict(job)
    data["state"] = job.state.value
    return data


def _method(request: Request, *allowed: str) -> None:
    if request.method not in allowed:
        raise HttpError(405, f"{request.method} not allowed here; use {' or '.join(allowed)}",
                        allow=",".join(allowed))


def health(app: HepaticaOrthanc, request: Request) -> Response:
    _method(request, "GET")
    report = app.health()
    return Response(200 if report["status"] == "ok" else 503, report)


def jobs(app: HepaticaOrthanc, request: Request) -> Response:
    _method(request, "GET")
    try:
        states = [JobState(s) for s in request.query.get("state", "").split(",") if s]
        limit = int(request.query.get("limit", "100"))
    except ValueError as exc:
        raise HttpError(400, f"bad query: {exc}; state is one of "
                        f"{', '.join(s.value for s in JobState)}, limit a number") from exc
    if not 1 <= limit <= 1000:
        raise HttpError(400, "limit must be 1-1000")
    study = request.query.get("study")
    found = app.history().list(states or None, limit)
    if study:
        uid = app.study_uid(study)
        found = [job for job in found if job.study_uid == uid]
    return Response(200, {"jobs": [job_json(job) for job in found]})


def job(app: HepaticaOrthanc, request: Request) -> Response:
    _method(request, "GET")
    found = app.history().get(int(request.groups[0]))
    if found is None:
        raise HttpError(404, f"no job {request.groups[0]}")
    return Response(200, job_json(found))


def rerun(app: HepaticaOrthanc, request: Request) -> Response:
    _method(request, "POST")
    trigger = app.rerun(request.groups[0])
    assert trigger.job is not None
    return Response(200, {"study_uid": trigger.study_uid, "job": job_json(trigger.job)})


def clinical(app: HepaticaOrthanc, request: Request) -> Response:
    _method(request, "GET", "POST")
    uid = app.study_uid(request.groups[0])
    if not uid:
        raise HttpError(404, f"no study {request.groups[0]}")
    if request.method == "POST":
        try:
            document = json.loads(request.body or b"null")
        except ValueError as exc:
            raise HttpError(400, f"the body is not JSON: {exc}") from exc
        try:
            app.store.set_clinical(uid, validate_clinical(document))
        except ValueError as exc:
            raise HttpError(400, str(exc)) from exc
    return Response(200, {"study_uid": uid, "variables": app.store.clinical(uid)})


ROUTES: tuple[tuple[str, Handler], ...] = (
    ("/hepatica/health", health),
    ("/hepatica/jobs", jobs),
    ("/hepatica/jobs/([0-9]+)", job),
    ("/hepatica/studies/([^/]+)/rerun", rerun),
    ("/hepatica/studies/([^/]+)/clinical", clinical),
)


def dispatch(app: HepaticaOrthanc, handler: Handler, request: Request) -> Response:
    """Run a handler; every failure becomes a JSON error with a status that says whose it is."""
    try:
        return handler(app, request)
    except HttpError as exc:
        body = {"error": str(exc), **({"allow": exc.allow} if exc.allow else {})}
        return Response(exc.status, body)
    except InvalidUidError as exc:
        return Response(400, {"error": str(exc)})
    except NoModelError as exc:
        return Response(503, {"error": str(exc)})
    except LookupError as exc:
        return Response(404, {"error": str(exc)})
    except Exception as exc:
        log.exception("%s %s failed", request.method, handler.__name__)
        return Response(500, {"error": f"{type(exc).__name__}: {exc}"})


def match(path: str) -> tuple[Handler, tuple[str, ...]] | None:
    """The handler for a URI, the way Orthanc's regex routing finds it (tests use this)."""
    for pattern, handler in ROUTES:
        found = re.fullmatch(pattern, path)
        if found:
            return handler, found.groups()
    return None
