"""Fixtures for the inference room: bundle folders and tiny ONNX models written in tmp."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from inference.runtime import clear_session_cache

BUNDLE_TOML = """\
name = "toy-liver"
version = "0.0.1"
family = "segmentation"
intended_use = "tests only"
description = "random weights"
{model_line}

[inputs]
phases = ["AP", "PVP"]

[preprocessing]
spacing_mm = {spacing}
normalisation = "robust_scale"
patch_size = {patch}

[outputs]
labels = ["background", "liver", "tumour"]
output_activation = "{activation}"

[thresholds]
min_lesion_ml = {min_lesion_ml}

[training]
data = "none"
seed = 0
"""


def write_bundle_toml(folder: Path, *, model_file: str | None = "model.onnx",
                      spacing: tuple[float, float, float] = (2.0, 2.0, 3.0),
                      patch: tuple[int, int, int] = (8, 16, 16), activation: str = "logits",
                      min_lesion_ml: float = 0.2) -> Path:
    """Write a valid bundle.toml (the model file itself is the caller's business)."""
    folder.mkdir(parents=True, exist_ok=True)
    model_line = f'model_file = "{model_file}"' if model_file else ""
    text = BUNDLE_TOML.format(model_line=model_line, spacing=list(spacing), patch=list(patch),
                              activation=activation, min_lesion_ml=min_lesion_ml)
    path = folder / "bundle.toml"
    path.write_text(text)
    return path


def write_scale_model(path: Path, factor: float = 2.0) -> Path:
    """An ONNX graph y = factor * x with a dynamic [B, C, z, y, x] shape (no torch needed)."""
    shape = ["batch", "channels", "z", "y", "x"]
    graph = helper.make_graph(
        [helper.make_node("Mul", ["image", "factor"], ["logits"])], "scale",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, shape)],
        initializer=[helper.make_tensor("factor", TensorProto.FLOAT, [], [factor])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "toy"
    write_scale_model(folder / "model.onnx")
    write_bundle_toml(folder)
    return folder


@pytest.fixture
def make_bundle(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str = "toy", **kwargs: object) -> Path:
        folder = tmp_path / name
        write_scale_model(folder / "model.onnx")
        write_bundle_toml(folder, **kwargs)  # type: ignore[arg-type]
        return folder
    return make


@pytest.fixture(autouse=True)
def _fresh_sessions() -> None:
    clear_session_cache()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def toy_unet_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """A random-weight MONAI UNet exported with the project's helper, plus its bundle.toml.

    Session-scoped: exporting costs a second or two, and several tests read the same model.
    torch is imported here, not at module level, so tests that need no model stay light.
    """
    import torch
    from monai.networks.nets import UNet

    from inference.training.onnx_export import export_to_onnx

    torch.manual_seed(0)
    model = UNet(spatial_dims=3, in_channels=2, out_channels=3, channels=(4, 8), strides=(2,),
                 num_res_units=0)
    folder = tmp_path_factory.mktemp("toy-unet")
    with warnings.catch_warnings():  # tracer notes on MONAI's shape checks: benign here
        warnings.simplefilter("ignore")
        export_to_onnx(model, in_channels=2, patch_size=(8, 16, 16),
                       path=folder / "model.onnx")
    write_bundle_toml(folder, spacing=(2.0, 2.0, 3.0), patch=(8, 16, 16), activation="logits")
    return folder, model
