"""STOW-RS sender (DICOMweb, PS3.18 §10.5): result files back to an archive over HTTP(S).

The DICOMweb twin of ``sender.send_files``, with the same report and retry rules: one request
carries a batch (``multipart/related; type="application/dicom"``, each part one Part 10 file
as written); an unreachable server, a timeout, 408/429 or a 5xx answer is retried with
``backoff_s * 2**n`` waits, re-posting the batch; instances the server refuses in its answer
(Failed SOP Sequence, or HTTP 400 for a file sent alone) are reported, not retried;
401/403/404/405/413/415 mean the request itself is wrong and raise at once. Re-posting is
safe because result objects have deterministic SOP Instance UIDs: an archive replaces (or
keeps) the instance, never doubles it.
Standard library only (urllib), like the rest of the room.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom

from dicom_io.sender import SendError, SendReport

__all__ = ["Auth", "send_stow", "studies_endpoint"]

log = logging.getLogger(__name__)

Auth = tuple[str, str] | str | None
"""(user, password) for HTTP basic auth, a full Authorization header value
("Bearer ..."), or None."""

TIMEOUT_S = 120.0
MAX_REQUEST_BYTES = 64 * 1024 * 1024
_TRANSIENT = {408, 429, 500, 502, 503, 504}
_PERMANENT_HINTS = {
    401: "check the credentials",
    403: "the credentials may not store instances",
    404: "check the DICOMweb root URL (e.g. http://host:8042/dicom-web)",
    405: "the URL does not accept STOW-RS; check the DICOMweb root URL",
    413: "the request is too large for the server; lower max_request_bytes",
    415: "the server does not accept application/dicom parts",
}
# DICOM JSON tags of the STOW-RS response (PS3.18 Table 10.5.3-1)
_REFERENCED_SOP_SEQUENCE, _FAILED_SOP_SEQUENCE = "00081199", "00081198"
_SOP_INSTANCE_UID, _FAILURE_REASON = "00081155", "00081197"


@dataclass(frozen=True)
class _Item:
    path: Path
    sop_instance_uid: str
    size: int


@dataclass
class _Tally:
    """Outcome per file across batches, reported to ``progress`` as it grows."""

    total: int
    progress: Callable[[int, int], None] | None
    sent: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)

    def done(self, path: Path, error: str | None) -> None:
        if error is None:
            self.sent += 1
        else:
            self.failed.append((path, error))
        if self.progress is not None:
            self.progress(self.sent + len(self.failed), self.total)


class _Transient(Exception):
    """This attempt failed in a way a later one may not."""


class _Rejected(Exception):
    """HTTP 400 for the whole request: one bad instance is enough for some servers
    (Orthanc's DICOMweb plugin refuses the batch when a file lacks a mandatory tag)."""


def studies_endpoint(url: str) -> str:
    """The STOW-RS target: ``url`` if it names ``/studies``, else ``url`` + ``/studies``."""
    base = url.rstrip("/")
    return base if base.endswith("/studies") else f"{base}/studies"


def send_stow(
    paths: Sequence[Path],
    url: str,
    *,
    retries: int = 3,
    backoff_s: float = 1.0,
    auth: Auth = None,
    progress: Callable[[int, int], None] | None = None,
    timeout_s: float = TIMEOUT_S,
    max_request_bytes: int = MAX_REQUEST_BYTES,
    ssl_context: ssl.SSLContext | None = None,
) -> SendReport:
    """POST ``paths`` to the DICOMweb server at ``url`` (its root, e.g. ``…/dicom-web``).

    Batches hold at most ``max_request_bytes`` (a larger file goes alone). Each batch gets
    ``retries`` extra attempts after the first; raises :class:`SendError` when they are spent
    or the server rejects the request itself. Unreadable files and instances the server
    refuses are listed in ``SendReport.failed``.
    """
    tally = _Tally(total=len(paths), progress=progress)
    items: list[_Item] = []
    for path in paths:
        try:
            items.append(_read_item(Path(path)))
        except Exception as exc:  # unreadable file: report it, keep sending the rest
            tally.done(Path(path), f"unreadable DICOM file ({type(exc).__name__})")
    endpoint = studies_endpoint(url)
    for batch in _batches(items, max_request_bytes):
        _send_batch(batch, endpoint, tally, retries=retries, backoff_s=backoff_s, auth=auth,
                    timeout_s=timeout_s, ssl_context=ssl_context)
    return SendReport(sent=tally.sent, failed=tally.failed)


def _read_item(path: Path) -> _Item:
    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
    return _Item(path, str(ds.SOPInstanceUID), path.stat().st_size)


def _batches(items: Sequence[_Item], max_bytes: int) -> Iterator[list[_Item]]:
    batch: list[_Item] = []
    size = 0
    for item in items:
        if batch and size + item.size > max_bytes:
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += item.size
    if batch:
        yield batch


def _send_batch(batch: list[_Item], endpoint: str, tally: _Tally, *, retries: int,
                backoff_s: float, auth: Auth, timeout_s: float,
                ssl_context: ssl.SSLContext | None) -> None:
    """POST one batch until the server answers for it; record each instance's outcome.

    A batch the server rejects as a whole (HTTP 400) is sent again one file per request, so
    that only the file at fault is reported as refused, as a C-STORE peer would.
    """
    body, content_type = _multipart([item.path.read_bytes() for item in batch])
    attempt = 0
    while True:
        try:
            answer = _post(endpoint, body, content_type, auth, timeout_s, ssl_context)
            break
        except _Rejected as exc:
            if len(batch) > 1:
                for item in batch:
                    _send_batch([item], endpoint, tally, retries=retries, backoff_s=backoff_s,
                                auth=auth, timeout_s=timeout_s, ssl_context=ssl_context)
            else:
                tally.done(batch[0].path, f"server refused the instance ({exc})")
            return
        except _Transient as exc:
            if attempt >= retries:
                raise SendError(
                    f"could not send {len(batch)} of {tally.total} files to {endpoint} after "
                    f"{attempt + 1} attempts: {exc}. Check that the server is running."
                ) from exc
            delay = backoff_s * (2**attempt)
            log.warning("STOW-RS to %s failed (%s); retry in %.1f s", endpoint, exc, delay)
            time.sleep(delay)
            attempt += 1
    stored, refused = _outcomes(answer)
    for item in batch:
        if item.sop_instance_uid in refused:
            tally.done(item.path, refused[item.sop_instance_uid])
        elif item.sop_instance_uid in stored or answer is None:
            tally.done(item.path, None)  # None: 200 without a body, the server took all
        else:
            tally.done(item.path, "the server did not acknowledge this instance")


def _multipart(parts: Sequence[bytes]) -> tuple[bytes, str]:
    """``multipart/related`` body of application/dicom parts (RFC 2387, PS3.18 §8.6.1)."""
    boundary = uuid.uuid4().hex
    while any(boundary.encode() in part for part in parts):
        boundary = uuid.uuid4().hex
    chunks: list[bytes] = []
    for part in parts:
        chunks += [f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(),
                   part, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return b"".join(chunks), content_type


def _post(endpoint: str, body: bytes, content_type: str, auth: Auth, timeout_s: float,
          ssl_context: ssl.SSLContext | None) -> dict[str, Any] | None:
    """One POST; the server's DICOM JSON answer (None if it sent none). Raises
    :class:`_Transient` for what a retry may fix, :class:`SendError` for the rest."""
    headers = {"Content-Type": content_type, "Accept": "application/dicom+json"}
    if auth is not None:
        headers["Authorization"] = _authorization(auth)
    request = urllib.request.Request(endpoint, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s, context=ssl_context) as reply:
            return _json(reply.read())
    except urllib.error.HTTPError as exc:
        status, payload = exc.code, exc.read()
        if status == 409:  # every instance refused: the answer says which and why
            return _json(payload) or {}
        if status in _TRANSIENT:
            raise _Transient(f"HTTP {status} {exc.reason}") from exc
        if status == 400:
            raise _Rejected(f"HTTP 400 {exc.reason}") from exc
        hint = _PERMANENT_HINTS.get(status, "the server refused the request")
        raise SendError(f"{endpoint} answered HTTP {status} {exc.reason}: {hint}") from exc
    except (urllib.error.URLError, OSError) as exc:  # refused, reset, DNS, timeout
        reason = getattr(exc, "reason", exc)
        raise _Transient(f"server unreachable ({reason})") from exc


def _authorization(auth: str | tuple[str, str]) -> str:
    if isinstance(auth, str):
        return auth
    user, password = auth
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _json(payload: bytes) -> dict[str, Any] | None:
    """The DICOM JSON dataset of a STOW-RS answer, None when there is none."""
    if not payload.strip():
        return None
    try:
        parsed = json.loads(payload)
    except ValueError:
        return None
    if isinstance(parsed, list):  # some servers wrap the one dataset in an array
        parsed = parsed[0] if parsed else {}
    return parsed if isinstance(parsed, dict) else None


def _outcomes(answer: dict[str, Any] | None) -> tuple[set[str], dict[str, str]]:
    """SOP Instance UIDs stored, and those refused with the reason the server gave."""
    if answer is None:
        return set(), {}
    stored = {uid for item in _items(answer, _REFERENCED_SOP_SEQUENCE)
              if (uid := _value(item, _SOP_INSTANCE_UID))}
    refused: dict[str, str] = {}
    for item in _items(answer, _FAILED_SOP_SEQUENCE):
        uid = _value(item, _SOP_INSTANCE_UID)
        if uid:
            reason = _value(item, _FAILURE_REASON)
            code = f"0x{int(reason):04X}" if reason not in (None, "") else "unknown"
            refused[str(uid)] = f"server refused the instance (failure reason {code})"
    return stored, refused


def _items(dataset: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    element = dataset.get(tag) or {}
    return [item for item in element.get("Value", []) if isinstance(item, dict)]


def _value(dataset: dict[str, Any], tag: str) -> Any:
    values = (dataset.get(tag) or {}).get("Value") or [None]
    return values[0]
