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


FIRST_LAYER = ("model.0.conv.unit0.conv.weight", "model.0.residual.weight")


def unet_from_onnx(path: Path, config: SegmentationTrainingConfig,
                   in_channels: int | None = None) -> UNet:
    """The torch UNet (architecture of ``config``) carrying the weights of ``path``.

    ``in_channels`` 1 for a multi-channel file sums the first layer over its input channels:
    the network then computes on one image what the original computed on that image given
    in every channel, a start for a single-series network that already knows livers and
    tumours.
    """
    graph = onnx.load(str(path)).graph
    named = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    first = named.get(FIRST_LAYER[0])
    if first is None:
        raise WarmStartError(f"{path}: not a MONAI UNet exported by Hepatica "
                             f"(no {FIRST_LAYER[0]!r})")
    stored = int(first.shape[1])
    wanted = stored if in_channels is None else in_channels
    if wanted not in (stored, 1):
        raise WarmStartError(f"{path}: has {stored} input channels; only the same number or "
                             f"1 (summed) can be loaded, not {wanted}")
    if wanted != stored:
        for key in FIRST_LAYER:
            if key in named:
                named[key] = named[key].sum(axis=1, keepdims=True)
    model = build_network(wanted, config)
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
    _check_parity(model, path, stored, wanted, config.patch_zyx)
    return model


def _check_parity(model: UNet, path: Path, stored: int, channels: int,
                  patch: tuple[int, int, int]) -> None:
    import onnxruntime as ort

    x = np.random.default_rng(0).random((1, channels, *patch), dtype=np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = np.repeat(x, stored, axis=1) if channels != stored else x
    reference = session.run(None, {session.get_inputs()[0].name: feed})[0]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        mine = model(torch.from_numpy(x)).numpy()
    model.train(was_training)
    gap = float(np.max(np.abs(mine - reference)))
    if gap > PARITY_TOLERANCE:
        raise WarmStartError(f"{path}: torch and ONNX differ by {gap:.2g} after loading; "
                             "the architecture in the bundle's training record is not this "
                             "network's")
