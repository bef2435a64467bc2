"""export.sc: RGB heatmap secondary capture with burned-in text."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from export_testutils import SOFTWARE_VERSIONS, dciodvfy_errors, needs_dciodvfy
from pydicom.dataset import Dataset

from export.common import RESEARCH_USE_TEXT, ResultIdentity
from export.sc import build_heatmap_image, render_heatmap


def _probability(level: float) -> npt.NDArray[np.float64]:
    """A square of probability ``level`` in an otherwise empty slice."""
    p = np.zeros((64, 64))
    p[20:36, 20:36] = level
    return p


def _build(source: Dataset, level: float = 0.9) -> hd.sc.SCImage:
    ident = ResultIdentity.derive(source.StudyInstanceUID, "0.1.0", "heatmap", 903, 4)
    return build_heatmap_image(
        source.pixel_array.astype(np.float64),
        _probability(level),
        source_image=source,
        phase_label="AP — arterial phase",
        caption_lines=["Tumour probability, slice 4 of 8", "hepatica-liver-seg 0.1.0"],
        series_instance_uid=ident.series_instance_uid,
        sop_instance_uid=ident.sop_instance_uid,
        series_number=ident.series_number,
        instance_number=ident.instance_number,
        software_versions=SOFTWARE_VERSIONS,
    )


@needs_dciodvfy
@pytest.mark.dcmtk
def test_sc_passes_dciodvfy(source_images: list[Dataset], tmp_path: Path) -> None:
    path = tmp_path / "sc.dcm"
    _build(source_images[3]).save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []


def test_sc_header(source_images: list[Dataset], tmp_path: Path) -> None:
    source = source_images[3]
    path = tmp_path / "sc.dcm"
    built = _build(source)
    built.save_as(path, enforce_file_format=True)
    sc = pydicom.dcmread(path)
    assert sc.StudyInstanceUID == source.StudyInstanceUID
    assert sc.PatientName == source.PatientName
    assert sc.BurnedInAnnotation == "YES"
    assert sc.Manufacturer == "Hepatica"
    assert sc.SoftwareVersions == SOFTWARE_VERSIONS
    assert "Hepatica" in sc.SeriesDescription
    assert sc.ImageComments == RESEARCH_USE_TEXT
    assert sc.PhotometricInterpretation == "RGB"
    assert list(sc.PatientOrientation) == ["L", "P"]
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert sc.pixel_array.shape[2] == 3
    assert _build(source).SOPInstanceUID == built.SOPInstanceUID


def test_sc_overlay_visible_above_half(source_images: list[Dataset]) -> None:
    """p = 0.9 must change the picture; p = 0.1 must leave it nearly as is."""
    background = source_images[3].pixel_array.astype(np.float64)

    def draw(level: float) -> npt.NDArray[np.int64]:
        pixels = render_heatmap(background, _probability(level), title="AP", caption_lines=["x"])
        return pixels.astype(np.int64)

    empty, high, low = draw(0.0), draw(0.9), draw(0.1)
    assert np.abs(high - empty).sum() > 20 * np.abs(low - empty).sum()


def test_sc_burns_in_disclaimer_band(source_images: list[Dataset]) -> None:
    """The disclaimer is drawn in yellow along the bottom edge of every image."""
    pixels = _build(source_images[3]).pixel_array
    band = pixels[-40:].reshape(-1, 3).astype(int)
    yellow = (band[:, 0] > 200) & (band[:, 1] > 180) & (band[:, 2] < 80)
    assert yellow.sum() > 200


def test_sc_rejects_mismatched_shapes(source_images: list[Dataset]) -> None:
    with pytest.raises(ValueError, match="same 2-D"):
        render_heatmap(np.zeros((64, 64)), np.zeros((32, 64)), title="AP", caption_lines=[])


def test_sc_renders_fast(source_images: list[Dataset]) -> None:
    """Budget: 0.3 s per image (median, after the first, which loads fonts)."""
    source = source_images[3]
    _build(source)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        _build(source)
        times.append(time.perf_counter() - start)
    assert statistics.median(times) < 0.3
