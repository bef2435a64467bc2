"""DICOM TLS (PS3.15 B.9, BCP 195): SSL contexts for the storage SCP and the SCUs.

AE titles are not authentication; on a hospital network the peer's certificate is. The
SCP proves itself with its certificate and, when ``require_client_certificate`` is set,
accepts only callers whose certificate chains to ``ca`` (mutual TLS). Both sides refuse
anything older than TLS 1.2 and offer only forward-secret AEAD cipher suites, which is what
the BCP 195 profiles (and DCMTK's default "non-downgrading" profile) ask for.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TlsError", "TlsSettings", "client_context", "client_tls", "server_context"]

# RFC 7525 / 9325 recommended suites for TLS 1.2 (TLS 1.3 suites are always on).
_BCP195_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"


class TlsError(ValueError):
    """The TLS configuration cannot be used (missing file, key not matching, bad CA)."""


@dataclass(frozen=True)
class TlsSettings:
    """Our certificate and key (PEM), the CA bundle we trust, and how strict we are.

    For an SCP ``certificate`` and ``key`` are required. For an SCU they are optional (sent
    when the peer asks for a client certificate); ``ca`` verifies the server, and
    ``verify_hostname`` also checks that the server certificate names the host we dialled.
    """

    certificate: Path | None = None
    key: Path | None = None
    ca: Path | None = None
    require_client_certificate: bool = False
    verify_hostname: bool = True

    def __post_init__(self) -> None:
        if (self.certificate is None) != (self.key is None):
            raise TlsError("TLS needs both a certificate and its private key, or neither")
        if self.require_client_certificate and self.ca is None:
            raise TlsError("verifying client certificates needs a CA bundle (tls_ca)")


def _base(purpose: ssl.Purpose, settings: TlsSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(purpose)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(_BCP195_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        if settings.certificate is not None and settings.key is not None:
            context.load_cert_chain(settings.certificate, settings.key)
        if settings.ca is not None:
            context.load_verify_locations(cafile=settings.ca)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"cannot load TLS certificate, key or CA: {exc}") from exc
    return context


def server_context(settings: TlsSettings) -> ssl.SSLContext:
    """Context for the SCP: our certificate, and client verification as configured."""
    if settings.certificate is None:
        raise TlsError("a TLS listener needs tls_certificate and tls_key")
    context = _base(ssl.Purpose.CLIENT_AUTH, settings)
    if settings.require_client_certificate:
        context.verify_mode = ssl.CERT_REQUIRED
    elif settings.ca is not None:
        context.verify_mode = ssl.CERT_OPTIONAL
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def client_context(settings: TlsSettings) -> ssl.SSLContext:
    """Context for an SCU: the server must present a certificate from ``ca``.

    Without ``ca`` the system trust store is used, never "trust anything".
    """
    context = _base(ssl.Purpose.SERVER_AUTH, settings)
    context.check_hostname = settings.verify_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_tls(certificate: str, key: str, ca: str, verify_hostname: bool = True
               ) -> TlsSettings | None:
    """SCU settings from configuration strings: TLS when a CA or a certificate is set,
    plain DICOM (None) when all three are empty."""
    if not (ca or certificate):
        return None
    return TlsSettings(Path(certificate) if certificate else None,
                       Path(key) if key else None, Path(ca) if ca else None,
                       verify_hostname=verify_hostname)
