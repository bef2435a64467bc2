"""Earlier studies of a patient from the PACS: C-FIND, then C-MOVE (or C-GET), cached.

Response criteria compare a study with the patient's baseline, which the PACS holds but
never routes together with the follow-up. The query is Study Root, STUDY level, by
PatientID within a look-back window (PS3.4 C.6.2); retrieval is C-MOVE to Hepatica's own
storage SCP (the usual PACS set-up: the destination AE must be known to the PACS) or C-GET
on the same association (no inbound port needed). A retrieved study is marked complete in
the cache so a later follow-up does not fetch it again.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE, build_context, build_role, evt

from dicom_io.listener import nodelay_on_connect
from dicom_io.sop_classes import ACCEPTED_TRANSFER_SYNTAXES, STORAGE_CLASSES
from dicom_io.spool import write_durably
from dicom_io.tls import TlsSettings, client_context
from dicom_io.uids import checked_uid, path_under

__all__ = [
    "PacsPeer",
    "PriorCache",
    "PriorStudy",
    "PriorsError",
    "find_prior_studies",
    "get_study",
    "move_study",
    "order_timepoints",
]

log = logging.getLogger(__name__)
_PENDING = (0xFF00, 0xFF01)
_OUT_OF_RESOURCES = 0xA702  # C-STORE sub-operation: out of resources
_CANNOT_UNDERSTAND = 0xC000
# Study Root Query/Retrieve Information Model SOP classes (PS3.4 C.6.2)
StudyRootQueryRetrieveInformationModelFind = UID("1.2.840.10008.5.1.4.1.2.2.1")
StudyRootQueryRetrieveInformationModelMove = UID("1.2.840.10008.5.1.4.1.2.2.2")
StudyRootQueryRetrieveInformationModelGet = UID("1.2.840.10008.5.1.4.1.2.2.3")


class PriorsError(RuntimeError):
    """The PACS refused or failed a query or retrieve; the message says which and why."""


@dataclass(frozen=True)
class PacsPeer:
    """The archive queried for priors, and the AE title Hepatica calls it with."""

    ae_title: str
    host: str
    port: int
    calling_ae: str = "HEPATICA"
    timeout_s: float = 120.0
    tls: TlsSettings | None = None


@dataclass(frozen=True)
class PriorStudy:
    """One earlier study as the PACS describes it."""

    study_uid: str
    study_date: str
    study_time: str
    description: str
    modalities: tuple[str, ...]

    @property
    def when(self) -> str:
        """``YYYYMMDDHHMMSS``: sorts chronologically."""
        return (self.study_date + self.study_time.split(".")[0].ljust(6, "0"))[:14]


def order_timepoints(studies: Sequence[PriorStudy]) -> list[PriorStudy]:
    """Oldest first, by StudyDate then StudyTime."""
    return sorted(studies, key=lambda s: s.when)


def _association(peer: PacsPeer, contexts: Sequence[Any], roles: Sequence[Any] = (),
                 handlers: Sequence[Any] = ()) -> Any:
    ae = AE(ae_title=peer.calling_ae)
    ae.requested_contexts = [c if not isinstance(c, str) else build_context(c)
                             for c in contexts]
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = peer.timeout_s
    tls_args = (client_context(peer.tls), peer.host) if peer.tls else None
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title,
                         ext_neg=list(roles) or None,
                         evt_handlers=[*handlers, (evt.EVT_CONN_OPEN, nodelay_on_connect)],
                         tls_args=tls_args)
    if not assoc.is_established:
        raise PriorsError(f"{peer.ae_title} at {peer.host}:{peer.port} refused or did not "
                          "answer the association (is Hepatica's AE title known to it?)")
    return assoc


def find_prior_studies(peer: PacsPeer, patient_id: str, *, before: dt.date,
                       lookback_days: int, exclude: Sequence[str] = ()) -> list[PriorStudy]:
    """The patient's studies from ``before - lookback_days`` to ``before``, oldest first."""
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = patient_id
    start = before - dt.timedelta(days=lookback_days)
    query.StudyDate = f"{start:%Y%m%d}-{before:%Y%m%d}"
    for keyword in ("StudyInstanceUID", "StudyTime", "StudyDescription",
                    "ModalitiesInStudy"):
        setattr(query, keyword, "")
    assoc = _association(peer, [StudyRootQueryRetrieveInformationModelFind])
    found: list[PriorStudy] = []
    try:
        for status, identifier in assoc.send_c_find(
                query, StudyRootQueryRetrieveInformationModelFind):
            _check(status, "C-FIND", peer)
            if status and status.Status in _PENDING and identifier is not None:
                found.append(_prior(identifier))
    finally:
        assoc.release()
    return order_timepoints([s for s in found if s.study_uid not in set(exclude)])


def _check(status: Dataset | None, what: str, peer: PacsPeer) -> None:
    if not status:
        raise PriorsError(f"{what} to {peer.ae_title}: no response (timeout or abort)")
    code = int(status.Status)
    if code not in (0x0000, *_PENDING, 0xB000):
        comment = status.get("ErrorComment", "")
        raise PriorsError(f"{what} to {peer.ae_title} failed with status 0x{code:04X} {comment}")


def _prior(identifier: Dataset) -> PriorStudy:
    modalities = identifier.get("ModalitiesInStudy") or []
    return PriorStudy(
        study_uid=str(identifier.StudyInstanceUID),
        study_date=str(identifier.get("StudyDate", "") or ""),
        study_time=str(identifier.get("StudyTime", "") or ""),
        description=str(identifier.get("StudyDescription", "") or ""),
        modalities=tuple([modalities] if isinstance(modalities, str) else
                         [str(m) for m in modalities]),
    )


def _study_identifier(study_uid: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = study_uid
    return ds


def move_study(peer: PacsPeer, study_uid: str, destination_ae: str) -> int:
    """C-MOVE the study to ``destination_ae`` (our SCP); returns completed sub-operations."""
    assoc = _association(peer, [StudyRootQueryRetrieveInformationModelMove])
    completed = 0
    try:
        for status, _ in assoc.send_c_move(_study_identifier(study_uid), destination_ae,
                                           StudyRootQueryRetrieveInformationModelMove):
            _check(status, "C-MOVE", peer)
            completed = int(status.get("NumberOfCompletedSuboperations", completed))
            _check_complete(status, "C-MOVE", study_uid)
    finally:
        assoc.release()
    return completed


def get_study(peer: PacsPeer, study_uid: str, out_dir: Path) -> int:
    """C-GET the study into ``out_dir`` on one association; returns instances stored.

    Each instance is named after its SOP Instance UID only once that is a valid UID (the
    remote decides it), and written durably; an instance we cannot file is answered with a
    failure, so the retrieve ends incomplete and raises :class:`PriorsError`.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    stored: set[str] = set()

    def on_store(event: Any) -> int:
        try:
            sop_uid = checked_uid(str(event.request.AffectedSOPInstanceUID or ""),
                                  "SOP Instance UID")
            write_durably(path_under(out_dir, sop_uid, suffix=".dcm"),
                          event.encoded_dataset(include_meta=True))
        except Exception as exc:  # a failure status, never an exception into pynetdicom
            log.warning("C-GET sub-operation refused: %s", type(exc).__name__)
            return _CANNOT_UNDERSTAND if isinstance(exc, ValueError) else _OUT_OF_RESOURCES
        stored.add(sop_uid)
        return 0x0000

    # Every class a liver study may hold (our own SEG/SR/SC included), each offering every
    # syntax we can decode so the archive need not transcode; one context per class.
    storage = [build_context(uid, list(ACCEPTED_TRANSFER_SYNTAXES)) for uid in STORAGE_CLASSES]
    roles = [build_role(uid, scp_role=True) for uid in STORAGE_CLASSES]
    assoc = _association(peer, [StudyRootQueryRetrieveInformationModelGet, *storage], roles,
                         [(evt.EVT_C_STORE, on_store)])
    try:
        for status, _ in assoc.send_c_get(_study_identifier(study_uid),
                                          StudyRootQueryRetrieveInformationModelGet):
            _check(status, "C-GET", peer)
            _check_complete(status, "C-GET", study_uid)
    finally:
        assoc.release()
    return len(stored)


def _check_complete(status: Dataset, what: str, study_uid: str) -> None:
    """A retrieve with a failed or warning sub-operation is incomplete: never cache it."""
    failed = int(status.get("NumberOfFailedSuboperations", 0) or 0)
    warned = int(status.get("NumberOfWarningSuboperations", 0) or 0)
    if failed or warned or int(status.Status) == 0xB000:
        raise PriorsError(f"{what} of study …{study_uid[-12:]} incomplete: {failed} failed, "
                          f"{warned} with warnings")


class PriorCache:
    """Which prior studies were retrieved completely, and where their files lie.

    The marker ``root/<StudyUID>.json`` is the promise "this folder holds the whole study": it
    is written (durably) only after a retrieve that ended without failures and brought at
    least one instance, so an empty or interrupted retrieve is simply tried again.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _marker(self, study_uid: str) -> Path:
        return path_under(self.root, study_uid, suffix=".json")

    def folder(self, study_uid: str) -> Path:
        """Where C-GET / REST downloads put a study (C-MOVE lands in the spool instead)."""
        return path_under(self.root, study_uid)

    def lookup(self, study_uid: str) -> Path | None:
        """The folder of a completely retrieved study, or None."""
        marker = self._marker(study_uid)
        try:
            record = json.loads(marker.read_text())
            folder = Path(record["folder"])
            instances = int(record["instances"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # absent, or torn by a crash before this version wrote durably
        return folder if instances > 0 and folder.is_dir() else None

    def mark_complete(self, study_uid: str, folder: Path, instances: int) -> None:
        """Record a complete retrieve; :class:`PriorsError` when nothing arrived."""
        if instances <= 0 or not Path(folder).is_dir() or not any(Path(folder).rglob("*.dcm")):
            raise PriorsError(f"the retrieve of prior study …{study_uid[-12:]} brought no "
                              "instances; not cached, it is tried again next time")
        record = {"folder": str(folder), "instances": instances}
        write_durably(self._marker(study_uid), json.dumps(record).encode())
