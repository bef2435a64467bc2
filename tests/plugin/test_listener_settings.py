"""[listener] limits and TLS keys reach the storage SCP (plugin.node.service._listener_settings)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_io.tls import TlsError
from plugin.node.config import ConfigError, load_config
from plugin.node.service import _listener_settings


def test_defaults_are_safe() -> None:
    settings = _listener_settings(load_config(environ={}))
    assert settings.max_associations == 32
    assert settings.idle_timeout_s == 30.0 and settings.acse_timeout_s == 30.0
    assert settings.quarantine_max_bytes == 1024 * 1024 * 1024
    assert settings.tls is None


def test_limits_and_tls_from_the_environment(tmp_path: Path) -> None:
    cert, key, ca = (tmp_path / n for n in ("node.pem", "node.key", "ca.pem"))
    for path in (cert, key, ca):
        path.write_text("-----BEGIN X-----\n")
    settings = _listener_settings(load_config(environ={
        "HEPATICA_LISTENER__MAX_ASSOCIATIONS": "8",
        "HEPATICA_LISTENER__IDLE_TIMEOUT_SECONDS": "5",
        "HEPATICA_LISTENER__QUARANTINE_MAX_MEGABYTES": "2",
        "HEPATICA_LISTENER__TLS_CERTIFICATE": str(cert),
        "HEPATICA_LISTENER__TLS_KEY": str(key),
        "HEPATICA_LISTENER__TLS_CA": str(ca),
        "HEPATICA_LISTENER__TLS_REQUIRE_CLIENT_CERTIFICATE": "yes",
    }))
    assert settings.max_associations == 8 and settings.idle_timeout_s == 5.0
    assert settings.quarantine_max_bytes == 2 * 1024 * 1024
    assert settings.tls is not None and settings.tls.require_client_certificate
    assert settings.tls.certificate == cert and settings.tls.ca == ca


def test_missing_pem_file_and_missing_key_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tls_certificate"):
        load_config(environ={"HEPATICA_LISTENER__TLS_CERTIFICATE": str(tmp_path / "no.pem")})
    cert = tmp_path / "node.pem"
    cert.write_text("x")
    config = load_config(environ={"HEPATICA_LISTENER__TLS_CERTIFICATE": str(cert)})
    with pytest.raises(TlsError, match="private key"):
        _listener_settings(config)


def test_results_and_priors_speak_tls_when_configured(tmp_path: Path) -> None:
    """[destination] and [priors] TLS keys reach the C-STORE peer and the priors' PACS peer."""
    from plugin.node.transports import dicom_outbox
    from plugin.pipeline.recist import dimse_priors

    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN X-----\n")
    plain = load_config(environ={"HEPATICA_PRIORS__ENABLED": "true"})
    priors = dimse_priors(plain, lambda uid: None)
    assert priors is not None and priors.source.peer.tls is None  # type: ignore[union-attr]
    config = load_config(environ={"HEPATICA_PRIORS__ENABLED": "true",
                                  "HEPATICA_PRIORS__TLS_CA": str(ca),
                                  "HEPATICA_DESTINATION__TLS_CA": str(ca),
                                  "HEPATICA_DESTINATION__TLS_VERIFY_HOSTNAME": "false"})
    priors = dimse_priors(config, lambda uid: None)
    assert priors is not None
    peer_tls = priors.source.peer.tls  # type: ignore[union-attr]
    assert peer_tls is not None and peer_tls.ca == ca and peer_tls.verify_hostname
    outbox = dicom_outbox(config)
    assert outbox.peer.tls is not None and outbox.peer.tls.ca == ca  # type: ignore[attr-defined]
    assert not outbox.peer.tls.verify_hostname  # type: ignore[attr-defined]
