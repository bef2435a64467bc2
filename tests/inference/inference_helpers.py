"""Helpers for the inference tests: bundle.toml text and a tiny ONNX graph, written in tmp.

A module with a unique name rather than ``conftest`` so that test files can import it
without depending on which room's conftest pytest loaded first.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

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
