"""`hepatica models import`: a MONAI bundle made in the test becomes a served bundle; what an
importer cannot carry over is refused with exit 2 and the reason."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from inference.bundle import load_bundle
from plugin.cli import main
from tests.inference.test_import_monai_bundle import PREPROCESSING, write_bundle


def test_monai_bundle_import_by_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    root = write_bundle(tmp_path / "zoo")
    out = tmp_path / "bundles" / "imported"
    assert main(["models", "import", "monai-bundle", str(root), "--out", str(out),
                 "--name", "site-liver", "--version", "2.0.0"]) == 0
    bundle = load_bundle(out)
    assert (bundle.name, bundle.version, bundle.family) == ("site-liver", "2.0.0",
                                                            "segmentation")
    assert "written to" in capsys.readouterr().out


def test_a_transform_it_cannot_carry_is_refused(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    pre = copy.deepcopy(PREPROCESSING)
    pre.insert(1, {"_target_": "RandFlipd", "keys": "image", "prob": 0.5})
    root = write_bundle(tmp_path / "zoo", pre)
    code = main(["models", "import", "monai-bundle", str(root), "--out", str(tmp_path / "b")])
    assert code == 2
    assert "RandFlipd" in capsys.readouterr().out
    assert not (tmp_path / "b" / "bundle.toml").exists()
