"""Seed 000: four-phase MRI → objective response (ORR), a 2.5-D ResNet-family encoder and a
Transformer multiple-instance head, trained and exported with its Grad-CAM pieces.

Every slice through the tumour (crop slices 1 … Z-2), with its two neighbours as channels,
of every phase is one instance; the encoder is shared; the head (``deep_models.MilHead``:
linear projection, 2 Transformer layers with 8 heads, attention pooling, MLP) gives P(ORR)
and the slice attention weights. AdamW with weight decay and early stopping on an internal
validation split, as the study (learning rate higher: no ImageNet start here).

Exported: ``model.onnx`` (image → probability, attention, activations, features) and
``head.onnx`` (features → logit), whose gradient ``inference.deep_response`` takes by central
differences in ONNX Runtime for Grad-CAM of the top-attended slices.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import train_test_split

from inference.training.deep_common import export_graph, predict_logits, train_binary
from inference.training.deep_models import MilExport, ResNetMil, head_logit

__all__ = ["OrrConfig", "OrrModel", "export_orr", "fit_orr", "grad_cam_torch", "instance_layout",
           "onnx_parity"]

Progress = Callable[[str, int, int], None]
FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class OrrConfig:
    """Network size and schedule; defaults are the shipped (scaled-down) recipe."""

    width: int = 8
    features: int = 32
    dim: int = 32
    heads: int = 8
    layers: int = 2
    epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch: int = 8
    patience: int = 5
    validation: float = 0.15
    margin: int = 8
    seed: int = 0


@dataclass
class OrrModel:
    model: ResNetMil
    metrics: dict[str, Any] = field(default_factory=dict)


def instance_layout(phases: Sequence[str], slices: int) -> tuple[list[str], list[int]]:
    """Channel and crop slice of each instance, in the encoder's instance order."""
    names = [p for p in phases for _ in range(1, slices - 1)]
    zs = [z for _ in phases for z in range(1, slices - 1)]
    return names, zs


def fit_orr(images: FloatArray, y: npt.NDArray[np.int_], config: OrrConfig = OrrConfig(),
            progress: Progress | None = None) -> OrrModel:
    """Train on margin-widened ``[N, P, Z, Y, X]`` crops with early stopping on a
    stratified validation split."""
    torch.manual_seed(config.seed)
    model = ResNetMil(images.shape[1], images.shape[2], config.width, config.features,
                      config.dim, config.heads, config.layers)
    index = np.arange(len(y))
    stratify = y if min(np.bincount(y, minlength=2)) >= 2 else None
    train, val = train_test_split(index, test_size=config.validation,
                                  random_state=config.seed, stratify=stratify)
    history = train_binary(model, images[train], y[train], margin=config.margin,
                           epochs=config.epochs, lr=config.lr, batch=config.batch,
                           seed=config.seed, weight_decay=config.weight_decay,
                           optimiser="adamw", progress=progress, label="ResNet-MIL",
                           validation=(images[val], y[val]), patience=config.patience)
    logits = predict_logits(model, images[val], config.margin)
    both = len(set(y[val].tolist())) == 2
    auc = float(roc_auc_score(y[val], logits)) if both else float("nan")
    threshold = 0.5
    if both:
        fpr, tpr, cuts = roc_curve(y[val], 1 / (1 + np.exp(-logits)))
        threshold = float(np.clip(cuts[int(np.argmax(tpr - fpr))], 1e-6, 1 - 1e-6))
    return OrrModel(model, {"epochs_run": len(history), "final_loss": round(history[-1], 4),
                            "validation_patients": len(val),
                            "validation_auc": round(auc, 4),
                            "threshold_youden_validation": round(threshold, 4)})


def export_orr(model: OrrModel, crop_zyx: Sequence[int], phases: int, out_dir: Path
               ) -> tuple[Path, Path]:
    """``model.onnx`` and ``head.onnx`` beside each other; the head in float64 so that the
    served Grad-CAM's finite differences are exact to many digits."""
    net = model.model.eval()
    image = torch.zeros(1, phases, *crop_zyx)
    main = export_graph(MilExport(net), {"image": image},
                        ["probability", "attention", "activations", "features"],
                        out_dir / "model.onnx")
    instances = phases * (crop_zyx[0] - 2)
    features = torch.zeros(1, instances, net.head.project.in_features, dtype=torch.float64)
    head64 = copy.deepcopy(head_logit(net)).double().eval()
    head = export_graph(head64, {"features": features}, ["logit"], out_dir / "head.onnx")
    return main, head


def grad_cam_torch(model: ResNetMil, image: FloatArray, instances: Sequence[int]
                   ) -> FloatArray:
    """Reference Grad-CAM by autograd (maps before upsampling, ``[len(instances), h, w]``):
    ReLU(sum_k mean_ij(dlogit/dA_k) A_k), the quantity serving approximates."""
    model.eval()
    x = torch.from_numpy(image[None])
    a = model.activations(x).detach().requires_grad_(True)
    logit, _ = model.head(a.mean(dim=(3, 4)))
    (grad,) = torch.autograd.grad(logit.sum(), a)
    weights = grad.mean(dim=(3, 4))[0]  # [N, K]
    cams = torch.relu(torch.einsum("nk,nkyx->nyx", weights, a[0].detach()))
    return np.asarray(cams[list(instances)].numpy(), np.float32)


def onnx_parity(model: OrrModel, main: Path, head: Path, images: FloatArray) -> dict[str, float]:
    """Largest |ONNX − torch| of probability, attention and head logit."""
    import onnxruntime as ort

    net = model.model.eval()
    s_main = ort.InferenceSession(str(main), providers=["CPUExecutionProvider"])
    s_head = ort.InferenceSession(str(head), providers=["CPUExecutionProvider"])
    p, att, _, feats = s_main.run(None, {"image": images})
    with torch.no_grad():
        p_ref, att_ref, _, f_ref = net.explained(torch.from_numpy(images))
        logit_ref = net.head(f_ref)[0]
    logit = s_head.run(None, {"features": np.asarray(feats, np.float64)})[0]
    return {"probability": float(np.max(np.abs(np.asarray(p) - p_ref.numpy()))),
            "attention": float(np.max(np.abs(np.asarray(att) - att_ref.numpy()))),
            "head_logit": float(np.max(np.abs(np.asarray(logit) - logit_ref.numpy())))}
