"""Export a trained torch model to ONNX for a bundle (training side: torch allowed here).

Serving runs ONNX only, so every family leaves training through this one function: the
TorchScript-based exporter (``dynamo=False``) with a dynamic batch axis, so the serving
sliding window can batch patches, and a fixed opset that the deployed onnxruntime supports.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["DEFAULT_OPSET", "INPUT_NAME", "OUTPUT_NAME", "export_to_onnx"]

DEFAULT_OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "logits"


def export_to_onnx(model: torch.nn.Module, in_channels: int, patch_size: Sequence[int],
                   path: str | Path, opset: int = DEFAULT_OPSET) -> Path:
    """Write ``model`` as ONNX taking ``[B, in_channels, *patch_size]`` float32; returns path.

    The model is put in eval mode (dropout/batch-norm as at inference) and traced on CPU
    with a zero input of the patch shape; only the batch axis is dynamic because the spatial
    size is fixed by the bundle's patch size (and TensorRT builds faster for fixed shapes).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    example = torch.zeros((1, in_channels, *(int(p) for p in patch_size)), dtype=torch.float32)
    try:
        with torch.no_grad():
            torch.onnx.export(
                model, (example,), str(target), dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            )
    finally:
        model.train(was_training)
    return target
