"""Storage SCP: receive CT/MR instances by C-STORE into the durable spool.

The handler only decodes enough to file the instance, writes it durably and hands a
:class:`StoredInstance` to ``on_stored`` (which enqueues); it never runs inference, so the
sender is never kept waiting (PS3.4 Annex B). Every failure, expected or not, goes through
:func:`failure_for` and becomes a named status plus a logged reason; one bad instance never
affects the others of the association, and never stops the node.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from dicom_io.log_redaction import redact_library_warnings
from dicom_io.privacy import hash_identifier
from dicom_io.sop_classes import (
    ACCEPTED_TRANSFER_SYNTAXES,
    IMAGE_CLASSES,
    STORAGE_CLASSES,
    is_volume_image,
)
from dicom_io.spool import (
    DEFAULT_QUARANTINE_MAX_BYTES,
    DuplicateInstanceError,
    InstanceIdentity,
    InvalidInstanceError,
    Spool,
    StoredInstance,
    identify,
)
from dicom_io.status import Status
from dicom_io.tls import TlsSettings, server_context

__all__ = [
    "ACCEPTED_TRANSFER_SYNTAXES",
    "STORAGE_SOP_CLASSES",
    "ListenerSettings",
    "StorageSCP",
    "StoreRejected",
    "failure_for",
]

log = logging.getLogger(__name__)

STORAGE_SOP_CLASSES: tuple[str, ...] = STORAGE_CLASSES
OWN_MANUFACTURER = "Hepatica"
_ERROR_COMMENT_MAX = 64  # (0000,0902) Error Comment is LO


@dataclass(frozen=True)
class ListenerSettings:
    """Where and as whom the SCP listens, its limits, and its TLS identity.

    ``allowed_callers`` empty means any calling AE title. ``max_associations`` counts open
    connections (pynetdicom counts a connection before it associates), so idle sockets are
    closed after ``acse_timeout_s`` without an association request and ``idle_timeout_s``
    without traffic. ``tls`` set means the port speaks only DICOM TLS.
    """

    ae_title: str
    host: str
    port: int
    allowed_callers: tuple[str, ...] = ()
    max_pdu: int = 0
    max_associations: int = 32
    acse_timeout_s: float = 30.0
    idle_timeout_s: float = 30.0
    dimse_timeout_s: float = 60.0
    quarantine_max_bytes: int = DEFAULT_QUARANTINE_MAX_BYTES
    tls: TlsSettings | None = None

    def __post_init__(self) -> None:
        if not 0 < len(self.ae_title.strip()) <= 16:
            raise ValueError(f"AE title must be 1-16 characters, got {self.ae_title!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0-65535 (0 = any free port), got {self.port}")
        if self.max_pdu < 0:
            raise ValueError("max_pdu must be >= 0 (0 = unlimited)")
        if self.max_associations < 1:
            raise ValueError("max_associations must be at least 1")
        for name in ("acse_timeout_s", "idle_timeout_s", "dimse_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 seconds")
        if self.quarantine_max_bytes < 0:
            raise ValueError("quarantine_max_bytes must be >= 0")


class _GuardedServer(ThreadedAssociationServer):
    """Association server whose accept loop never waits on a client.

    pynetdicom wraps a TLS socket (handshake included) in the accepting thread, so one
    silent client would stall every other caller; here the handshake is deferred to the
    association's own thread (OpenSSL completes it on the first read) and every accepted
    socket gets a timeout, so a peer that stops mid-PDU frees its thread.
    """

    socket_timeout_s: float = 30.0

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        assert self.socket is not None
        client, address = self.socket.accept()
        client.settimeout(self.socket_timeout_s)
        if self.ssl_context is not None:
            client = self.ssl_context.wrap_socket(
                client, server_side=True, do_handshake_on_connect=False)
        return client, address


class StoreRejected(Exception):
    """An instance refused for a known reason, with the status to answer."""

    def __init__(self, status: Status, reason: str, *, quarantine: bool = True) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.quarantine = quarantine


def failure_for(exc: BaseException) -> StoreRejected:
    """The single place that turns any exception into a status and a reason.

    Unexpected errors keep the bytes in quarantine so nothing a sender was told failed
    is lost without a trace; disk errors map to Out of Resources so the sender retries.
    """
    if isinstance(exc, StoreRejected):
        return exc
    if isinstance(exc, InvalidInstanceError):
        return StoreRejected(Status.CANNOT_UNDERSTAND, str(exc))
    if isinstance(exc, OSError):
        detail = exc.strerror or type(exc).__name__
        return StoreRejected(Status.OUT_OF_RESOURCES, f"storage error: {detail}", quarantine=False)
    return StoreRejected(Status.HANDLER_EXCEPTION, f"internal error: {type(exc).__name__}")


def _status(status: Status, comment: str = "") -> Dataset:
    """A C-STORE response status dataset; the comment is what the sender's log shows."""
    ds = Dataset()
    ds.Status = int(status)
    if comment:
        ds.ErrorComment = comment[:_ERROR_COMMENT_MAX]
    return ds


def _decode(event: Event) -> Dataset:
    """Decode the received data set; pydicom raises many types, all mean 'undecodable'."""
    try:
        ds = event.dataset
        ds.file_meta = event.file_meta
        _ = ds.get("StudyInstanceUID"), ds.get("SOPClassUID")  # force lazy parsing
    except Exception as exc:  # any decoder failure is the sender's data, not our bug
        raise StoreRejected(
            Status.CANNOT_DECODE_DATA_SET, f"cannot decode data set ({type(exc).__name__})"
        ) from exc
    return ds


_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
MAX_IMAGE_DIMENSION = 16384  # rows or columns; far above any CT/MR/SC a liver study holds
MAX_PIXEL_BYTES = 4 << 30  # declared uncompressed size; what 32-bit element lengths allow


def _check_pixel_data(ds: Dataset, sop_class: str) -> None:
    """Refuse an image whose pixel data cannot be what its header promises.

    Nothing is decoded here (memory stays bounded whatever the header claims): every element
    is parsed, so a truncated data set fails now; an image class without pixel data, absurd
    dimensions (a decoder would try to allocate them later), or uncompressed pixel data
    shorter than Rows x Columns x frames promise are refused before anything is stored.
    """
    try:
        for _element in ds.iterall():  # parse every element: truncation raises here
            pass
        keyword = next((k for k in _PIXEL_KEYWORDS if k in ds), None)
        if keyword is None:
            if sop_class in IMAGE_CLASSES:
                raise StoreRejected(Status.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                                    "image without pixel data")
            return
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.BitsAllocated)
        compressed = ds.file_meta.TransferSyntaxUID.is_compressed and keyword == "PixelData"
        actual = 0 if compressed else len(ds[keyword].value)
    except StoreRejected:
        raise
    except Exception as exc:
        raise StoreRejected(
            Status.CANNOT_DECODE_DATA_SET, f"cannot decode data set ({type(exc).__name__})"
        ) from exc
    expected = (rows * cols * samples * frames * bits + 7) // 8
    if not (0 < rows <= MAX_IMAGE_DIMENSION and 0 < cols <= MAX_IMAGE_DIMENSION
            and frames > 0 and 0 < samples <= 4 and bits in (1, 8, 16, 32, 64)
            and expected <= MAX_PIXEL_BYTES):
        raise StoreRejected(Status.CANNOT_UNDERSTAND,
                            f"implausible image: {rows} x {cols} x {frames} frames, "
                            f"{samples} samples of {bits} bits")
    if not compressed and actual < expected:
        raise StoreRejected(Status.CANNOT_DECODE_DATA_SET,
                            f"pixel data truncated: {actual} of {expected} bytes")


def _check_identity(
    ds: Dataset, context_sop_class: str, requested_sop_uid: str
) -> InstanceIdentity:
    """Validate the UIDs against each other and against the negotiated SOP class."""
    identity = identify(ds)
    declared = str(ds.get("SOPClassUID", "")).strip("\0 ")
    if declared != context_sop_class:
        raise StoreRejected(
            Status.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
            "SOPClassUID in the data set does not match the presentation context",
        )
    if requested_sop_uid and identity.sop_uid != requested_sop_uid:
        raise StoreRejected(
            Status.CANNOT_UNDERSTAND, "SOPInstanceUID differs from the request's"
        )
    return identity


class StorageSCP:
    """A pynetdicom storage SCP writing into a :class:`Spool`.

    ``on_stored`` runs in the association's thread, after the durable write and before the
    response is sent; it may be called concurrently from several associations and again
    for a resent instance (``new`` is then False). By default it is called only for
    instances that may feed the pipeline (``StoredInstance.source_image``): a SEG, SR, KO or
    our own result routed back is kept with its study but must not re-open the study's
    job. ``notify_all=True`` reports every stored instance.
    """

    def __init__(
        self,
        settings: ListenerSettings,
        spool: Spool,
        on_stored: Callable[[StoredInstance], None],
        *,
        notify_all: bool = False,
    ) -> None:
        self.settings = settings
        self.spool = spool
        self.on_stored = on_stored
        self.notify_all = notify_all
        self._server: ThreadedAssociationServer | None = None

    def __enter__(self) -> StorageSCP:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port actually bound (useful when the settings asked for port 0)."""
        if self._server is None:
            raise RuntimeError("the SCP is not running")
        return int(self._server.server_address[1])

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        """Start listening in background threads; returns at once."""
        if self._server is not None:
            raise RuntimeError("the SCP is already running")
        redact_library_warnings()
        handlers: list[Any] = [
            (evt.EVT_C_ECHO, self._handle_echo),
            (evt.EVT_C_STORE, self._handle_store),
        ]
        context = server_context(self.settings.tls) if self.settings.tls else None
        self._server = _serve(self._build_ae(), (self.settings.host, self.settings.port),
                              handlers, context, self.settings.idle_timeout_s)
        log.info("storage SCP %s listening on %s:%d%s", self.settings.ae_title,
                 self.settings.host, self.port, " (TLS)" if context else "")

    def stop(self) -> None:
        """Stop accepting and close the listening socket (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _build_ae(self) -> AE:
        ae = AE(ae_title=self.settings.ae_title)
        ae.acse_timeout = self.settings.acse_timeout_s
        ae.dimse_timeout = self.settings.dimse_timeout_s
        ae.network_timeout = self.settings.idle_timeout_s
        ae.maximum_associations = self.settings.max_associations
        ae.maximum_pdu_size = self.settings.max_pdu
        ae.require_calling_aet = list(self.settings.allowed_callers)
        ae.require_called_aet = True
        ae.add_supported_context(Verification)
        for sop_class in STORAGE_SOP_CLASSES:
            ae.add_supported_context(sop_class, list(ACCEPTED_TRANSFER_SYNTAXES))
        return ae

    def _handle_echo(self, event: Event) -> int:
        return int(Status.SUCCESS)

    def _handle_store(self, event: Event) -> Dataset:
        """C-STORE entry point: every exception ends here as a failure status."""
        try:
            stored = self._receive(event)
            if stored.source_image or self.notify_all:
                self.on_stored(stored)
        except Exception as exc:  # the node must answer, whatever happened
            return self._refuse(event, failure_for(exc), exc)
        return _status(Status.SUCCESS)

    def _receive(self, event: Event) -> StoredInstance:
        ds = _decode(event)
        _check_pixel_data(ds, str(event.context.abstract_syntax))
        identity = _check_identity(
            ds,
            context_sop_class=str(event.context.abstract_syntax),
            requested_sop_uid=_requested_sop_uid(event),
        )
        data = event.encoded_dataset(include_meta=True)
        source = (is_volume_image(identity.sop_class_uid)
                  and str(ds.get("Manufacturer", "") or "") != OWN_MANUFACTURER)
        try:
            stored = self.spool.store_encoded(data, identity, source_image=source)
        except DuplicateInstanceError as dup:
            if not dup.same_place:
                raise StoreRejected(Status.DUPLICATE_SOP_INSTANCE,
                                    "SOPInstanceUID already stored in another series or study"
                                    ) from dup
            # Same study and series: by DICOM it is the same instance. The first durable
            # copy stays (a job may be reading it); the newcomer is kept for inspection.
            log.warning("sop=%s resent with different content; first copy kept, newcomer "
                        "quarantined", identity.sop_uid)
            self._quarantine_bytes(data, f"sop={identity.sop_uid} duplicate: same SOP "
                                         "Instance UID with different content; first copy kept")
            stored = dup.existing
        log.info(
            "stored sop=%s series=%s study=%s patient=%s new=%s from=%s",
            stored.sop_uid, stored.series_uid, stored.study_uid,
            hash_identifier(ds.get("PatientID")), stored.new, _caller(event),
        )
        return stored

    def _refuse(self, event: Event, rejection: StoreRejected, exc: BaseException) -> Dataset:
        """Log, quarantine if useful, and build the failure response."""
        sop = _safe_uid_text(_requested_sop_uid(event)) or "?"
        log.warning(
            "refused C-STORE sop=%s from=%s: 0x%04X %s",
            sop, _caller(event), int(rejection.status), rejection.reason,
            exc_info=rejection.status == Status.HANDLER_EXCEPTION and exc is not rejection,
        )
        if rejection.quarantine:
            self._quarantine(event, f"sop={sop} status=0x{int(rejection.status):04X} "
                                    f"{rejection.reason}")
        return _status(rejection.status, rejection.reason)

    def _quarantine(self, event: Event, reason: str) -> None:
        try:
            data = event.encoded_dataset(include_meta=True)
        except Exception:  # the request carried no usable data set at all
            log.warning("refused instance had no data set to quarantine")
            return
        self._quarantine_bytes(data, reason)

    def _quarantine_bytes(self, data: bytes, reason: str) -> None:
        try:
            path = self.spool.quarantine(data, reason,
                                         max_bytes=self.settings.quarantine_max_bytes)
        except Exception:  # quarantine is best effort; the failure status still goes out
            log.exception("could not quarantine refused instance")
            return
        if path is not None:
            log.info("quarantined as %s", path.name)


def _serve(ae: AE, address: tuple[str, int], handlers: list[Any],
           context: ssl.SSLContext | None, socket_timeout_s: float) -> ThreadedAssociationServer:
    """Start ``ae`` as a non-blocking :class:`_GuardedServer`."""
    server = cast(_GuardedServer, ae.make_server(
        address, ssl_context=context, evt_handlers=handlers, server_class=_GuardedServer))
    server.socket_timeout_s = socket_timeout_s
    thread = threading.Thread(target=server.serve_forever, name="hepatica-scp", daemon=True)
    thread.start()
    ae._servers.append(server)  # so AE.shutdown() finds it, as start_server would
    return server


def _safe_uid_text(value: str) -> str:
    """A UID for a log line: printable ASCII only, bounded (it may be hostile)."""
    return "".join(c if 32 < ord(c) < 127 else "?" for c in value[:80])


def _requested_sop_uid(event: Event) -> str:
    """Affected SOP Instance UID of the C-STORE request ('' when absent)."""
    request = event.request
    if not isinstance(request, C_STORE):
        return ""
    return str(request.AffectedSOPInstanceUID or "")


def _caller(event: Event) -> str:
    """Calling AE title for logs."""
    try:
        return str(event.assoc.requestor.ae_title)
    except AttributeError:
        return "?"
