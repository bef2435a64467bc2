"""`hepatica inspect` on a phantom; the real SEG and SR objects of other tools read cleanly."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from dicom_io.synthetic import PhantomSpec, make_phantom, write_phantom_study
from plugin.cli.main import main
from tests.shared_data import REAL_DATA

REAL = REAL_DATA
TINY = PhantomSpec(rows=64, columns=64, slices=12, pixel_spacing_mm=6.0, slice_spacing_mm=12.0)


def test_inspect_json_names_labels_and_choices(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    write_phantom_study(make_phantom(4, replace(TINY, vendor="ge", packaging="dynamic",
                                                ignored_series=True)), tmp_path)
    assert main(["inspect", str(tmp_path / "dicom"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    labels = [(s["temporal_position"], s["label"]) for s in report["series"]
              if s["temporal_position"]]
    assert labels == [(1, "PRE"), (2, "AP"), (3, "PVP"), (4, "DP")]
    assert report["choices"]["AP"]["temporal_position"] == 2
    assert all(s["reason"] for s in report["series"])


def _real(modality: str) -> list[Path]:
    out = []
    for path in sorted(REAL.rglob("*.dcm")):
        try:
            if pydicom.dcmread(path, stop_before_pixels=True).Modality == modality:
                out.append(path)
        except Exception:  # not DICOM (or not readable as such): not part of this check
            continue
    return out


def test_real_seg_and_sr_objects_read_without_error() -> None:
    segs, srs = _real("SEG"), _real("SR")
    assert segs and srs
    for path in segs:
        seg = hd.seg.segread(path)
        assert seg.number_of_segments >= 1, path
    for path in srs:
        hd.sr.srread(path)
