"""The shipped segmentation model was trained on default phantoms: their output is frozen.

Any change to the generator that shifts the default random draws, the tissue table or the
writer would silently move the training distribution away from the shipped weights, so
the default arrays and written study are pinned by checksum. New features must be opt-in
and draw from their own random stream.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pydicom
import pytest

from dicom_io.synthetic import PhantomSpec, make_phantom, write_phantom_study

_LABELS = "709afa32945d0b956a1973d8599b34c0e6f0f02c0443cc604ca722698e3412ad"
_LESIONS = "68820d94c64d3cac365ff2e92b74227de8d9f92f2129dbec60b628b9df97ecad"
_AP = {"MR": "e3ef57f9b274a16bb742f0fdd0168990c051a4894d8877950cebcfa0b1e01dbb",
       "CT": "4d05139f1dc3352cdb90fa5f344894aebdb0df9a4645ba9ce6a542dcf429e973"}
_STUDY = "3b2a2de44c204330ea1453553055a4d31d3f39ac8993a56c3de42cb682ac155a"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("modality", ["MR", "CT"])
def test_default_phantom_arrays_are_frozen(modality: str) -> None:
    spec = None if modality == "MR" else PhantomSpec(modality="CT")
    phantom = make_phantom(100003, spec)
    assert _sha(phantom.labels.tobytes()) == _LABELS
    assert _sha(phantom.lesion_labels.tobytes()) == _LESIONS
    assert _sha(phantom.phases["AP" if modality == "MR" else "CT_AP"].tobytes()) == _AP[modality]


def test_default_written_study_is_frozen(tmp_path: Path) -> None:
    """Every header element and pixel of every file, and truth.json (file meta excluded)."""
    files = write_phantom_study(make_phantom(7), tmp_path)
    digest = hashlib.sha256()
    for path in sorted(files):
        ds = pydicom.dcmread(path)
        del ds.file_meta
        digest.update(str(path.relative_to(tmp_path)).encode())
        for element in ds:
            digest.update(str(element.tag).encode())
            value = element.value
            digest.update(value if element.keyword == "PixelData" else repr(value).encode())
    digest.update((tmp_path / "ground_truth" / "truth.json").read_bytes())
    assert len(files) == 256
    assert digest.hexdigest() == _STUDY
