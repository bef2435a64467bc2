"""Fixtures for dicom_io tests: synthetic datasets written with pydicom, free loopback ports,
DCMTK peers started as subprocesses and stopped by PID, and a hard per-test watchdog for
network tests (no pytest-timeout in the environment: faulthandler ends a hung run)."""

from __future__ import annotations

import faulthandler
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

NETWORK_TEST_TIMEOUT_S = 90
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
UID_ROOT = "1.2.826.0.1.3680043.10.1456.9."  # test-only prefix under Hepatica's root

SliceFactory = Callable[..., Dataset]
SeriesFactory = Callable[..., list[Dataset]]


@pytest.fixture(autouse=True)
def _network_watchdog(request: pytest.FixtureRequest) -> Iterator[None]:
    """Abort the run with tracebacks if a network test hangs past its budget."""
    if request.node.get_closest_marker("network") is None:
        yield
        return
    faulthandler.dump_traceback_later(NETWORK_TEST_TIMEOUT_S, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def free_port() -> int:
    """A loopback port nobody listens on right now (bind port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_slice(
    *,
    position: Sequence[float],
    orientation: Sequence[float] = AXIAL,
    pixel_spacing: Sequence[float] = (0.8, 0.7),
    rows: int = 32,
    cols: int = 32,
    study_uid: str,
    series_uid: str,
    sop_uid: str | None = None,
    modality: str = "MR",
    sop_class: str = MRImageStorage,
    description: str = "T1 VIBE FS PRE",
    instance_number: int = 1,
    value: int = 0,
    slope: float | None = None,
    intercept: float | None = None,
    contrast: str | None = None,
) -> Dataset:
    """One small single-frame image with full Image Plane geometry and file meta."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid or generate_uid(UID_ROOT)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "PAT-0001"
    ds.Modality = modality
    ds.SeriesDescription = description
    ds.SeriesNumber = 3
    ds.InstanceNumber = instance_number
    ds.FrameOfReferenceUID = generate_uid(UID_ROOT)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in orientation]
    ds.PixelSpacing = [str(v) for v in pixel_spacing]
    ds.SliceThickness = "2.5"
    if contrast:
        ds.ContrastBolusAgent = contrast
    if slope is not None:
        ds.RescaleSlope = str(slope)
        ds.RescaleIntercept = str(intercept or 0.0)
    _set_pixels(ds, np.full((rows, cols), value, dtype=np.uint16))
    return ds


def _set_pixels(ds: Dataset, pixels: np.ndarray) -> None:
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()


def make_series(
    n: int = 10,
    *,
    orientation: Sequence[float] = AXIAL,
    origin: Sequence[float] = (-12.0, -20.0, 30.0),
    step: float = 2.5,
    study_uid: str | None = None,
    series_uid: str | None = None,
    positions: Sequence[float] | None = None,
    **kwargs: object,
) -> list[Dataset]:
    """``n`` slices along the orientation's normal; slice k has pixel value 10*k."""
    study_uid = study_uid or generate_uid(UID_ROOT)
    series_uid = series_uid or generate_uid(UID_ROOT)
    normal = np.cross(orientation[:3], orientation[3:])
    offsets = positions if positions is not None else [k * step for k in range(n)]
    return [
        make_slice(position=list(np.asarray(origin) + d * normal), orientation=orientation,
                   study_uid=study_uid, series_uid=series_uid, instance_number=k + 1,
                   value=10 * k, **kwargs)  # type: ignore[arg-type]
        for k, d in enumerate(offsets)
    ]


def write_series(datasets: Sequence[Dataset], directory: Path) -> list[Path]:
    """Save as Part 10 files named by SOP Instance UID."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = directory / f"{ds.SOPInstanceUID}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.fixture(name="make_series")
def _make_series_fixture() -> SeriesFactory:
    return make_series


@pytest.fixture(name="make_slice")
def _make_slice_fixture() -> SliceFactory:
    return make_slice


@pytest.fixture(name="write_series")
def _write_series_fixture() -> Callable[[Sequence[Dataset], Path], list[Path]]:
    return write_series


@pytest.fixture(name="free_port")
def _free_port_fixture() -> Callable[[], int]:
    return free_port


def dcmtk(tool: str) -> str:
    """Absolute path of a DCMTK tool (never pynetdicom's app of the same name)."""
    path = f"/usr/bin/{tool}"
    if not os.access(path, os.X_OK):
        pytest.skip(f"DCMTK {tool} is not installed")
    return path


def dcmtk_env() -> dict[str, str]:
    """DCMTK leaves Nagle on unless told otherwise (see FACTS.md)."""
    return {**os.environ, "TCP_NODELAY": "1"}


class StoreSCPProcess:
    """A DCMTK storescp subprocess on loopback, stopped by PID in the finaliser."""

    def __init__(self, port: int, out_dir: Path, ae_title: str = "DCMTKSCP") -> None:
        self.port = port
        self.out_dir = out_dir
        self.ae_title = ae_title
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [dcmtk("storescp"), "--aetitle", self.ae_title, "--output-directory",
             str(self.out_dir), str(self.port)],
            env=dcmtk_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def wait_listening(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise TimeoutError("storescp did not start listening")


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[StoreSCPProcess]:
    """A DCMTK storescp not yet started (tests choose when), always stopped afterwards."""
    if shutil.which("/usr/bin/storescp") is None:
        pytest.skip("DCMTK storescp is not installed")
    peer = StoreSCPProcess(free_port(), tmp_path / "storescp")
    yield peer
    peer.stop()
