"""C-STORE SCU: send result files back to the archive, surviving a peer that is briefly down.

One association carries the whole batch (PS3.7 / PS3.8 negotiation is the slow part on a
real PACS). Presentation contexts are proposed from what the files actually are: one per
SOP class offering the uncompressed syntaxes (pynetdicom converts between them), plus one
per compressed syntax present, since compressed pixels cannot be converted on the fly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context, evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext

from dicom_io.listener import nodelay_on_connect
from dicom_io.status import is_failure
from dicom_io.tls import TlsSettings, client_context

__all__ = ["Peer", "SendError", "SendReport", "send_files"]

log = logging.getLogger(__name__)

ACSE_TIMEOUT_S = 30.0
DIMSE_TIMEOUT_S = 120.0
NETWORK_TIMEOUT_S = 120.0
CONNECT_TIMEOUT_S = 10.0
_MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: odd context IDs 1..255
_UNCOMPRESSED = (str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian))
_PERMANENT_REJECTION = 1


class SendError(RuntimeError):
    """The batch could not be delivered: the peer stayed unreachable or refused us."""


@dataclass(frozen=True)
class Peer:
    """A remote storage SCP."""

    ae_title: str
    host: str
    port: int
    calling_ae: str = "HEPATICA"
    tls: TlsSettings | None = None
    """Speak DICOM TLS to the peer: its certificate must chain to ``tls.ca``; ours (if
    set) is presented when the peer asks for a client certificate."""


@dataclass(frozen=True)
class SendReport:
    """How many instances the peer accepted, and which it refused and why."""

    sent: int
    failed: list[tuple[Path, str]] = field(default_factory=list)


@dataclass(frozen=True)
class _Item:
    path: Path
    sop_class: str
    transfer_syntax: str


@dataclass
class _Batch:
    """Mutable progress of one ``send_files`` call across association attempts."""

    total: int
    pending: list[_Item]
    sent: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)
    progress: Callable[[int, int], None] | None = None

    def done(self, item: _Item, error: str | None) -> None:
        if error is None:
            self.sent += 1
        else:
            self.failed.append((item.path, error))
        if self.progress is not None:
            self.progress(self.sent + len(self.failed), self.total)


def send_files(
    paths: Sequence[Path],
    peer: Peer,
    *,
    retries: int = 3,
    backoff_s: float = 1.0,
    progress: Callable[[int, int], None] | None = None,
) -> SendReport:
    """Send DICOM files to ``peer`` over one association, retrying the association.

    ``retries`` extra attempts follow the first, waiting ``backoff_s * 2**n`` between them,
    when the peer is unreachable, rejects transiently, or aborts mid-batch (the unsent rest
    goes again). Instances the peer answers with a failure status are reported in
    ``failed`` and not retried: the peer has said no. Raises :class:`SendError` when every
    attempt fails or the peer rejects the association permanently.
    """
    items, unreadable = _read_items(paths)
    batch = _Batch(total=len(paths), pending=items, progress=progress)
    for path, reason in unreadable:
        batch.done(_Item(path, "", ""), reason)
    contexts = _contexts_for(items)
    attempt = 0
    while batch.pending:
        reason = _attempt(batch, peer, contexts)
        if not batch.pending:
            break
        if attempt >= retries:
            raise SendError(
                f"could not send {len(batch.pending)} of {batch.total} files to "
                f"{peer.ae_title}@{peer.host}:{peer.port} after {attempt + 1} attempts: "
                f"{reason}. Check that the peer is running and knows AE {peer.calling_ae}."
            )
        delay = backoff_s * (2**attempt)
        log.warning("send to %s failed (%s); retry in %.1f s", peer.ae_title, reason, delay)
        time.sleep(delay)
        attempt += 1
    return SendReport(sent=batch.sent, failed=batch.failed)


def _read_items(paths: Sequence[Path]) -> tuple[list[_Item], list[tuple[Path, str]]]:
    """SOP class and transfer syntax of each file, from its header only."""
    items: list[_Item] = []
    unreadable: list[tuple[Path, str]] = []
    for path in paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
            items.append(_Item(Path(path), str(ds.SOPClassUID), _transfer_syntax(ds)))
        except Exception as exc:  # unreadable file: report it, keep sending the rest
            unreadable.append((Path(path), f"unreadable DICOM file ({type(exc).__name__})"))
    return items, unreadable


def _transfer_syntax(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    return str(syntax or ExplicitVRLittleEndian)


def _contexts_for(items: Sequence[_Item]) -> list[PresentationContext]:
    """Proposed contexts: uncompressed per SOP class, plus each compressed syntax used."""
    wanted: dict[tuple[str, tuple[str, ...]], None] = {}
    for item in items:
        if UID(item.transfer_syntax).is_compressed:
            wanted[(item.sop_class, (item.transfer_syntax,))] = None
        else:
            wanted[(item.sop_class, _UNCOMPRESSED)] = None
    if len(wanted) > _MAX_CONTEXTS:
        raise SendError(
            f"the batch needs {len(wanted)} presentation contexts, more than the "
            f"{_MAX_CONTEXTS} one association allows; send it in smaller batches"
        )
    return [build_context(sop, list(syntaxes)) for sop, syntaxes in wanted]


def _attempt(batch: _Batch, peer: Peer, contexts: list[PresentationContext]) -> str:
    """One association; sends what it can. Returns why it stopped early ('' if it did not)."""
    ae = AE(ae_title=peer.calling_ae)
    ae.acse_timeout = ACSE_TIMEOUT_S
    ae.dimse_timeout = DIMSE_TIMEOUT_S
    ae.network_timeout = NETWORK_TIMEOUT_S
    ae.connection_timeout = CONNECT_TIMEOUT_S
    ae.requested_contexts = contexts
    tls_args = (client_context(peer.tls), peer.host) if peer.tls else None
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title, tls_args=tls_args,
                         evt_handlers=[(evt.EVT_CONN_OPEN, nodelay_on_connect)])
    if not assoc.is_established:
        return _association_failure(assoc, peer)
    try:
        return _send_pending(assoc, batch)
    finally:
        if assoc.is_established:
            assoc.release()


def _association_failure(assoc: Association, peer: Peer) -> str:
    """Why no association: permanent rejections raise, everything else is retried."""
    if not assoc.is_rejected:
        return "peer unreachable or aborted the association"
    primitive = assoc.acceptor.primitive
    detail = f"{primitive.result_str}: {primitive.reason_str}" if primitive else "rejected"
    if primitive is not None and primitive.result == _PERMANENT_REJECTION:
        raise SendError(
            f"{peer.ae_title}@{peer.host}:{peer.port} rejected the association ({detail}); "
            f"check the called AE title and that the peer accepts calling AE {peer.calling_ae}"
        )
    return f"association rejected ({detail})"


def _send_pending(assoc: Association, batch: _Batch) -> str:
    """Send queued items in order; stop (leaving the rest pending) if the link drops."""
    accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
    while batch.pending:
        item = batch.pending[0]
        if item.sop_class not in accepted:
            batch.pending.pop(0)
            batch.done(item, f"peer accepted no presentation context for {item.sop_class}")
            continue
        if not assoc.is_established:
            return "association aborted"
        error = _store_one(assoc, item)
        if error == _LINK_LOST:
            return "no response: association aborted or timed out"
        batch.pending.pop(0)
        batch.done(item, error)
    return ""


_LINK_LOST = "link lost"


def _store_one(assoc: Association, item: _Item) -> str | None:
    """C-STORE one file: None on success or warning, else an error text."""
    try:
        rsp = assoc.send_c_store(item.path)
    except (ValueError, AttributeError) as exc:
        return f"cannot send: {exc}"
    except OSError as exc:
        return f"cannot read file: {exc.strerror or type(exc).__name__}"
    if "Status" not in rsp:
        return _LINK_LOST
    status = int(rsp.Status)
    if is_failure(status):
        comment = str(rsp.get("ErrorComment", "")).strip()
        return f"peer answered status 0x{status:04X}" + (f": {comment}" if comment else "")
    return None
