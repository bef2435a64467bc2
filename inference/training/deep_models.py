"""Networks of the deep MR response families (training side: torch allowed here).

Scaled down from the studies so that a 2-core CPU trains each within 30 minutes; the
architecture stays the study's (the bundles' model cards say by how much):

* :class:`InceptionCam` - seed 004: a small Inception-style CNN (stem, Inception block,
  reduction block, Inception block) shared by every sequence; one linear weight vector per
  sequence on its globally pooled features gives a per-sequence deep score, whose spatial
  decomposition is the sequence's class-activation map (CAM, Zhou et al. 2016).
* :class:`ResNetMil` - seed 000: a ResNet-family 2.5-D encoder (BasicBlocks) over every slice
  of every phase (the slice and its two neighbours as channels), a 2-layer 8-head Transformer
  over the slice instances, attention pooling (the slice weights) and an MLP head → P(ORR).

Self-attention is written out (no ``nn.MultiheadAttention``) so that the TorchScript ONNX
exporter never meets a fused fast path and ONNX Runtime reproduces it to float precision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DcrFusion", "InceptionCam", "MilHead", "ResNetMil", "two_point_five_d"]


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Inception(nn.Module):
    """Inception-A style block: 1x1 | 1x1→3x3 | 1x1→3x3→3x3 | avg-pool→1x1, concatenated."""

    def __init__(self, cin: int, branch: int) -> None:
        super().__init__()
        self.b1 = _conv(cin, branch, 1)
        self.b3 = nn.Sequential(_conv(cin, branch, 1), _conv(branch, branch))
        self.b5 = nn.Sequential(_conv(cin, branch, 1), _conv(branch, branch),
                                _conv(branch, branch))
        self.pool = nn.Sequential(nn.AvgPool2d(3, 1, 1, count_include_pad=False),
                                  _conv(cin, branch, 1))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.pool(x)], dim=1)


class _Reduction(nn.Module):
    """Reduction-A style: strided 3x3 | 1x1→3x3→strided 3x3 | max-pool, concatenated."""

    def __init__(self, cin: int, branch: int) -> None:
        super().__init__()
        self.b3 = _conv(cin, branch, 3, 2)
        self.b5 = nn.Sequential(_conv(cin, branch, 1), _conv(branch, branch),
                                _conv(branch, branch, 3, 2))
        self.pool = nn.MaxPool2d(3, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.b3(x), self.b5(x), self.pool(x)], dim=1)


class InceptionCam(nn.Module):
    """Seed 004's CNN, per sequence; input ``[B, S, 1, Y, X]``.

    ``forward`` returns the logit of disease control (training); :meth:`maps` the per-sequence
    scores ``[B, S]`` and CAMs ``[B, S, 1, Y, X]`` whose spatial mean is the score.
    """

    def __init__(self, sequences: int, width: int = 8, features: int = 32,
                 dropout: float = 0.2) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(_conv(1, 2 * w, 3, 2), _conv(2 * w, 2 * w))
        self.block1 = _Inception(2 * w, w)               # 4w channels
        self.reduce = _Reduction(4 * w, w)               # 2w + 4w = 6w channels
        self.block2 = _Inception(6 * w, 2 * w)           # 8w channels
        self.last = nn.Sequential(nn.Conv2d(8 * w, features, 1), nn.ReLU(inplace=True))
        self.weights = nn.Parameter(torch.zeros(sequences, features))
        self.bias = nn.Parameter(torch.zeros(1))
        self.dropout = nn.Dropout(dropout)
        self.sequences = sequences
        nn.init.normal_(self.weights, std=0.01)

    def activations(self, image: Tensor) -> Tensor:
        """Last-layer maps ``[B, S, K, h, w]``."""
        b, s = image.shape[0], image.shape[1]
        x = image.reshape(b * s, 1, image.shape[-2], image.shape[-1])
        a = self.last(self.block2(self.reduce(self.block1(self.stem(x)))))
        out: Tensor = a.reshape(b, s, a.shape[1], a.shape[2], a.shape[3])
        return out

    def forward(self, image: Tensor) -> Tensor:
        pooled = self.dropout(self.activations(image).mean(dim=(3, 4)))
        logit: Tensor = (pooled * self.weights).sum(dim=(1, 2)) + self.bias
        return logit

    def maps(self, image: Tensor) -> tuple[Tensor, Tensor]:
        a = self.activations(image)
        cam = torch.einsum("bskyx,sk->bsyx", a, self.weights)
        scores = cam.mean(dim=(2, 3))
        up = F.interpolate(cam, size=(image.shape[-2], image.shape[-1]), mode="bilinear",
                           align_corners=False)
        return scores, up.unsqueeze(2)


class DcrFusion(nn.Module):
    """Export wrapper: image ``[B, S, 1, Y, X]`` + raw clinical ``[B, F]`` → the SVM's input
    (per-sequence deep scores, then clinical values, skewed ones log-transformed) and CAMs."""

    def __init__(self, cnn: InceptionCam, log_columns: list[int], n_clinical: int) -> None:
        super().__init__()
        self.cnn = cnn
        mask = torch.zeros(max(n_clinical, 1), dtype=torch.bool)
        mask[log_columns] = True
        self.register_buffer("log_mask", mask[:n_clinical] if n_clinical else mask[:0])

    def forward(self, image: Tensor, clinical: Tensor) -> tuple[Tensor, Tensor]:
        scores, cam = self.cnn.maps(image)
        logged = torch.log1p(torch.clamp(clinical, min=0.0))
        mask: Tensor = self.log_mask  # type: ignore[assignment]
        values = torch.where(mask.unsqueeze(0), logged, clinical)
        return torch.cat([scores, values], dim=1), cam


# ------------------------------------------------------------------ seed 000


class _Basic(nn.Module):
    """ResNet BasicBlock (two 3x3 convolutions and an identity or 1x1 shortcut)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = (nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.short(x))


class _SelfAttention(nn.Module):
    """Multi-head self-attention, written out for a faithful ONNX export."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        h = self.heads
        qkv = self.qkv(x).reshape(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        weights = torch.softmax(q @ k.transpose(-1, -2) / (d // h) ** 0.5, dim=-1)
        out: Tensor = self.out((weights @ v).transpose(1, 2).reshape(b, n, d))
        return out


class _TransformerLayer(nn.Module):
    """Pre-norm Transformer encoder layer."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = _SelfAttention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(approximate="tanh"),
                                 nn.Linear(2 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop(self.attn(self.norm1(x)))
        out: Tensor = x + self.drop(self.mlp(self.norm2(x)))
        return out


class MilHead(nn.Module):
    """Instance features ``[B, N, K]`` → logit ``[B]`` and attention ``[B, N]``: linear
    projection + instance embeddings, 2 Transformer layers (8 heads), attention pooling, MLP."""

    def __init__(self, features: int, instances: int, dim: int = 64, heads: int = 8,
                 layers: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        self.project = nn.Linear(features, dim)
        self.position = nn.Parameter(torch.zeros(1, instances, dim))
        self.layers = nn.ModuleList(_TransformerLayer(dim, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.gate = nn.Sequential(nn.Linear(dim, dim // 2), nn.Tanh(), nn.Linear(dim // 2, 1))
        self.mlp = nn.Sequential(nn.Linear(dim, dim // 2), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(dim // 2, 1))
        nn.init.normal_(self.position, std=0.02)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        x = self.project(features) + self.position
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x)
        attention = torch.softmax(self.gate(x).squeeze(-1), dim=1)
        bag = (attention.unsqueeze(-1) * x).sum(dim=1)
        return self.mlp(bag).squeeze(-1), attention


class _HeadLogit(nn.Module):
    """Export wrapper: the head's logit only (the graph whose gradient Grad-CAM takes)."""

    def __init__(self, head: MilHead) -> None:
        super().__init__()
        self.head = head

    def forward(self, features: Tensor) -> Tensor:
        logit: Tensor = self.head(features)[0]
        return logit


def two_point_five_d(image: Tensor) -> Tensor:
    """``[B, P, Z, Y, X]`` → ``[B, P * (Z - 2), 3, Y, X]``: each inner slice with its two
    neighbours as channels (explicit slices: exports to plain ONNX Slice/Concat)."""
    z = image.shape[2]
    stacks = [image[:, :, i - 1:i + 2] for i in range(1, z - 1)]
    x = torch.stack(stacks, dim=2)  # [B, P, Z-2, 3, Y, X]
    return x.reshape(x.shape[0], x.shape[1] * x.shape[2], 3, x.shape[4], x.shape[5])


class ResNetMil(nn.Module):
    """Seed 000: image ``[B, P, Z, Y, X]`` → logit; :meth:`explained` adds the pieces the
    served Grad-CAM needs (activations, pooled features, attention)."""

    def __init__(self, phases: int, slices: int, width: int = 16, features: int = 64,
                 dim: int = 64, heads: int = 8, layers: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        w = width
        self.encoder = nn.Sequential(
            nn.Conv2d(3, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            _Basic(w, w), _Basic(w, 2 * w, 2), _Basic(2 * w, features))
        self.head = MilHead(features, phases * (slices - 2), dim, heads, layers, dropout)

    def activations(self, image: Tensor) -> Tensor:
        x = two_point_five_d(image)
        b, n = x.shape[0], x.shape[1]
        a = self.encoder(x.reshape(b * n, 3, x.shape[3], x.shape[4]))
        out: Tensor = a.reshape(b, n, a.shape[1], a.shape[2], a.shape[3])
        return out

    def forward(self, image: Tensor) -> Tensor:
        logit: Tensor = self.head(self.activations(image).mean(dim=(3, 4)))[0]
        return logit

    def explained(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """probability ``[B, 2]``, attention, activations, pooled features."""
        a = self.activations(image)
        f = a.mean(dim=(3, 4))
        logit, attention = self.head(f)
        p = torch.sigmoid(logit).unsqueeze(1)
        return torch.cat([1 - p, p], dim=1), attention, a, f


class MilExport(nn.Module):
    """Export wrapper of :class:`ResNetMil` with the served output order."""

    def __init__(self, model: ResNetMil) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.model.explained(image)


def head_logit(model: ResNetMil) -> nn.Module:
    """The MIL head as its own module (features → logit) for ``head.onnx``."""
    return _HeadLogit(model.head)
