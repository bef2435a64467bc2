"""Pieces shared by the issue-14 tests: small phantom studies, node configurations, HTTP.

Every process is started by the tests on loopback and ended by its PID.
"""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
from pathlib import Path

import pydicom

from dicom_io.synthetic import make_phantom, write_phantom_study
from dicom_io.synthetic.anatomy import PhantomSpec

SMALL = PhantomSpec(rows=96, columns=96, slices=24, lesion_count=(1, 1),
                    lesion_diameter_mm=(20.0, 24.0), sequences=("AP", "PVP"))
"""Two phases, 96×96×24: the whole pipeline in a few seconds on a shared core."""
SMALL_RESULTS = 4  # SEG, SR, heatmaps of AP and PVP


def small_study(folder: Path, seed: int) -> tuple[Path, str]:
    """A small two-phase phantom study; returns its DICOM folder and StudyInstanceUID."""
    files = write_phantom_study(make_phantom(seed, SMALL), folder)
    uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    return folder / "dicom", uid


def node_config(path: Path, *, data_dir: Path, port: int, extra: str = "",
                stable_seconds: float = 1.0, status_port: int | None = None,
                status_user: str = "") -> Path:
    """A `hepatica serve` configuration on loopback; ``extra`` appends TOML tables. The
    status server is off unless ``status_port`` is given (its password: the environment)."""
    status = (f'[status]\nenabled = true\nport = {status_port}\nusername = "{status_user}"\n'
              if status_port is not None else "[status]\nenabled = false\n")
    path.write_text(f"""data_dir = "{data_dir}"
[listener]
ae_title = "HEPATICA"
host = "127.0.0.1"
port = {port}
[pipeline]
stable_seconds = {stable_seconds}
{status}{extra}""")
    return path


def http_get(url: str, auth: tuple[str, str] | None = None,
             timeout: float = 10.0) -> tuple[int, str, dict[str, str]]:
    """Status, body text and headers of a GET (errors are answers too)."""
    headers = {}
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, reply.read().decode(), dict(reply.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace"), dict(exc.headers)
