"""The HTTP destination kinds of ``[destination]``: STOW-RS and Orthanc REST.

Kept apart from ``transports`` so that the DICOM node's module stays small and Orthanc's
client is imported only when a site returns results that way.
"""

from __future__ import annotations

from plugin.node.config import HepaticaConfig
from plugin.node.transports import StowOutbox
from plugin.node.worker import Outbox

__all__ = ["http_outbox"]


def http_outbox(config: HepaticaConfig) -> Outbox:
    """``kind = "stow-rs"``: a :class:`StowOutbox`; ``"orthanc-rest"``: POST /instances."""
    d = config.destination
    if d.kind == "stow-rs":
        auth = (d.username, d.password) if d.username else None
        return StowOutbox(d.url, auth, d.retries, d.backoff_seconds, d.timeout_seconds)
    if d.kind == "orthanc-rest":
        from plugin.node.orthanc_worker import OrthancClient, OrthancOutbox

        # Orthanc's own retry window stands in for retries x backoff of the other kinds
        window = d.backoff_seconds * (2 ** (d.retries + 1) - 1)
        client = OrthancClient(d.url, d.username, d.password, timeout=d.timeout_seconds,
                               retry_seconds=window)
        return OrthancOutbox(client)
    raise ValueError(f"destination.kind {d.kind!r} is not an HTTP destination")
