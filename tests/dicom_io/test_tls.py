"""DICOM TLS with real peers: certificates made here with openssl (a CA, a server, a client, and
a client of a second, foreign CA); DCMTK storescu +tls against our SCP, our SCU against DCMTK
storescp +tls. A caller without a valid certificate is refused at the handshake, plain DICOM on
the TLS port fails cleanly, and the node keeps serving."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dicom_io.listener import ListenerSettings, StorageSCP
from dicom_io.sender import Peer, SendError, send_files
from dicom_io.spool import Spool, StoredInstance
from dicom_io.tls import TlsError, TlsSettings, client_context, server_context
from tests.dicom_io.conftest import dcmtk, dcmtk_env, free_port, make_series, write_series

pytestmark = [pytest.mark.network, pytest.mark.dcmtk]

SCP_AET = "HEPATICA"


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    foreign_ca: Path
    foreign_cert: Path
    foreign_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _ca(name: str, cwd: Path) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
             "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=cwd)


def _leaf(name: str, ca: str, usage: str, cwd: Path) -> None:
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
             cwd=cwd)
    (cwd / f"{name}.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        f"extendedKeyUsage={usage}\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
             cwd=cwd)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("pki")
    _ca("ca", d)
    _ca("foreign", d)
    _leaf("server", "ca", "serverAuth", d)
    _leaf("client", "ca", "clientAuth", d)
    _leaf("intruder", "foreign", "clientAuth", d)
    return Pki(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem",
               d / "client.key", d / "foreign.pem", d / "intruder.pem", d / "intruder.key")


class Recorder:
    def __init__(self) -> None:
        self.items: list[StoredInstance] = []
        self.lock = threading.Lock()

    def __call__(self, item: StoredInstance) -> None:
        with self.lock:
            self.items.append(item)


@pytest.fixture
def tls_scp(pki: Pki, tmp_path: Path) -> Iterator[tuple[StorageSCP, Recorder]]:
    tls = TlsSettings(pki.server_cert, pki.server_key, pki.ca, require_client_certificate=True)
    recorder = Recorder()
    server = StorageSCP(ListenerSettings(SCP_AET, "127.0.0.1", 0, acse_timeout_s=5,
                                         idle_timeout_s=5, tls=tls),
                        Spool(tmp_path / "spool"), recorder)
    server.start()
    yield server, recorder
    server.stop()


def _storescu(port: int, files: list[Path], *tls: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dcmtk("storescu"), "-v", *tls, "-aet", "STORESCU", "-aec", SCP_AET, "127.0.0.1",
         str(port), *map(str, files)], capture_output=True, text=True, timeout=60,
        env=dcmtk_env(), stdin=subprocess.DEVNULL, check=False)


def _files(tmp_path: Path, name: str, n: int = 2) -> list[Path]:
    return write_series(make_series(n), tmp_path / name)


def test_client_with_valid_certificate_stores(
    pki: Pki, tls_scp: tuple[StorageSCP, Recorder], tmp_path: Path
) -> None:
    server, recorder = tls_scp
    files = _files(tmp_path, "ok")
    result = _storescu(server.port, files, "+tls", str(pki.client_key), str(pki.client_cert),
                       "+cf", str(pki.ca))
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(recorder.items) == 2


@pytest.mark.parametrize("who", ["no certificate", "foreign CA", "plain DICOM"])
def test_refused_at_the_handshake_and_the_node_keeps_serving(
    who: str, pki: Pki, tls_scp: tuple[StorageSCP, Recorder], tmp_path: Path
) -> None:
    server, recorder = tls_scp
    files = _files(tmp_path, "bad")
    options = {
        "no certificate": ("+tla", "+cf", str(pki.ca)),
        "foreign CA": ("+tls", str(pki.foreign_key), str(pki.foreign_cert), "+cf", str(pki.ca)),
        "plain DICOM": (),
    }[who]
    refused = _storescu(server.port, files, *options)
    assert refused.returncode != 0
    assert "Received Store Response (Success)" not in refused.stdout + refused.stderr
    assert recorder.items == []
    assert list(server.spool.iter_studies()) == []
    ok = _storescu(server.port, _files(tmp_path, "after"), "+tls", str(pki.client_key),
                   str(pki.client_cert), "+cf", str(pki.ca))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert len(recorder.items) == 2


def test_a_silent_connection_does_not_block_the_tls_accept_loop(
    pki: Pki, tls_scp: tuple[StorageSCP, Recorder], tmp_path: Path
) -> None:
    """pynetdicom handshakes in the accepting thread; one silent client would stall all."""
    server, recorder = tls_scp
    with socket.create_connection(("127.0.0.1", server.port)):  # says nothing
        result = _storescu(server.port, _files(tmp_path, "ok"), "+tls", str(pki.client_key),
                           str(pki.client_cert), "+cf", str(pki.ca))
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(recorder.items) == 2


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
def test_tls_below_1_2_is_refused(pki: Pki, tls_scp: tuple[StorageSCP, Recorder]) -> None:
    server, _ = tls_scp
    assert server_context(TlsSettings(pki.server_cert, pki.server_key)).minimum_version \
        == ssl.TLSVersion.TLSv1_2
    old = client_context(TlsSettings(pki.client_cert, pki.client_key, pki.ca))
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw, \
            pytest.raises((ssl.SSLError, OSError)), \
            old.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.recv(1)


def test_settings_are_checked(pki: Pki) -> None:
    with pytest.raises(TlsError, match="both a certificate and its private key"):
        TlsSettings(certificate=pki.server_cert)
    with pytest.raises(TlsError, match="CA bundle"):
        TlsSettings(pki.server_cert, pki.server_key, require_client_certificate=True)
    with pytest.raises(TlsError, match="cannot load"):
        server_context(TlsSettings(pki.server_cert, pki.client_key))  # key of another cert


class TlsStoreSCP:
    """DCMTK storescp +tls requiring a client certificate from ``ca``."""

    def __init__(self, pki: Pki, out: Path) -> None:
        self.port = free_port()
        self.out = out
        out.mkdir()
        self.proc = subprocess.Popen(
            [dcmtk("storescp"), "+tls", str(pki.server_key), str(pki.server_cert), "+cf",
             str(pki.ca), "-rc", "--aetitle", "ARCHIVE", "-od", str(out), str(self.port)],
            env=dcmtk_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        for _ in range(200):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            threading.Event().wait(0.05)
        self.stop()
        raise TimeoutError("storescp did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def tls_storescp(pki: Pki, tmp_path: Path) -> Iterator[TlsStoreSCP]:
    peer = TlsStoreSCP(pki, tmp_path / "archive")
    yield peer
    peer.stop()


def test_sender_speaks_tls_to_dcmtk(pki: Pki, tls_storescp: TlsStoreSCP, tmp_path: Path) -> None:
    files = _files(tmp_path, "results", 3)
    tls = TlsSettings(pki.client_cert, pki.client_key, pki.ca)
    report = send_files(files, Peer("ARCHIVE", "127.0.0.1", tls_storescp.port, tls=tls),
                        retries=0)
    assert report.sent == 3 and report.failed == []
    assert len(list(tls_storescp.out.iterdir())) == 3


@pytest.mark.parametrize("who", ["foreign client certificate", "server from another CA",
                                 "plain DICOM"])
def test_sender_refused_without_trust(
    who: str, pki: Pki, tls_storescp: TlsStoreSCP, tmp_path: Path
) -> None:
    tls = {
        "foreign client certificate": TlsSettings(pki.foreign_cert, pki.foreign_key, pki.ca),
        "server from another CA": TlsSettings(pki.client_cert, pki.client_key, pki.foreign_ca),
        "plain DICOM": None,
    }[who]
    with pytest.raises(SendError):
        send_files(_files(tmp_path, "r", 1),
                   Peer("ARCHIVE", "127.0.0.1", tls_storescp.port, tls=tls), retries=0)
    assert list(tls_storescp.out.iterdir()) == []
