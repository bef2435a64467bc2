"""Seed 002 (partial): three time points of arterial MRI → four risk classes and a
continuous risk, on MONAI's Swin-UNETR, with Grad-CAM++ computed inside the exported graph.

The three registered, liver-masked time points are the input channels. Swin-UNETR's Swin
encoder and its UNet-style decoder, stopped at a quarter of the input resolution (the study
repurposed the decoder for classification), then ReLU and global average pooling, a linear
layer to the four classes (low, low-medium, medium-high, high). The continuous risk is the
expected class index under the softmax, so it orders patients for a C-index.

Grad-CAM++ in the graph: after global average pooling a linear head makes dS_c/dA_k the
constant g_ck = W_ck / N, so with the exponential trick (Chattopadhay et al. 2018) the
per-location weights are alpha = g^2 / (2 g^2 + sum(A_k) g^3) and the map of class c is
ReLU(sum_k N alpha_ck ReLU(g_ck) A_k): no gradient needs computing at serving time.

Not yet done: the cohort data (three phantom time points), registration (SimpleITK rigid),
training CLI, serving with priors; see docs/deep_response.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["RISK_CLASSES", "SwinRisk", "SwinRiskExport", "grad_cam_pp_torch"]

RISK_CLASSES = ("low", "low-medium", "medium-high", "high")


class SwinRisk(nn.Module):
    """``[B, T, Z, Y, X]`` (Z, Y, X multiples of 32) → class logits ``[B, 4]``."""

    def __init__(self, timepoints: int = 3, feature_size: int = 12,
                 depths: tuple[int, int, int, int] = (1, 1, 1, 1),
                 heads: tuple[int, int, int, int] = (3, 3, 3, 3), classes: int = 4) -> None:
        super().__init__()
        from monai.networks.nets.swin_unetr import SwinUNETR

        self.swin = SwinUNETR(in_channels=timepoints, out_channels=classes,
                              feature_size=feature_size, depths=depths, num_heads=heads,
                              spatial_dims=3, norm_name="batch")
        self.classify = nn.Linear(2 * feature_size, classes)

    def activations(self, x: Tensor) -> Tensor:
        """ReLU of the decoder at 1/4 resolution ``[B, 2F, Z/4, Y/4, X/4]``."""
        m = self.swin
        hidden = m.swinViT(x, m.normalize)
        enc2, enc3 = m.encoder3(hidden[1]), m.encoder4(hidden[2])
        dec3 = m.decoder5(m.encoder10(hidden[4]), hidden[3])
        out: Tensor = F.relu(m.decoder3(m.decoder4(dec3, enc3), enc2))
        return out

    def forward(self, x: Tensor) -> Tensor:
        logits: Tensor = self.classify(self.activations(x).mean(dim=(2, 3, 4)))
        return logits


class SwinRiskExport(nn.Module):
    """Served outputs: class probabilities, continuous risk, Grad-CAM++ per class."""

    def __init__(self, model: SwinRisk) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        a = self.model.activations(image)
        logits = self.model.classify(a.mean(dim=(2, 3, 4)))
        p = torch.softmax(logits, dim=1)
        index = torch.arange(p.shape[1], dtype=p.dtype).unsqueeze(0)
        risk = (p * index).sum(dim=1, keepdim=True)
        n = float(a.shape[2] * a.shape[3] * a.shape[4])
        g = self.model.classify.weight / n                        # [C, K]
        total = a.sum(dim=(2, 3, 4))                               # [B, K]
        denominator = 2 * g.unsqueeze(0) ** 2 + total.unsqueeze(1) * g.unsqueeze(0) ** 3
        safe = torch.where(denominator.abs() > 1e-12, denominator,
                           torch.ones_like(denominator))
        alpha = torch.where(denominator.abs() > 1e-12, g.unsqueeze(0) ** 2 / safe,
                            torch.zeros_like(denominator))       # [B, C, K]
        weights = n * alpha * F.relu(g).unsqueeze(0)
        maps = F.relu(torch.einsum("bck,bkzyx->bczyx", weights, a))
        up = F.interpolate(maps, size=image.shape[2:], mode="trilinear", align_corners=False)
        return p, risk, up


def grad_cam_pp_torch(model: SwinRisk, image: Tensor, target: int) -> Tensor:
    """Reference Grad-CAM++ by autograd (exponential trick, first-order gradients only),
    before upsampling: ``[Z/4, Y/4, X/4]``."""
    model.eval()
    a = model.activations(image).detach().requires_grad_(True)
    score = model.classify(a.mean(dim=(2, 3, 4)))[0, target]
    (grad,) = torch.autograd.grad(score, a)
    g, values = grad[0], a[0].detach()
    denominator = 2 * g**2 + values.sum(dim=(1, 2, 3), keepdim=True) * g**3
    alpha = torch.where(denominator != 0, g**2 / denominator, torch.zeros_like(g))
    weights = (alpha * F.relu(g)).sum(dim=(1, 2, 3))
    return F.relu(torch.einsum("k,kzyx->zyx", weights, values))
