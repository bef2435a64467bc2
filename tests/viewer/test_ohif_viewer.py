"""Hepatica's results in a real viewer: OHIF (npm @ohif/app, prebuilt) in headless Chromium.

Done-when of issue 7: a phantom sent with storescu to a real Orthanc with the plugin is
processed; OHIF, reading Orthanc's DICOMweb through a same-origin proxy
(``tests/viewer/ohif_server.py``), opens the study, loads and hydrates the SEG, and the tumour
overlay sits on the phantom's truth lesion; the SR's measurements are parsed and listed.

How "the overlay sits on the tumour" is measured (``_check_overlay``), per truth lesion:
the viewport is moved to the slice through the truth centroid with cornerstone's own image
geometry (never the SEG's), and two screenshots are taken there, tumour segments shown and
hidden (the liver segment hidden in both), so the pixels that differ are the tumour overlay
and nothing else. The truth centroid (mm, LPS) is projected to screenshot pixels with the
viewport's ``worldToCanvas``. Passing needs: the overlay covers most of a disc of half the
lesion's equivalent radius around the projected centroid; the centroid of the overlay blob
there lies within 4 mm of it; and the overlay's total area stays within 2.5x the truth
lesion's cross-section (a misplaced, flipped or whole-slice overlay fails one of them).

Screenshots and an annotated check image go to ``tests/artifacts/viewer/``.
Needs ``tests/viewer/setup.sh`` (OHIF's dist and playwright-core; docker/setup.sh calls it),
Debian's chromium and Orthanc; skips without them.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from tests.orthanc.conftest import Node, phantom
from tests.orthanc.orthanc_server import PASSWORD, USER, storescu
from tests.orthanc.test_orthanc_integration import study_uid_of, wait_for
from tests.viewer.ohif_server import OHIF_DIST, OhifServer

pytestmark = [pytest.mark.orthanc, pytest.mark.browser, pytest.mark.network,
              pytest.mark.dcmtk, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
ARTIFACTS = HERE.parent / "artifacts" / "viewer"
CHROMIUM = Path("/usr/bin/chromium")
VIEWER_SEED = 424_246
"""A phantom with one 16-mm arterial-enhancing lesion; not a training or validation seed."""
SEG_DESCRIPTION = "Hepatica liver and tumour segmentation"
SR_DESCRIPTION = "Hepatica liver and tumour measurements"
DRIVER_TIMEOUT_S = 180.0
DIFF_THRESHOLD = 40  # RGB levels: overlay vs no overlay (the MR pixels are identical)

Array = npt.NDArray[Any]


def _missing_tools() -> list[str]:
    missing = [str(p) for p in (CHROMIUM,) if not p.exists()]
    if not (OHIF_DIST / "index.html").is_file():
        missing.append("tests/viewer/ohif (run tests/viewer/setup.sh)")
    if not (HERE / "node_modules" / "playwright-core").is_dir():
        missing.append("tests/viewer/node_modules/playwright-core (run tests/viewer/setup.sh)")
    if shutil.which("node") is None:
        missing.append("node")
    return missing


def _drive(job: dict[str, Any]) -> dict[str, Any]:
    out = Path(job["out_dir"])
    job_file = out / "job.json"
    job_file.write_text(json.dumps(job, indent=1))
    # its own process group: on a timeout, node and the Chromium it started end together
    driver = subprocess.Popen(["node", str(HERE / "drive_ohif.cjs"), str(job_file)], cwd=HERE,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    try:
        log, _ = driver.communicate(timeout=DRIVER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(driver.pid, signal.SIGKILL)
        log, _ = driver.communicate(timeout=30)
        log += f"\n(killed after {DRIVER_TIMEOUT_S} s)"
    result_file = out / "result.json"
    if not result_file.exists():
        raise AssertionError(f"driver wrote no result ({driver.returncode}):\n{log[-3000:]}")
    result: dict[str, Any] = json.loads(result_file.read_text())
    assert result.get("ok"), (f"OHIF run failed: {result.get('error')}\n"
                              f"steps: {result.get('steps')}\n"
                              f"console: {result.get('console_errors')}\n"
                              f"(see {out}/99-failure.png)")
    return result


def _rgb(path: Path) -> Array:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def _check_overlay(out: Path, lesion: dict[str, Any], truth: dict[str, Any],
                   mm_per_px: float) -> dict[str, float]:
    with_seg, without = _rgb(out / lesion["shots"]["overlay"]), _rgb(out / lesion["shots"]["plain"])
    # only the displayed image: the viewport's scrollbar and overlays change between shots
    left, top, width, height = (round(v) for v in lesion["image_rect"])
    diff = np.abs(with_seg - without).max(axis=2) > DIFF_THRESHOLD
    inside = np.zeros_like(diff)
    inside[top:top + height, left:left + width] = True
    overlay = diff & inside
    cx, cy = lesion["centre_px"]
    r_eq_mm = (3 * truth["volume_ml"] * 1000 / (4 * math.pi)) ** (1 / 3)
    r_eq_px = r_eq_mm / mm_per_px
    yy, xx = np.mgrid[0:overlay.shape[0], 0:overlay.shape[1]]
    core = (xx - cx) ** 2 + (yy - cy) ** 2 <= (r_eq_px / 2) ** 2
    coverage = float(overlay[core].mean()) if core.any() else 0.0
    # the overlay blob at (or nearest to) the projected centroid; the outline drawn by OHIF
    # makes the blob a filled disc with a rim, so close it before measuring its centre
    blobs, count = ndimage.label(ndimage.binary_closing(overlay, iterations=2))
    assert count > 0, "no tumour overlay anywhere in the viewport"
    distance = ndimage.distance_transform_edt(blobs == 0, return_indices=True)[1]
    iy, ix = (int(v) for v in distance[:, min(max(round(cy), 0), overlay.shape[0] - 1),
                                           min(max(round(cx), 0), overlay.shape[1] - 1)])
    blob = blobs == blobs[iy, ix]
    by, bx = ndimage.center_of_mass(blob)
    offset_mm = math.hypot(bx - cx, by - cy) * mm_per_px
    area_ratio = float(overlay.sum()) / (math.pi * r_eq_px**2)
    name = lesion["name"].replace(" ", "")
    _annotate(out / lesion["shots"]["overlay"], out / f"check-{name}.png", (cx, cy), r_eq_px,
              (bx, by))
    return {"coverage": coverage, "offset_mm": offset_mm, "area_ratio": area_ratio,
            "r_eq_px": r_eq_px}


def _annotate(src: Path, dst: Path, centre: tuple[float, float], radius: float,
              found: tuple[float, float]) -> None:
    """The overlay screenshot with the projected truth (cyan) and the overlay's centre (red)."""
    with Image.open(src) as image:
        canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    cx, cy = centre
    draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), outline=(0, 255, 255))
    draw.line((cx - radius - 6, cy, cx + radius + 6, cy), fill=(0, 255, 255))
    draw.line((cx, cy - radius - 6, cx, cy + radius + 6), fill=(0, 255, 255))
    fx, fy = found
    draw.ellipse((fx - 3, fy - 3, fx + 3, fy + 3), fill=(255, 0, 0))
    draw.text((cx + radius + 8, cy - 8), "truth centroid / radius (cyan), overlay centre (red)",
              fill=(0, 255, 255))
    canvas.save(dst)


def _result_instance(node: Node, study_uid: str, modality: str) -> str:
    """Orthanc's ID of the study's first instance of ``modality``."""
    found = json.loads(node.orthanc.request("POST", "/tools/lookup", study_uid.encode(),
                                            "text/plain")[1])
    series = node.orthanc.get(f"/studies/{found[0]['ID']}/series")
    return str(next(s["Instances"][0] for s in series
                    if s["MainDicomTags"]["Modality"] == modality))


def _sr_measurements(node: Node, study_uid: str) -> dict[str, dict[str, float]]:
    """Tracking identifier → concept name → value, from the SR stored in Orthanc."""
    sr_id = _result_instance(node, study_uid, "SR")
    status, body = node.orthanc.request("GET", f"/instances/{sr_id}/file")
    assert status == 200
    path = ARTIFACTS / "sr.dcm"
    path.write_bytes(body)
    ds = pydicom.dcmread(path)
    groups: dict[str, dict[str, float]] = {}

    def walk(items: Any, group: str | None) -> None:
        for item in items:
            name = item.ConceptNameCodeSequence[0].CodeMeaning
            if item.ValueType == "CONTAINER" and name == "Measurement Group":
                tracking = next(str(c.TextValue) for c in item.ContentSequence
                                if c.ConceptNameCodeSequence[0].CodeMeaning
                                == "Tracking Identifier")
                groups.setdefault(tracking, {})  # a lesion's TID 1411 and 1410 groups merge
                walk(item.ContentSequence, tracking)
            elif item.ValueType == "NUM" and group is not None:
                groups[group][name] = float(item.MeasuredValueSequence[0].NumericValue)
            elif item.ValueType == "CONTAINER" and "ContentSequence" in item:
                walk(item.ContentSequence, group)

    walk(ds.ContentSequence, None)
    return groups


@pytest.fixture
def viewer_tools() -> None:
    """Skips before Orthanc starts when the viewer's tools are not installed."""
    missing = _missing_tools()
    if missing:
        pytest.skip(f"viewer tools missing: {', '.join(missing)}")


def test_ohif_shows_the_tumour_overlay_on_the_tumour_and_lists_the_sr(
    viewer_tools: None, node: Node, phantom_dirs: dict[int, Path],
    tmp_path_factory: pytest.TempPathFactory
) -> None:
    study = phantom(phantom_dirs, tmp_path_factory, VIEWER_SEED)
    uid = study_uid_of(study)
    truth = json.loads((study / "ground_truth" / "truth.json").read_text())
    storescu(study / "dicom", node.orthanc.dicom_port)
    job = wait_for(node, uid, {"done", "failed", "dead"})
    assert job["state"] == "done", job

    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    lesions = [{"name": f"lesion {t['index']}", "centre_mm": t["centroid_mm"],
                "radius_mm": t["longest_diameter_mm"] / 2} for t in truth["lesions"]]
    server = OhifServer(node.orthanc.url, USER, PASSWORD).start()
    try:
        result = _drive({"base_url": server.url, "study_uid": uid, "out_dir": str(ARTIFACTS),
                         "seg_description": SEG_DESCRIPTION, "sr_description": SR_DESCRIPTION,
                         "timeout_ms": 60_000, "lesions": lesions})
    finally:
        server.stop()

    # The SEG: hydrated onto its source series, one tumour segment per SR lesion.
    seg_tags = node.orthanc.get(f"/instances/{_result_instance(node, uid, 'SEG')}/tags?simplify")
    source_series = seg_tags["ReferencedSeriesSequence"][0]["SeriesInstanceUID"]
    assert result["segmentation"]["series_instance_uid"] == source_series
    labels = [s["label"] for s in result["segmentation"]["segments"]]
    assert labels[0] == "Liver" and len(labels) >= 2, labels
    checks = {}
    for lesion, t in zip(result["lesions"], truth["lesions"], strict=True):
        assert lesion["slice_distance_mm"] < 1.6, lesion  # the truth centroid's own slice
        mm_per_px = (t["longest_diameter_mm"] / 2) / lesion["radius_px"]
        assert 0.1 < mm_per_px < 3.0, lesion  # the image fills a good part of the viewport
        check = _check_overlay(ARTIFACTS, lesion, t, mm_per_px)
        checks[lesion["name"]] = check
        assert check["coverage"] >= 0.8, (lesion["name"], check)
        assert check["offset_mm"] <= 4.0, (lesion["name"], check)
        assert 0.2 <= check["area_ratio"] <= 2.5, (lesion["name"], check)
    (ARTIFACTS / "checks.json").write_text(json.dumps(checks, indent=1))

    # The SR: OHIF's own SR handler parsed the TID 1500 groups, with the SR's values.
    stored = _sr_measurements(node, uid)
    parsed = {m["TrackingIdentifier"]: {x["label"]: x["value"] for x in m["labels"]}
              for m in result["sr_display_set"]["measurements"]}
    assert result["sr_display_set"]["isImagingMeasurementReport"] is True
    assert set(parsed) == set(stored) and any(k.startswith("Lesion") for k in parsed), parsed
    for tracking, values in stored.items():
        for name, value in values.items():
            shown = parsed[tracking][name]  # e.g. "16.16 mm"
            assert abs(float(shown.split()[0]) - value) <= 0.006 + 1e-9 * abs(value), (
                tracking, name, shown, value)
    lesion_groups = [k for k in parsed if k.startswith("Lesion")]
    assert len(lesion_groups) == len(labels) - 1  # SR lesions are the SEG's tumour segments
    assert "Lesion 1" in result["tag_browser_text"]

    # Every tracking UID has image coordinates (the liver its outline, each lesion its long
    # axis), so OHIF places every group and draws the report instead of "Something went
    # wrong". It opens on the first group's slice, the liver outline's, which is the slice
    # of Lesion 1's long axis: the viewport lists that lesion's values next to its line.
    assert all(m["coords"] >= 1 for m in result["sr_display_set"]["measurements"]), (
        result["sr_display_set"])
    assert "Something went wrong" not in result["sr_page_text"]
    listed = [float(v) for v in re.findall(r"Long axis: ([0-9.]+) mm",
                                           result["sr_viewport_text"])]
    assert listed and all(abs(v - stored["Lesion 1"]["Long axis"]) <= 0.5 for v in listed), (
        listed, stored["Lesion 1"])
    areas = [float(v) for v in re.findall(r"Area: ([0-9.]+) mm2", result["sr_viewport_text"])]
    assert len(areas) == 1 and abs(areas[0] - stored["Liver"]["Area"]) <= 0.006, areas
    # OHIF's measurement panel lists only measurements it can turn into its own tools; it has
    # no adapter for a 2-point POLYLINE or a polygon that is not cornerstone's, so it stays
    # empty (its screenshot, 06-sr-measurement-panel.png, documents this).
    (ARTIFACTS / "sr_viewer.json").write_text(json.dumps(
        {"viewport_text": result["sr_viewport_text"], "rehydratable": result["sr_rehydratable"],
         "measurement_panel": result["measurement_panel_text"]}, indent=1))
