"""Rebuild a bundle's trained UNet in torch from its ONNX file, to fine-tune it.

Bundles ship ONNX only (serving has no torch). The exporter keeps every convolution's
parameter name from the torch ``state_dict``; only the PReLU slopes are renamed
(``onnx::PRelu_N``), and they appear in the graph in the order the network runs them, which
for MONAI's UNet is the order of its ``state_dict`` (equal slopes may share one stored
tensor through Identity nodes). After loading, torch and ONNX Runtime
must agree on a random input, or the weights are refused: a silently wrong mapping would
fine-tune garbage.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from monai.networks.nets.unet import UNet
from onnx import numpy_helper

from inference.training.segmentation import SegmentationTrainingConfig, build_network

__all__ = ["WarmStartError", "unet_from_onnx"]

PARITY_TOLERANCE = 1e-3


class WarmStartError(ValueError):
    """The ONNX file is not a UNet of the expected architecture."""


def unet_from_onnx(path: Path, config: SegmentationTrainingConfig) -> UNet:
    """The torch UNet (architecture of ``config``) carrying the weights of ``path``."""
    graph = onnx.load(str(path)).graph
    named = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    first = named.get("model.0.conv.unit0.conv.weight")
    if first is None:
        raise WarmStartError(f"{path}: not a MONAI UNet exported by Hepatica "
                             "(no 'model.0.conv.unit0.conv.weight')")
    model = build_network(int(first.shape[1]), config)
    state = model.state_dict()
    # equal slopes (all 0.25 before training) are stored once, the others reach it by Identity
    alias = {node.output[0]: node.input[0] for node in graph.node if node.op_type == "Identity"}
    prelu_inputs = []
    for node in graph.node:
        if node.op_type == "PRelu":
            name = node.input[1]
            while name not in named and name in alias:
                name = alias[name]
            prelu_inputs.append(name)
    prelu_keys = [k for k in state if k.endswith("adn.A.weight")]
    if len(prelu_inputs) != len(prelu_keys):
        raise WarmStartError(f"{path}: {len(prelu_inputs)} PReLU slopes in the graph, the "
                             f"network has {len(prelu_keys)}: another architecture")
    values: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key in named:
            values[key] = torch.from_numpy(np.array(named[key])).reshape(tensor.shape)
    for key, name in zip(prelu_keys, prelu_inputs, strict=True):
        values[key] = torch.from_numpy(np.array(named[name])).reshape(state[key].shape)
    missing = [k for k in state if k not in values]
    if missing:
        raise WarmStartError(f"{path}: no weights for {missing[:3]}…: another architecture")
    model.load_state_dict(values)
    _check_parity(model, path, int(first.shape[1]), config.patch_zyx)
    return model


def _check_parity(model: UNet, path: Path, channels: int,
                  patch: tuple[int, int, int]) -> None:
    import onnxruntime as ort

    x = np.random.default_rng(0).random((1, channels, *patch), dtype=np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    reference = session.run(None, {session.get_inputs()[0].name: x})[0]
    model.eval()
    with torch.no_grad():
        mine = model(torch.from_numpy(x)).numpy()
    gap = float(np.max(np.abs(mine - reference)))
    if gap > PARITY_TOLERANCE:
        raise WarmStartError(f"{path}: torch and ONNX differ by {gap:.2g} after loading; "
                             "the architecture in the bundle's training record is not this "
                             "network's")
