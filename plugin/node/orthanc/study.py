"""Read what the filters need about one study from Orthanc's REST API.

The same functions serve the plugin (through ``orthanc.RestApiGet``, inside Orthanc) and the
worker (over HTTP): both hand in an object with ``get(path) -> bytes`` that raises
:class:`LookupError` for a resource Orthanc does not have.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any, Protocol

from plugin.node.orthanc.filters import SeriesFacts, StudyFacts, TriggerRules, is_own_series

__all__ = [
    "OrthancPost",
    "OrthancRead",
    "gather_facts",
    "get_json",
    "is_orthanc_id",
    "lookup_study",
    "series_facts",
]

_ORTHANC_ID = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{8}){4}$")


class OrthancRead(Protocol):
    def get(self, path: str) -> bytes:
        """The body of ``GET path``; LookupError when Orthanc answers 404."""
        ...


class OrthancPost(OrthancRead, Protocol):
    def post(self, path: str, body: bytes, content_type: str = "text/plain") -> bytes:
        """The body of ``POST path``; LookupError when Orthanc answers 404."""
        ...


def is_orthanc_id(text: str) -> bool:
    """Orthanc's resource IDs are five dash-separated groups of 8 hex digits (SHA-1)."""
    return bool(_ORTHANC_ID.match(text))


def get_json(api: OrthancRead, path: str) -> Any:
    return json.loads(api.get(path))


def _text(api: OrthancRead, path: str) -> str | None:
    try:
        return api.get(path).decode("utf-8", "replace")
    except LookupError:
        return None


def _int(value: object) -> int | None:
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def series_facts(series: dict[str, Any]) -> SeriesFacts:
    """One entry of ``/studies/{id}/series`` (main tags and instance IDs)."""
    tags = series.get("MainDicomTags", {})
    return SeriesFacts(
        orthanc_id=str(series["ID"]),
        modality=str(tags.get("Modality", "")),
        body_part=str(tags.get("BodyPartExamined", "")),
        description=str(tags.get("SeriesDescription", "")),
        manufacturer=str(tags.get("Manufacturer", "")),
        series_number=_int(tags.get("SeriesNumber", "")),
        instance_ids=tuple(str(i) for i in series.get("Instances", ())),
    )


def gather_facts(api: OrthancRead, study_id: str, rules: TriggerRules) -> StudyFacts:
    """Two requests per study, plus one per source series when callers are filtered."""
    study = get_json(api, f"/studies/{study_id}")
    tags = study.get("MainDicomTags", {})
    series = [series_facts(s) for s in get_json(api, f"/studies/{study_id}/series")]
    if rules.needs_remote_aet:
        series = [_with_caller(api, s, rules) for s in series]
    metadata: dict[str, str] = {}
    if rules.required_metadata:
        value = _text(api, f"/studies/{study_id}/metadata/{rules.required_metadata}")
        if value is not None:
            metadata[rules.required_metadata] = value
    return StudyFacts(
        orthanc_id=study_id,
        study_uid=str(tags.get("StudyInstanceUID", "")),
        description=str(tags.get("StudyDescription", "")),
        series=tuple(series),
        labels=tuple(str(label) for label in study.get("Labels", ())),
        metadata=metadata,
    )


def _with_caller(api: OrthancRead, series: SeriesFacts, rules: TriggerRules) -> SeriesFacts:
    if is_own_series(series, rules) or not series.instance_ids:
        return series
    aet = _text(api, f"/instances/{series.instance_ids[0]}/metadata/RemoteAET")
    return replace(series, remote_aet=aet)


def lookup_study(api: OrthancPost, study_uid: str) -> str | None:
    """Orthanc's ID of the study with this StudyInstanceUID, or None."""
    for match in json.loads(api.post("/tools/lookup", study_uid.encode())):
        if match.get("Type") == "Study":
            return str(match["ID"])
    return None

