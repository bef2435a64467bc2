"""Bundle loading: valid bundles parse into frozen dataclasses; bad ones name file and key."""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import pytest
from inference_helpers import write_bundle_toml, write_scale_model

from inference.bundle import Bundle, BundleError, discover_bundles, load_bundle

DOCS = Path(__file__).resolve().parents[2] / "docs" / "bundles.md"


def test_load_valid_bundle(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    assert bundle.name == "toy-liver" and bundle.family == "segmentation"
    assert bundle.inputs.phases == ("AP", "PVP")
    assert bundle.inputs.timepoints == 1 and bundle.inputs.clinical == ()
    assert bundle.spacing_mm == (2.0, 2.0, 3.0)
    assert bundle.patch_size == (8, 16, 16)
    assert bundle.outputs == ("background", "liver", "tumour")
    assert bundle.output_activation == "logits"
    assert bundle.thresholds == {"min_lesion_ml": 0.2}
    assert bundle.threshold("organ_margin_mm", 5.0) == 5.0
    assert bundle.training["seed"] == 0
    assert bundle.model_file == bundle_dir / "model.onnx"
    with pytest.raises(dataclasses.FrozenInstanceError):
        bundle.name = "other"  # type: ignore[misc]


def test_docs_example_is_a_valid_bundle(tmp_path: Path) -> None:
    """The example in docs/bundles.md must stay loadable."""
    example = re.search(r"```toml\n(.*?)```", DOCS.read_text(), re.S)
    assert example is not None
    (tmp_path / "bundle.toml").write_text(example.group(1))
    write_scale_model(tmp_path / "model.onnx")
    bundle = load_bundle(tmp_path)
    assert bundle.spacing_mm == (1.5, 1.5, 3.0) and bundle.patch_size == (32, 96, 96)
    assert bundle.training["metrics"]["dice_liver"] == 0.96


def test_model_file_defaults_to_the_only_onnx(tmp_path: Path) -> None:
    write_scale_model(tmp_path / "weights.onnx")
    write_bundle_toml(tmp_path, model_file=None)
    assert load_bundle(tmp_path).model_file.name == "weights.onnx"
    write_scale_model(tmp_path / "second.onnx")
    with pytest.raises(BundleError, match=r"model_file.*2 \.onnx files"):
        load_bundle(tmp_path)


@pytest.mark.parametrize(("old", "new", "key"), [
    ('name = "toy-liver"\n', "", "'name' is missing"),
    ('phases = ["AP", "PVP"]', "phases = []", "'inputs.phases' must name"),
    ('phases = ["AP", "PVP"]', 'phases = ["AP", "AP"]', "'inputs.phases' has duplicate"),
    ("spacing_mm = [2.0, 2.0, 3.0]", "spacing_mm = [2.0, 2.0]", "'preprocessing.spacing_mm'"),
    ("spacing_mm = [2.0, 2.0, 3.0]", "spacing_mm = [2.0, 0, 3.0]",
     "'preprocessing.spacing_mm'"),
    ("patch_size = [8, 16, 16]", "patch_size = [8, 16.5, 16]", "'preprocessing.patch_size'"),
    ('output_activation = "logits"', 'output_activation = "sigmoid"',
     "'outputs.output_activation'"),
    ("min_lesion_ml = 0.2", 'min_lesion_ml = "small"', "'thresholds.min_lesion_ml'"),
    ('model_file = "model.onnx"', 'model_file = "absent.onnx"', "'model_file' names"),
])
def test_bad_key_is_named(bundle_dir: Path, old: str, new: str, key: str) -> None:
    toml = bundle_dir / "bundle.toml"
    text = toml.read_text()
    assert old in text
    toml.write_text(text.replace(old, new, 1))
    with pytest.raises(BundleError) as info:
        load_bundle(bundle_dir)
    assert str(toml) in str(info.value)
    assert key in str(info.value)


def test_missing_or_invalid_file(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"bundle\.toml: not found"):
        load_bundle(tmp_path)
    (tmp_path / "bundle.toml").write_text("name = ")
    with pytest.raises(BundleError, match="not valid TOML"):
        load_bundle(tmp_path)


def test_discover_skips_broken_bundles(tmp_path: Path, make_bundle: object,
                                       caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path
    make_bundle("b")  # type: ignore[operator]
    make_bundle("a")  # type: ignore[operator]
    (root / "broken").mkdir()
    (root / "broken" / "bundle.toml").write_text('name = "x"\n')
    (root / "not-a-bundle").mkdir()
    with caplog.at_level(logging.WARNING):
        found = discover_bundles(root)
    assert [b.path.name for b in found] == ["a", "b"]
    assert all(isinstance(b, Bundle) for b in found)
    assert "broken" in caplog.text
    with pytest.raises(BundleError):
        discover_bundles(root, strict=True)
    assert [b.path.name for b in discover_bundles(root / "a", root / "missing")] == ["a"]
