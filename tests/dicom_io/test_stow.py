"""send_stow against a real Orthanc with its DICOMweb plugin, on loopback.

The result objects are a phantom's: SEG and TID 1500 SR from its truth masks and a heatmap
SC, built with ``export`` (the test composes the rooms as ``plugin`` does). Orthanc runs as a
plain archive (no Hepatica plugin), with ``OverwriteInstances`` as docs/orthanc.md sets it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicom_io.sender import SendError
from dicom_io.stow import send_stow, studies_endpoint
from dicom_io.synthetic import make_phantom, write_phantom_study
from dicom_io.synthetic.anatomy import PhantomSpec
from export.common import AlgorithmInfo, ResultIdentity
from export.sc import build_heatmap_image
from export.seg import build_segmentation
from export.sr import build_measurement_report
from tests.orthanc.orthanc_server import (
    DICOMWEB_PLUGIN,
    ORTHANC,
    PASSWORD,
    USER,
    OrthancServer,
    free_port,
)

pytestmark = [pytest.mark.network, pytest.mark.orthanc]

SEED = 424_260  # not a training (100000+) or validation (200000+) seed
MODEL = AlgorithmInfo("hepatica-liver-seg", "0.2.0", "segmentation", model_digest="ab" * 32)
AUTH = (USER, PASSWORD)


@dataclass(frozen=True)
class _Lesion:
    label: int
    volume_ml: float
    longest_diameter_mm: float
    viable_diameter_mm: float | None
    centroid_zyx: tuple[float, float, float]
    longest_diameter_endpoints_zyx: None = None


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """SEG, SR and one SC of a small two-lesion phantom, written as files."""
    folder = tmp_path_factory.mktemp("stow-results")
    phantom = make_phantom(SEED, PhantomSpec(rows=96, columns=96, slices=24,
                                             lesion_count=(2, 2), lesion_diameter_mm=(14, 20)))
    files = write_phantom_study(phantom, folder / "study")
    sources = sorted((pydicom.dcmread(p) for p in files if p.parent.name == "AP"),
                     key=lambda ds: float(ds.ImagePositionPatient[2]))
    study = str(sources[0].StudyInstanceUID)
    labels = phantom.lesion_labels.astype(np.int16)
    seg_id = ResultIdentity.derive(study, "stow-test", "seg", 901)
    seg = build_segmentation(sources, phantom.labels > 0, labels,
                             series_instance_uid=seg_id.series_instance_uid,
                             sop_instance_uid=seg_id.sop_instance_uid, series_number=901,
                             algorithm=MODEL, software_versions="hepatica test")
    lesions = [_Lesion(t.index, t.volume_ml, t.longest_diameter_mm, t.viable_diameter_mm,
                       t.centroid_zyx) for t in phantom.lesions]
    assert sorted(x.label for x in lesions) == sorted(set(np.unique(labels)) - {0})
    sr_id = ResultIdentity.derive(study, "stow-test", "sr", 902)
    sr = build_measurement_report(
        sources, seg, lesions, liver_volume_ml=1500.0, tumour_burden_pct=1.0,
        series_instance_uid=sr_id.series_instance_uid, sop_instance_uid=sr_id.sop_instance_uid,
        series_number=902, algorithm=MODEL, software_versions="hepatica test")
    z = len(sources) // 2
    sc_id = ResultIdentity.derive(study, "stow-test", "heatmap", 903, 1)
    sc = build_heatmap_image(
        phantom.phases["AP"][z].astype(np.float64), (labels[z] > 0).astype(np.float64),
        source_image=sources[z], phase_label="AP", caption_lines=[],
        series_instance_uid=sc_id.series_instance_uid, sop_instance_uid=sc_id.sop_instance_uid,
        series_number=903, instance_number=1, software_versions="hepatica test",
        algorithm=MODEL)
    paths = []
    for name, dataset in (("seg", seg), ("sr", sr), ("sc", sc)):
        paths.append(folder / f"{name}.dcm")
        dataset.save_as(paths[-1], enforce_file_format=True)
    return paths


def _need_orthanc() -> None:
    missing = [str(p) for p in (ORTHANC, DICOMWEB_PLUGIN) if not p.exists()]
    if missing:
        pytest.skip(f"Orthanc or its DICOMweb plugin not installed ({', '.join(missing)})")


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[OrthancServer]:
    """A plain Orthanc (DICOMweb on, no Hepatica plugin), stopped after the test."""
    _need_orthanc()
    server = OrthancServer(tmp_path / "orthanc", tmp_path / "unused.toml", python_plugin=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _dicomweb(server: OrthancServer) -> str:
    return f"{server.url}/dicom-web"


def _stored(server: OrthancServer, sop_uid: str) -> bytes:
    """The file Orthanc holds for ``sop_uid``, read over its REST API."""
    status, body = server.request("POST", "/tools/lookup", sop_uid.encode(), "text/plain")
    assert status == 200, body
    (match,) = [m for m in json.loads(body) if m["Type"] == "Instance"]
    status, data = server.request("GET", f"/instances/{match['ID']}/file")
    assert status == 200
    return data


def test_results_come_back_identical(archive: OrthancServer, results: list[Path]) -> None:
    progress: list[tuple[int, int]] = []
    report = send_stow(results, _dicomweb(archive), auth=AUTH,
                       progress=lambda done, total: progress.append((done, total)))
    assert (report.sent, report.failed) == (3, [])
    assert progress[-1] == (3, 3)
    for path in results:
        original = pydicom.dcmread(path)
        stored = _stored(archive, str(original.SOPInstanceUID))
        assert stored == path.read_bytes()  # Orthanc keeps the Part 10 file as sent
        assert pydicom.dcmread(pydicom.filebase.DicomBytesIO(stored)) == original


def test_sending_twice_keeps_one_copy_and_replaces(archive: OrthancServer, results: list[Path],
                                                   tmp_path: Path) -> None:
    """Same SOP Instance UIDs again: replaced, not doubled (as with C-STORE)."""
    assert send_stow(results, _dicomweb(archive), auth=AUTH).sent == 3
    sr = pydicom.dcmread(results[1])
    sr.SeriesDescription = "Hepatica liver and tumour measurements (re-run)"
    again = tmp_path / "sr.dcm"
    sr.save_as(again, enforce_file_format=True)
    report = send_stow([results[0], again, results[2]], _dicomweb(archive), auth=AUTH,
                       max_request_bytes=1)  # one request per file this time
    assert (report.sent, report.failed) == (3, [])
    assert len(archive.get("/instances")) == 3
    assert len(archive.get("/series")) == 3
    stored = pydicom.dcmread(pydicom.filebase.DicomBytesIO(_stored(archive, sr.SOPInstanceUID)))
    assert stored.SeriesDescription.endswith("(re-run)")


def test_refused_and_unreadable_files_are_reported(archive: OrthancServer,
                                                   results: list[Path], tmp_path: Path) -> None:
    """One bad file fails alone, the rest of its batch is stored (Orthanc answers 400 for the
    whole batch; the sender then sends one file per request)."""
    bad = pydicom.dcmread(results[2])
    del bad.SeriesInstanceUID
    bad.SOPInstanceUID = pydicom.uid.generate_uid()
    broken = tmp_path / "no-series-uid.dcm"
    bad.save_as(broken)
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not DICOM")
    report = send_stow([*results, broken, junk], _dicomweb(archive), auth=AUTH)
    assert report.sent == 3
    reasons = dict(report.failed)
    assert set(reasons) == {broken, junk}
    assert "HTTP 400" in reasons[broken] and "unreadable" in reasons[junk]
    assert len(archive.get("/instances")) == 3


def test_retries_until_the_archive_is_up(results: list[Path], tmp_path: Path) -> None:
    _need_orthanc()
    server = OrthancServer(tmp_path / "orthanc", tmp_path / "unused.toml", python_plugin=False)
    starter = threading.Timer(1.0, server.start)
    starter.start()
    try:
        report = send_stow(results, _dicomweb(server), auth=AUTH, retries=6, backoff_s=0.4)
        assert (report.sent, report.failed) == (3, [])
        assert len(server.get("/instances")) == 3
    finally:
        starter.join()
        server.stop()


def test_unreachable_archive_raises_after_retries(results: list[Path]) -> None:
    started = time.monotonic()
    with pytest.raises(SendError, match=r"could not send 3 of 3 files .* after 3 attempts"):
        send_stow(results, f"http://127.0.0.1:{free_port()}/dicom-web", retries=2,
                  backoff_s=0.05)
    assert time.monotonic() - started < 5


def test_wrong_credentials_raise_at_once(archive: OrthancServer, results: list[Path]) -> None:
    started = time.monotonic()
    with pytest.raises(SendError, match=r"HTTP 401.*credentials"):
        send_stow(results, _dicomweb(archive), auth=(USER, "wrong"), retries=5, backoff_s=1.0)
    assert time.monotonic() - started < 5  # not retried: retrying cannot fix it
    assert archive.get("/instances") == []


def test_endpoint_is_the_studies_resource() -> None:
    assert studies_endpoint("http://h:8042/dicom-web") == "http://h:8042/dicom-web/studies"
    assert studies_endpoint("http://h:8042/dicom-web/") == "http://h:8042/dicom-web/studies"
    assert studies_endpoint("https://h/wado/studies/") == "https://h/wado/studies"
