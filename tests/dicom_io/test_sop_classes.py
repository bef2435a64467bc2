"""Everything a liver study carries reaches the spool: by C-STORE from DCMTK storescu, and by
C-MOVE and C-GET of a prior from a real Q/R archive (DCMTK dcmqrscp) holding our own SEG/SR/SC
besides the images. Non-image objects are kept with the study, never stacked as images, and
do not re-open the study's job."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from dicom_io import sop_classes as sc
from dicom_io.listener import ListenerSettings, StorageSCP
from dicom_io.priors import PacsPeer, get_study, move_study
from dicom_io.series import GeometryError, load_study, series_to_volume
from dicom_io.spool import Spool, StoredInstance
from tests.dicom_io.conftest import dcmtk, dcmtk_env, free_port, make_series

pytestmark = [pytest.mark.network, pytest.mark.dcmtk]

NODE_AET = "HEPATICA"
PACS_AET = "PACS"

# (SOP class, modality, has pixels): the non-image objects and extra image classes a liver
# study may carry. DCMTK 3.6.7 knows each of them (so dcmqrscp archives and moves them).
EXTRA_OBJECTS: list[tuple[str, str, bool]] = [
    ("1.2.840.10008.5.1.4.1.1.66.4", "SEG", True),  # Segmentation (ours or a reader's)
    ("1.2.840.10008.5.1.4.1.1.481.3", "RTSTRUCT", False),
    ("1.2.840.10008.5.1.4.1.1.88.11", "SR", False),  # Basic Text SR
    ("1.2.840.10008.5.1.4.1.1.88.22", "SR", False),  # Enhanced SR
    ("1.2.840.10008.5.1.4.1.1.88.33", "SR", False),  # Comprehensive SR (our TID 1500)
    ("1.2.840.10008.5.1.4.1.1.88.34", "SR", False),  # Comprehensive 3D SR
    ("1.2.840.10008.5.1.4.1.1.88.67", "SR", False),  # X-Ray Radiation Dose SR (CT dose)
    ("1.2.840.10008.5.1.4.1.1.88.59", "KO", False),
    ("1.2.840.10008.5.1.4.1.1.11.1", "PR", False),  # Grayscale Softcopy PS
    ("1.2.840.10008.5.1.4.1.1.104.1", "DOC", False),  # Encapsulated PDF
    ("1.2.840.10008.5.1.4.1.1.30", "MR", True),  # Parametric Map
    ("1.2.840.10008.5.1.4.1.1.7", "OT", True),  # Secondary Capture (our heat map)
    ("1.2.840.10008.5.1.4.1.1.2.2", "CT", True),  # Legacy Converted Enhanced CT
    ("1.2.840.10008.5.1.4.1.1.4.4", "MR", True),  # Legacy Converted Enhanced MR
]


PARAMETRIC_MAP = "1.2.840.10008.5.1.4.1.1.30"


def _study(directory: Path, skip: frozenset[str] = frozenset()
           ) -> tuple[str, list[Path], set[str]]:
    """Two CT slices plus one object of each extra class, each in its own series."""
    ct = make_series(2, modality="CT", sop_class="1.2.840.10008.5.1.4.1.1.2")
    study_uid = ct[0].StudyInstanceUID
    datasets: list[Dataset] = list(ct)
    for n, (sop_class, modality, pixels) in enumerate(EXTRA_OBJECTS):
        if sop_class in skip:
            continue
        ds = make_series(1, study_uid=study_uid, sop_class=sop_class, modality=modality)[0]
        ds.SeriesNumber = 100 + n
        ds.Manufacturer = "Hepatica" if n % 2 else "Reader workstation"
        if not pixels:
            for keyword in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored",
                            "HighBit", "PixelRepresentation", "SamplesPerPixel",
                            "PhotometricInterpretation", "ImagePositionPatient",
                            "ImageOrientationPatient", "PixelSpacing"):
                delattr(ds, keyword)
        if modality == "DOC":
            ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
            ds.EncapsulatedDocument = b"%PDF-1.4\n%%EOF\n"
        datasets.append(ds)
    directory.mkdir(parents=True)
    paths = []
    for ds in datasets:
        path = directory / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return study_uid, paths, {str(ds.SOPInstanceUID) for ds in datasets}


class Recorder:
    def __init__(self) -> None:
        self.items: list[StoredInstance] = []
        self.lock = threading.Lock()

    def __call__(self, item: StoredInstance) -> None:
        with self.lock:
            self.items.append(item)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[StorageSCP, Recorder]]:
    recorder = Recorder()
    server = StorageSCP(ListenerSettings(NODE_AET, "127.0.0.1", 0), Spool(tmp_path / "spool"),
                        recorder)
    server.start()
    yield server, recorder
    server.stop()


def _storescu(port: int, aec: str, files: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dcmtk("storescu"), "-v", "-R", "-aet", "STORESCU", "-aec", aec, "127.0.0.1", str(port),
         *map(str, files)], capture_output=True, text=True, timeout=60, env=dcmtk_env(),
        check=False)


def _spool_sops(spool: Spool, study_uid: str) -> set[str]:
    return {p.stem for p in spool.study_dir(study_uid).rglob("*.dcm")}


def test_catalogue_is_complete_and_fits_one_association() -> None:
    for sop_class, _, _ in EXTRA_OBJECTS:
        assert sop_class in sc.STORAGE_CLASSES
    assert len(sc.STORAGE_CLASSES) + 1 <= 128  # + the Q/R GET context (PS3.8: 128 max)
    assert not sc.is_volume_image("1.2.840.10008.5.1.4.1.1.66.4")
    assert sc.is_volume_image("1.2.840.10008.5.1.4.1.1.2.2")


def test_storescu_stores_every_class_and_only_images_notify(
    node: tuple[StorageSCP, Recorder], tmp_path: Path
) -> None:
    server, recorder = node
    study_uid, files, sops = _study(tmp_path / "study")
    result = _storescu(server.port, NODE_AET, files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Error" not in result.stdout + result.stderr
    assert _spool_sops(server.spool, study_uid) == sops
    notified = {item.sop_class_uid for item in recorder.items}
    # CT and the Legacy Converted Enhanced images feed the pipeline; SEG/SR/KO/PR/PDF/SC
    # and parametric maps are stored but do not (re)open the job
    assert notified <= sc.VOLUME_IMAGE_CLASSES
    assert "1.2.840.10008.5.1.4.1.1.2" in notified

    series = load_study(server.spool.study_dir(study_uid))
    assert len(series) == 1 + len(EXTRA_OBJECTS)
    for item in series:
        if item.is_image:
            continue
        with pytest.raises(GeometryError, match="not an image series"):
            series_to_volume(item)
    ct = next(s for s in series if s.first.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2")
    assert series_to_volume(ct).array.shape == (2, 32, 32)


class DcmQrScp:
    """DCMTK's Q/R archive on loopback, knowing the node as a C-MOVE destination."""

    def __init__(self, root: Path, node_port: int) -> None:
        self.port = free_port()
        db = root / "db"
        db.mkdir(parents=True)
        self.config = root / "dcmqrscp.cfg"
        self.config.write_text(
            f"NetworkTCPPort = {self.port}\nMaxPDUSize = 16384\nMaxAssociations = 16\n"
            f"HostTable BEGIN\nnode = ({NODE_AET}, 127.0.0.1, {node_port})\nHostTable END\n"
            "VendorTable BEGIN\nVendorTable END\n"
            f"AETable BEGIN\n{PACS_AET} {db} RW (200, 256mb) ANY\nAETable END\n")
        self.proc = subprocess.Popen([dcmtk("dcmqrscp"), "-c", str(self.config)],
                                     env=dcmtk_env(), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        self.stop()
        raise TimeoutError("dcmqrscp did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@pytest.fixture(params=["move", "get"])
def archive_with_study(
    request: pytest.FixtureRequest, node: tuple[StorageSCP, Recorder], tmp_path: Path
) -> Iterator[tuple[DcmQrScp, str, set[str]]]:
    """dcmqrscp holding the prior. DCMTK 3.6.7's C-MOVE sub-association does not propose
    Parametric Map Storage (its list of classes lacks it), so the C-MOVE study leaves that
    one object out; the C-GET study (our contexts, SCP role) carries every class."""
    server, _ = node
    archive = DcmQrScp(tmp_path / "pacs", server.port)
    skip = frozenset({PARAMETRIC_MAP}) if request.param == "move" else frozenset()
    try:
        study_uid, files, sops = _study(tmp_path / "prior", skip)
        result = _storescu(archive.port, PACS_AET, files)
        assert result.returncode == 0 and "Error" not in result.stdout + result.stderr, (
            result.stdout + result.stderr)
        yield archive, study_uid, sops
    finally:
        archive.stop()


@pytest.mark.parametrize("archive_with_study", ["move"], indirect=True)
def test_c_move_of_a_prior_with_non_image_objects_completes(
    node: tuple[StorageSCP, Recorder], archive_with_study: tuple[DcmQrScp, str, set[str]]
) -> None:
    server, _ = node
    archive, study_uid, sops = archive_with_study
    peer = PacsPeer(PACS_AET, "127.0.0.1", archive.port, calling_ae=NODE_AET, timeout_s=20)
    completed = move_study(peer, study_uid, NODE_AET)  # raises on any failed sub-operation
    assert completed == len(sops)
    assert _spool_sops(server.spool, study_uid) == sops


@pytest.mark.parametrize("archive_with_study", ["get"], indirect=True)
def test_c_get_of_a_prior_with_non_image_objects_completes(
    archive_with_study: tuple[DcmQrScp, str, set[str]], tmp_path: Path
) -> None:
    archive, study_uid, sops = archive_with_study
    peer = PacsPeer(PACS_AET, "127.0.0.1", archive.port, calling_ae=NODE_AET, timeout_s=20)
    out = tmp_path / "got"
    assert get_study(peer, study_uid, out) == len(sops)
    assert {pydicom.dcmread(p).SOPInstanceUID for p in out.glob("*.dcm")} == sops

