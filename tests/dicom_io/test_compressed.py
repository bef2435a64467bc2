"""Compressed transfer syntaxes: real files made by DCMTK / pylibjpeg / OpenJPH, sent as they
are by DCMTK storescu to the StorageSCP, stored unchanged, and decoded to the original pixels
(exactly for lossless codecs, within a tolerance for lossy ones) by ``series_to_volume``."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    HTJ2KLossless,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from dicom_io.listener import ListenerSettings, StorageSCP
from dicom_io.sender import Peer, send_files
from dicom_io.series import load_study, series_to_volume
from dicom_io.sop_classes import ACCEPTED_TRANSFER_SYNTAXES
from dicom_io.spool import Spool, StoredInstance
from tests.dicom_io.conftest import dcmtk, dcmtk_env, make_series

pytestmark = [pytest.mark.network, pytest.mark.dcmtk]

SCP_AET = "HEPATICA"
ROWS = COLS = 48


@dataclass(frozen=True)
class Codec:
    """How to make one compressed file and how storescu proposes its syntax."""

    name: str
    syntax: UID
    make: Callable[[Path, Path], None]
    propose: tuple[str, ...] | None  # storescu options; () = a config file with exactly
    # `syntax`; None = DCMTK 3.6.7 does not know the syntax (HTJ2K): our sender sends it
    bits: int = 12
    max_error: float = 0.0  # 0 = lossless: identical pixels


def _tool(*args: str) -> Callable[[Path, Path], None]:
    def make(src: Path, dst: Path) -> None:
        subprocess.run([dcmtk(args[0]), *args[1:], str(src), str(dst)], check=True,
                       capture_output=True, timeout=30)
    return make


def _pydicom(syntax: UID, **kwargs: object) -> Callable[[Path, Path], None]:
    def make(src: Path, dst: Path) -> None:
        ds = pydicom.dcmread(src)
        ds.compress(syntax, **kwargs)  # type: ignore[arg-type]
        ds.save_as(dst, enforce_file_format=True)
    return make


def _openjph(syntax: UID, *options: str) -> Callable[[Path, Path], None]:
    """HTJ2K codestream by OpenJPH's ojph_compress from a 16-bit PGM, then encapsulated."""
    def make(src: Path, dst: Path) -> None:
        tool = shutil.which("ojph_compress")
        if tool is None:
            pytest.skip("ojph_compress (openjph-tools) is not installed")
        ds = pydicom.dcmread(src)
        pgm, j2c = dst.with_suffix(".pgm"), dst.with_suffix(".j2c")
        header = f"P5\n{ds.Columns} {ds.Rows}\n{2**ds.BitsStored - 1}\n".encode()
        pgm.write_bytes(header + ds.pixel_array.astype(">u2").tobytes())
        subprocess.run([tool, "-i", str(pgm), "-o", str(j2c), *options], check=True,
                       capture_output=True, timeout=30)
        ds.PixelData = encapsulate([j2c.read_bytes()])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = syntax
        ds.save_as(dst, enforce_file_format=True)
    return make


def _deflate(src: Path, dst: Path) -> None:
    subprocess.run([dcmtk("dcmconv"), "+td", str(src), str(dst)], check=True,
                   capture_output=True, timeout=30)


CODECS = [
    Codec("jpeg-baseline", JPEGBaseline8Bit, _tool("dcmcjpeg", "+eb"), ("-xy",), 8, 12.0),
    Codec("jpeg-extended", JPEGExtended12Bit, _tool("dcmcjpeg", "+ee"), ("-xx",), 12, 200.0),
    Codec("jpeg-lossless", JPEGLossless, _tool("dcmcjpeg", "+el"), ()),
    Codec("jpeg-lossless-sv1", JPEGLosslessSV1, _tool("dcmcjpeg", "+e1"), ("-xs",)),
    Codec("jpeg-ls", JPEGLSLossless, _tool("dcmcjpls", "+el"), ("-xt",)),
    Codec("jpeg-ls-near", JPEGLSNearLossless, _tool("dcmcjpls", "+en"), ("-xu",), 12, 2.0),
    Codec("j2k-lossless", JPEG2000Lossless, _pydicom(JPEG2000Lossless), ("-xv",)),
    Codec("j2k-lossy", JPEG2000, _pydicom(JPEG2000, j2k_cr=[8]), ("-xw",), 12, 200.0),
    Codec("htj2k-lossless", HTJ2KLossless,
          _openjph(HTJ2KLossless, "-reversible", "true", "-prog_order", "LRCP"), None),
    Codec("htj2k-lossy", HTJ2K, _openjph(HTJ2K, "-qstep", "0.001"), None, 12, 200.0),
    Codec("rle", RLELossless, _tool("dcmcrle"), ("-xr",)),
    Codec("deflate", DeflatedExplicitVRLittleEndian, _deflate, ("-xd",)),
]


def _originals(directory: Path, bits: int) -> list[Path]:
    """Three slices of a smooth pattern plus noise (realistic for lossy codecs)."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:ROWS, 0:COLS]
    datasets = make_series(3, rows=ROWS, cols=COLS, sop_class="1.2.840.10008.5.1.4.1.1.2",
                           modality="CT")
    top = 2**bits - 1
    for k, ds in enumerate(datasets):
        base = (np.sin(x / 7.0 + k) + np.cos(y / 9.0)) * 0.22 * top + 0.5 * top
        pixels = np.clip(base + rng.normal(0, top * 0.01, base.shape), 0, top)
        if bits == 8:
            ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
            ds.PixelData = pixels.astype(np.uint8).tobytes()
        else:
            ds.PixelData = pixels.astype(np.uint16).tobytes()
    directory.mkdir(parents=True)
    paths = []
    for ds in datasets:
        path = directory / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _config(path: Path, syntax: UID) -> tuple[str, ...]:
    """A storescu association profile proposing CT Image Storage with exactly ``syntax``."""
    path.write_text(
        "[[TransferSyntaxes]]\n[TS]\nTransferSyntax1 = " + syntax + "\n"
        "[[PresentationContexts]]\n[PC]\n"
        "PresentationContext1 = 1.2.840.10008.5.1.4.1.1.2\\TS\n"
        "[[Profiles]]\n[P]\nPresentationContexts = PC\n")
    return ("-xf", str(path), "P")


@pytest.fixture
def scp(tmp_path: Path) -> Iterator[tuple[StorageSCP, list[StoredInstance]]]:
    stored: list[StoredInstance] = []
    lock = threading.Lock()

    def note(item: StoredInstance) -> None:
        with lock:
            stored.append(item)

    server = StorageSCP(ListenerSettings(SCP_AET, "127.0.0.1", 0), Spool(tmp_path / "spool"),
                        note)
    server.start()
    yield server, stored
    server.stop()


def test_every_decodable_candidate_is_accepted() -> None:
    for codec in CODECS:
        assert codec.syntax in ACCEPTED_TRANSFER_SYNTAXES, codec.name


@pytest.mark.parametrize("codec", CODECS, ids=[c.name for c in CODECS])
def test_compressed_files_from_storescu_are_stored_as_sent_and_decode(
    codec: Codec, scp: tuple[StorageSCP, list[StoredInstance]], tmp_path: Path
) -> None:
    server, stored = scp
    originals = _originals(tmp_path / "plain", codec.bits)
    compressed_dir = tmp_path / "compressed"
    compressed_dir.mkdir()
    files = []
    for path in originals:
        target = compressed_dir / path.name
        codec.make(path, target)
        assert pydicom.dcmread(target).file_meta.TransferSyntaxUID == codec.syntax
        files.append(target)
    if codec.propose is None:
        report = send_files(files, Peer(SCP_AET, "127.0.0.1", server.port), retries=0)
        assert report.sent == len(files), report.failed
    else:
        propose = codec.propose or _config(tmp_path / "storescu.cfg", codec.syntax)
        result = subprocess.run(
            [dcmtk("storescu"), "-v", *propose, "-aet", "STORESCU", "-aec", SCP_AET,
             "127.0.0.1", str(server.port), *map(str, files)],
            capture_output=True, text=True, timeout=60, env=dcmtk_env(), check=False)
        assert result.returncode == 0, result.stdout + result.stderr
    assert len(stored) == len(files)
    for item in stored:  # kept exactly as sent: no transcoding on the way in
        assert pydicom.dcmread(item.path).file_meta.TransferSyntaxUID == codec.syntax
    (series,) = load_study(server.spool.study_dir(stored[0].study_uid))
    received = series_to_volume(series).array
    expected = series_to_volume(load_study(tmp_path / "plain")[0]).array
    error = np.abs(received - expected)
    if codec.max_error == 0:
        np.testing.assert_array_equal(received, expected)
    else:
        assert float(error.max()) <= codec.max_error, (codec.name, float(error.max()))
        assert float(error.max()) > 0, "a lossy codec that changed nothing was not exercised"
        assert float(error.mean()) < codec.max_error * 0.75

