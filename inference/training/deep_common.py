"""Shared training pieces of the deep response families: augmentation, a small binary
training loop, centre crops, ONNX export with named inputs/outputs, and graph merging.

Inputs arrive prepared by ``inference.deep_response.prepare`` on a crop widened by a margin;
training draws random in-plane shifts inside that margin (plus flips), evaluation and export
use the centre, which is exactly the crop serving prepares.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

__all__ = [
    "augment",
    "centre",
    "export_graph",
    "merge_graphs",
    "predict_logits",
    "rename_output",
    "train_binary",
]

Progress = Callable[[str, int, int], None]
FloatArray = npt.NDArray[np.float32]


def centre(x: FloatArray, margin: int) -> FloatArray:
    """The centre of margin-widened crops (last two axes)."""
    if margin == 0:
        return x
    return np.ascontiguousarray(x[..., margin:-margin, margin:-margin])


def augment(x: FloatArray, margin: int, rng: np.random.Generator) -> FloatArray:
    """Random in-plane shift within the margin and random flips, per sample; a small
    per-sample intensity gain (±5 %, every channel alike, so channel ratios - the signal -
    survive)."""
    out = []
    size_y, size_x = x.shape[-2] - 2 * margin, x.shape[-1] - 2 * margin
    for sample in x:
        dy, dx = (int(v) for v in rng.integers(0, 2 * margin + 1, 2))
        crop = sample[..., dy:dy + size_y, dx:dx + size_x]
        if rng.random() < 0.5:
            crop = crop[..., ::-1, :]
        if rng.random() < 0.5:
            crop = crop[..., :, ::-1]
        out.append(crop * float(rng.uniform(0.95, 1.05)))
    return np.ascontiguousarray(np.stack(out), dtype=np.float32)


def train_binary(model: nn.Module, x: FloatArray, y: npt.NDArray[np.int_], *, margin: int,
                 epochs: int, lr: float, batch: int, seed: int, weight_decay: float = 1e-4,
                 optimiser: str = "sgd", progress: Progress | None = None,
                 label: str = "training", validation: tuple[FloatArray, Any] | None = None,
                 patience: int = 0) -> list[float]:
    """Binary cross-entropy on augmented batches; learning rate divided by 10 when the
    epoch loss has not improved for ``max(3, epochs // 8)`` epochs (seed 004's plateau rule,
    shortened). With ``validation`` and ``patience`` (seed 000): stop after ``patience``
    epochs without a better validation loss and keep the best weights. Returns the loss per
    epoch."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt: torch.optim.Optimizer = (
        torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
        if optimiser == "sgd" else torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay))
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.1,
                                                         patience=max(3, epochs // 8))
    positives = float(y.mean()) if len(y) else 0.5
    pos_weight = torch.tensor([(1 - positives) / max(positives, 1e-3)])
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    history: list[float] = []
    best: tuple[float, dict[str, torch.Tensor]] | None = None
    flat = 0
    model.train()
    for epoch in range(epochs):
        order = rng.permutation(len(y))
        total = 0.0
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            if len(idx) < 2:
                continue
            xb = torch.from_numpy(augment(x[idx], margin, rng))
            yb = torch.from_numpy(y[idx].astype(np.float32))
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        history.append(total / max(len(y), 1))
        plateau.step(history[-1])
        if progress is not None:
            progress(f"{label}: epoch {epoch + 1}/{epochs}, loss {history[-1]:.3f}",
                     epoch + 1, epochs)
        if validation is not None and patience > 0:
            loss = _validation_loss(model, validation, margin, loss_fn)
            model.train()
            if best is None or loss < best[0] - 1e-4:
                best, flat = (loss, {k: v.detach().clone()
                                     for k, v in model.state_dict().items()}), 0
            else:
                flat += 1
                if flat >= patience:
                    break
    if best is not None:
        model.load_state_dict(best[1])
    model.eval()
    return history


def _validation_loss(model: nn.Module, validation: tuple[FloatArray, Any], margin: int,
                     loss_fn: nn.Module) -> float:
    x, y = validation
    logits = torch.from_numpy(predict_logits(model, x, margin).astype(np.float32))
    return float(loss_fn(logits, torch.from_numpy(np.asarray(y, np.float32))))


def predict_logits(model: nn.Module, x: FloatArray, margin: int, batch: int = 16
                   ) -> npt.NDArray[np.float64]:
    """The model's logits on the centre crops (eval mode, no gradient)."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch):
            out.append(model(torch.from_numpy(centre(x[start:start + batch], margin))).numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def export_graph(module: nn.Module, inputs: Mapping[str, torch.Tensor],
                 outputs: Sequence[str], path: Path, opset: int = 17) -> Path:
    """TorchScript ONNX export with named inputs/outputs and a dynamic batch axis."""
    path.parent.mkdir(parents=True, exist_ok=True)
    module.eval()
    names = list(inputs)
    dynamic = {n: {0: "batch"} for n in [*names, *outputs]}
    with torch.no_grad():
        torch.onnx.export(module, tuple(inputs.values()), str(path), dynamo=False,
                          opset_version=opset, input_names=names, output_names=list(outputs),
                          dynamic_axes=dynamic)
    return path


def rename_output(model: Any, old: str, new: str) -> None:
    """Rename a graph output (and every reference to it) in an ONNX ModelProto."""
    for node in model.graph.node:
        node.output[:] = [new if o == old else o for o in node.output]
        node.input[:] = [new if i == old else i for i in node.input]
    for output in model.graph.output:
        if output.name == old:
            output.name = new


def merge_graphs(first: Path, second: Path, io_map: Sequence[tuple[str, str]],
                 outputs: Sequence[str], path: Path) -> Path:
    """One ONNX graph: ``first`` feeding ``second`` through ``io_map``; keeps ``outputs``
    (names of either graph). The second graph's names get a prefix to avoid clashes."""
    import onnx
    from onnx import compose

    a, b = onnx.load(str(first)), onnx.load(str(second))
    b = compose.add_prefix(b, "second_")
    mapped = [(x, "second_" + y) for x, y in io_map]
    opsets: dict[str, int] = {}
    for model in (a, b):
        for item in model.opset_import:
            opsets[item.domain] = max(opsets.get(item.domain, 0), item.version)
    for model in (a, b):
        del model.opset_import[:]
        model.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in opsets.items())
        model.ir_version = max(a.ir_version, b.ir_version)
    keep = [o if o in {x.name for x in a.graph.output} else "second_" + o for o in outputs]
    merged = compose.merge_models(a, b, io_map=mapped, outputs=keep)
    for name in keep:
        if name.startswith("second_"):
            rename_output(merged, name, name[len("second_"):])
    onnx.checker.check_model(merged)
    onnx.save(merged, str(path))
    return path


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))
