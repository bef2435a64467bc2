"""Storage SCP: receive CT/MR instances by C-STORE into the durable spool.

The handler only decodes enough to file the instance, writes it durably and hands a
:class:`StoredInstance` to ``on_stored`` (which enqueues); it never runs inference, so the
sender is never kept waiting (PS3.4 Annex B). Every failure, expected or not, goes through
:func:`failure_for` and becomes a named status plus a logged reason; one bad instance never
affects the others of the association, and never stops the node.

Receiving at wire speed, durably (issue 13): every accepted socket has TCP_NODELAY (a small
C-STORE response must not wait for the peer's delayed ACK); an instance is written without
its own flush and answered after the spool's group commit (one ``syncfs`` shared by every
association waiting at that moment, covering the job database's write too); each instance
is logged at DEBUG, and each series of an association once at INFO when it closes.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any, cast

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE, PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION, evt
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
    "nodelay_on_connect",
    "set_nodelay",
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
        set_nodelay(client)
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
        ds = event.dataset  # no file meta: the syntax is the context's (see _part10)
        _ = ds.get("StudyInstanceUID"), ds.get("SOPClassUID")  # force lazy parsing
    except Exception as exc:  # any decoder failure is the sender's data, not our bug
        raise StoreRejected(
            Status.CANNOT_DECODE_DATA_SET, f"cannot decode data set ({type(exc).__name__})"
        ) from exc
    return ds


_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
MAX_IMAGE_DIMENSION = 16384  # rows or columns; far above any CT/MR/SC a liver study holds
MAX_PIXEL_BYTES = 4 << 30  # declared uncompressed size; what 32-bit element lengths allow


def _check_pixel_data(ds: Dataset, sop_class: str, syntax: UID) -> None:
    """Refuse an image whose pixel data cannot be what its header promises.

    Nothing is decoded here (memory stays bounded whatever the header claims): every element
    is read and every sequence parsed, so a truncated data set fails now; an image class
    without pixel data, absurd dimensions (a decoder would try to allocate them later), or
    uncompressed pixel data shorter than Rows x Columns x frames promise are refused before
    anything is stored.
    """
    try:
        _parse_sequences(ds)  # truncation raises here
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
        compressed = syntax.is_compressed and keyword == "PixelData"
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


def _parse_sequences(ds: Dataset) -> None:
    """Parse every sequence, nested ones included (a truncated item raises); plain elements
    were read whole when the data set was, and converting their values would find nothing
    more, at a cost that was most of an instance's handling time."""
    for element in ds.elements():
        vr = element.VR or _dictionary_vr(element.tag)
        if vr == "SQ":
            for item in ds[element.tag].value or ():
                for _element in item.iterall():
                    pass


def _dictionary_vr(tag: int) -> str:
    try:
        return str(dictionary_VR(tag))
    except KeyError:  # private or unknown: read as bytes, nothing nested to parse
        return "UN"


_PREAMBLE = b"\x00" * 128 + b"DICM"


def _part10(event: Event) -> bytes:
    """The instance as a Part 10 file: ``event.encoded_dataset(include_meta=True)``, with the
    same file meta encoded here directly (pydicom's writer took milliseconds per instance).

    Falls back to pynetdicom's encoding for any value that is not plain ASCII.
    """
    request = cast(C_STORE, event.request)
    stream = cast(BytesIO, request.DataSet).getvalue()
    values = (str(request.AffectedSOPClassUID or ""), str(request.AffectedSOPInstanceUID or ""),
              str(event.context.transfer_syntax or ""))
    if not all(v and v.isascii() and v.isprintable() and len(v) <= 64 for v in values):
        return event.encoded_dataset(include_meta=True)
    return b"".join((_PREAMBLE, file_meta_bytes(*values), stream))


def file_meta_bytes(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> bytes:
    """File Meta Information as pynetdicom's ``create_file_meta`` + ``encode_file_meta`` give
    it (explicit VR little endian, group length first)."""
    body = b"".join((
        struct.pack("<HH2sHI", 2, 0x0001, b"OB", 0, 2) + b"\x00\x01",
        _meta_text(0x0002, "UI", sop_class_uid),
        _meta_text(0x0003, "UI", sop_instance_uid),
        _meta_text(0x0010, "UI", transfer_syntax),
        _meta_text(0x0012, "UI", str(PYNETDICOM_IMPLEMENTATION_UID)),
        _meta_text(0x0013, "SH", PYNETDICOM_IMPLEMENTATION_VERSION),
    ))
    return struct.pack("<HH2sHI", 2, 0x0000, b"UL", 4, len(body)) + body


def _meta_text(element: int, vr: str, value: str) -> bytes:
    data = value.encode("ascii")
    if len(data) % 2:
        data += b"\x00" if vr == "UI" else b" "
    return struct.pack("<HH2sH", 2, element, vr.encode(), len(data)) + data


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
        self._received: dict[object, _Received] = {}
        self._received_lock = threading.Lock()

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
            (evt.EVT_CONN_CLOSE, self._handle_close),
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
        """C-STORE entry point: every exception ends here as a failure status.

        Success is answered only after the group commit: the instance's bytes, and whatever
        ``on_stored`` wrote (the job record), are then on stable storage.
        """
        try:
            stored = self._receive(event)
            if stored.source_image or self.notify_all:
                self.on_stored(stored)
            self.spool.commit()
        except Exception as exc:  # the node must answer, whatever happened
            return self._refuse(event, failure_for(exc), exc)
        self._tally(event, stored)
        return _status(Status.SUCCESS)

    def _tally(self, event: Event, stored: StoredInstance) -> None:
        """Count the instance for its series' summary; the first of a series in this
        association is announced at INFO (patient hashed, as every log line has it)."""
        key = getattr(event, "assoc", None)
        with self._received_lock:
            received = self._received.get(key)
            if received is None:
                received = self._received[key] = _Received(_caller(event), time.monotonic())
            first = received.add(stored)
        if first:
            log.info("receiving series=%s study=%s patient=%s from=%s", stored.series_uid,
                     stored.study_uid, hash_identifier(_patient_id(event)), received.caller)

    def _handle_close(self, event: Event) -> None:
        """One INFO line per series the closing association brought (instances, new, rate)."""
        with self._received_lock:
            received = self._received.pop(getattr(event, "assoc", None), None)
        if received is not None:
            received.log()

    def _receive(self, event: Event) -> StoredInstance:
        ds = _decode(event)
        _check_pixel_data(ds, str(event.context.abstract_syntax),
                          UID(str(event.context.transfer_syntax)))
        identity = _check_identity(
            ds,
            context_sop_class=str(event.context.abstract_syntax),
            requested_sop_uid=_requested_sop_uid(event),
        )
        data = _part10(event)
        source = (is_volume_image(identity.sop_class_uid)
                  and str(ds.get("Manufacturer", "") or "") != OWN_MANUFACTURER)
        try:
            stored = self.spool.store_encoded(data, identity, source_image=source,
                                              durable=False)
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
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
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


@dataclass
class _Received:
    """What one association stored, per (study, series): for its INFO summary."""

    caller: str
    started: float
    series: dict[tuple[str, str], list[int]] = field(default_factory=dict)

    def add(self, stored: StoredInstance) -> bool:
        """Count one instance; True when it is the first of its series here."""
        key = (stored.study_uid, stored.series_uid)
        first = key not in self.series
        counts = self.series.setdefault(key, [0, 0])
        counts[0 if stored.new else 1] += 1
        return first

    def log(self) -> None:
        seconds = max(time.monotonic() - self.started, 1e-6)
        total = sum(new + duplicate for new, duplicate in self.series.values())
        for (study, series), (new, duplicate) in self.series.items():
            log.info("received series=%s study=%s from=%s: %d instance(s), %d new, "
                     "%d duplicate", series, study, self.caller, new + duplicate, new,
                     duplicate)
        log.info("association from %s closed: %d instance(s) in %d series, %.0f/s",
                 self.caller, total, len(self.series), total / seconds)


def set_nodelay(sock: socket.socket) -> None:
    """TCP_NODELAY: a small PDU (a C-STORE response) leaves at once instead of waiting for
    the peer's delayed ACK of the previous segment (Nagle), ~40 ms per instance otherwise."""
    with contextlib.suppress(OSError):  # not a TCP socket (a test double): nothing to do
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def nodelay_on_connect(event: Event) -> None:
    """``evt.EVT_CONN_OPEN`` handler for our SCUs (``ae.associate(..., evt_handlers=
    [(evt.EVT_CONN_OPEN, nodelay_on_connect)])``): the same for sockets we open."""
    sock = getattr(getattr(getattr(event.assoc, "dul", None), "socket", None), "socket", None)
    if isinstance(sock, socket.socket):
        set_nodelay(sock)


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


def _patient_id(event: Event) -> object:
    """The Patient ID of the event's data set (already decoded), for a hashed log value."""
    try:
        return event.dataset.get("PatientID")
    except Exception:  # the data set decoded once already; this is only for a log line
        return None


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
