"""The DICOM node's transports: the spool in, C-STORE out (or nothing out).

Each is a few lines because the worker loop (``plugin.node.worker``) does everything else.
A new destination kind (STOW-RS, say) is one more class with ``name``, ``timing_key`` and
``deliver(files, acknowledged)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dicom_io.sender import Peer, SendError, send_files
from dicom_io.spool import Spool
from dicom_io.stow import Auth, send_stow
from dicom_io.tls import client_tls
from plugin.node.config import HepaticaConfig
from plugin.node.jobs import Job, JobQueue
from plugin.node.worker import Acknowledge, Outbox

__all__ = ["DimseOutbox", "KeepOutbox", "SpoolInbox", "StowOutbox", "dicom_outbox"]


@dataclass
class SpoolInbox:
    """Studies the storage SCP filed; a study is queued once quiet for ``stable_seconds``."""

    spool: Spool
    stable_seconds: float
    timing_key: str | None = None

    def tick(self, queue: JobQueue) -> None:
        queue.promote_stable(self.stable_seconds)

    @contextmanager
    def study(self, job: Job) -> Iterator[Path]:
        yield self.spool.study_dir(job.study_uid)  # the UID is checked before it names a path


@dataclass
class DimseOutbox:
    """C-STORE to the archive, one association per delivery (``dicom_io.sender``)."""

    peer: Peer
    retries: int
    backoff_s: float
    timing_key: str = "send"

    @property
    def name(self) -> str:
        return f"{self.peer.ae_title}@{self.peer.host}:{self.peer.port}"

    def deliver(self, files: Sequence[Path], acknowledged: Acknowledge) -> None:
        report = send_files(files, self.peer, retries=self.retries, backoff_s=self.backoff_s)
        refused = {path for path, _ in report.failed}
        acknowledged([path for path in files if path not in refused])
        if report.failed:
            reasons = "; ".join(f"{p.name}: {why}" for p, why in report.failed)
            raise SendError(f"the archive refused {len(report.failed)} result(s): {reasons}")


@dataclass
class StowOutbox:
    """STOW-RS to a DICOMweb origin (``dicom_io.stow``): the C-STORE outbox's rules over HTTP.

    Same retries and backoff inside one delivery, the same acknowledgement of what the server
    took (a retry sends only the rest), and the same idempotency: result UIDs are
    deterministic, so a re-post replaces rather than doubles.
    """

    url: str
    auth: Auth
    retries: int
    backoff_s: float
    timeout_s: float = 120.0
    timing_key: str = "send"

    @property
    def name(self) -> str:
        return f"STOW-RS {self.url}"

    def deliver(self, files: Sequence[Path], acknowledged: Acknowledge) -> None:
        report = send_stow(files, self.url, retries=self.retries, backoff_s=self.backoff_s,
                           auth=self.auth, timeout_s=self.timeout_s)
        refused = {path for path, _ in report.failed}
        acknowledged([path for path in files if path not in refused])
        if report.failed:
            reasons = "; ".join(f"{p.name}: {why}" for p, why in report.failed)
            raise SendError(f"the DICOMweb server refused {len(report.failed)} result(s): "
                            f"{reasons}")


@dataclass
class KeepOutbox:
    """``[destination] enabled = false``: results stay in results_dir, nothing is sent."""

    name: str = "results_dir only"
    timing_key: str = "send"

    def deliver(self, files: Sequence[Path], acknowledged: Acknowledge) -> None:
        acknowledged(list(files))


def dicom_outbox(config: HepaticaConfig) -> Outbox:
    """The outbox ``[destination]`` describes."""
    d = config.destination
    if not d.enabled:
        return KeepOutbox()
    if d.kind != "c-store":  # stow-rs, orthanc-rest: plugin.node.destinations
        from plugin.node.destinations import http_outbox

        return http_outbox(config)
    peer = Peer(d.ae_title, d.host, d.port, calling_ae=config.listener.ae_title,
                tls=client_tls(d.tls_certificate, d.tls_key, d.tls_ca, d.tls_verify_hostname))
    return DimseOutbox(peer, d.retries, d.backoff_seconds)
