"""A real Orthanc (Debian's package) on loopback with the Hepatica plugin, for tests.

Free HTTP and DICOM ports, its own storage folder, a short StableAge, TCP_NODELAY=1 (see
/work/shared/FACTS.md: without it each C-STORE waits for a delayed ACK), HTTP basic auth on
so the worker's credentials path is exercised. Only processes started here are stopped,
by their PID.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ORTHANC = Path("/usr/sbin/Orthanc")
PYTHON_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancPython.so")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "plugin" / "node" / "orthanc" / "hepatica_orthanc.py"
USER, PASSWORD = "hepatica", "test-only-password"


def free_port() -> int:
    """A loopback port nobody listens on now (standard library: no plugin import here)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def missing_packages() -> list[str]:
    return [str(p) for p in (ORTHANC, PYTHON_PLUGIN, DICOMWEB_PLUGIN) if not p.exists()]


def venv_site_packages() -> str:
    return sysconfig.get_paths()["purelib"]


def hepatica_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "TCP_NODELAY": "1", "HEPATICA_ORTHANC__PASSWORD": PASSWORD}
    return {**env, **(extra or {})}


@dataclass
class OrthancServer:
    root: Path
    hepatica_config: Path
    stable_age: int = 3
    http_port: int = field(default_factory=free_port)
    dicom_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    python_plugin: bool = True  # False: a plain archive with DICOMweb (no Hepatica plugin)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def log_path(self) -> Path:
        return self.root / "orthanc.log"

    def write_config(self) -> Path:
        config = {
            "Name": "hepatica-test",
            "StorageDirectory": str(self.root / "db"),
            "IndexDirectory": str(self.root / "db"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {USER: PASSWORD},
            "StableAge": self.stable_age,
            "OverwriteInstances": True,
            "UserMetadata": {"HepaticaRoute": 1024},
            "Plugins": [str(PYTHON_PLUGIN), str(DICOMWEB_PLUGIN)],
            "PythonScript": str(SCRIPT),
            "PythonVerbose": False,
            "Hepatica": {"VenvSitePackages": venv_site_packages(),
                         "ConfigFile": str(self.hepatica_config)},
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        if not self.python_plugin:
            for key in ("PythonScript", "PythonVerbose", "Hepatica"):
                del config[key]
            config["Plugins"] = [str(DICOMWEB_PLUGIN)]
        path = self.root / "orthanc.json"
        path.write_text(json.dumps(config, indent=1))
        return path

    def start(self, timeout: float = 60.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.write_config()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([str(ORTHANC), "--verbose", str(config)], stdout=log,
                                     stderr=subprocess.STDOUT, env=hepatica_env())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                if not self.python_plugin:
                    if self.request("GET", "/dicom-web/studies")[0] == 200:
                        return  # Orthanc answers and DICOMweb is loaded
                elif self.request("GET", "/hepatica/health")[0] in (200, 503):
                    return  # Orthanc answers and the plugin's routes are registered
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"Orthanc did not answer within {timeout} s:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str = "application/json") -> tuple[int, bytes]:
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        headers = {"Authorization": f"Basic {token}"}
        if body is not None:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(self.url + path, body, headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def get(self, path: str) -> Any:
        status, body = self.request("GET", path)
        if status != 200:
            raise urllib.error.URLError(f"GET {path}: {status} {body[:200]!r}")
        return json.loads(body)


def start_worker(config: Path, url: str, log: Path) -> subprocess.Popen[bytes]:
    """`hepatica serve --orthanc URL` as a child process (the way a site runs it)."""
    handle = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "plugin.cli", "serve", "--config", str(config), "--orthanc", url],
        stdout=handle, stderr=subprocess.STDOUT, env=hepatica_env(), cwd=REPO)


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM,
                 timeout: float = 30.0) -> None:
    if proc.poll() is not None:
        return
    os.kill(proc.pid, sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)


def storescu(folder: Path, port: int, calling: str = "PACS", timeout: float = 300.0) -> None:
    """DCMTK's storescu (by path: the venv may shadow the name with pynetdicom's app)."""
    subprocess.run(["/usr/bin/storescu", "-aet", calling, "-aec", "ORTHANC", "+sd", "+r",
                    "127.0.0.1", str(port), str(folder)], check=True, timeout=timeout,
                   env={**os.environ, "TCP_NODELAY": "1"}, capture_output=True)


def write_hepatica_config(path: Path, data_dir: Path, url: str, **orthanc: object) -> Path:
    lines = [f'data_dir = "{data_dir}"', "[pipeline]", "max_attempts = 3", "[orthanc]",
             f'url = "{url}"', f'username = "{USER}"', "retry_seconds = 90.0"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in orthanc.items()]
    path.write_text("\n".join(lines) + "\n")
    return path
