"""Feature extractors for aligned faces, registered by name in :data:`BACKBONES`.

Every backbone takes ``images`` float32 (B, 3, S, S) in [0, 1] (RGB, see :func:`au_models.model.to_tensor`)
and ``landmarks`` float32 (B, 68, 2) in crop pixels (NaN where missing; only ``needs_landmarks``
backbones read them) and returns features (B, ``out_dim``). Its constructor keywords are its config,
recorded in checkpoints so the same module is rebuilt on load.

- ``compact``: a small plain CNN that keeps a coarse spatial map (AUs are local) -> fast on a CPU.
- ``resnet18``: torchvision's ResNet-18, random init or a weights file the user names (never downloaded).
- ``geometry``: OpenFace-style: normalised landmark coordinates + gradient-orientation histograms
  (HOG-like) of the whole crop and sampled around each landmark -> MLP.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fewshot.errors import CheckpointError, MissingWeightsError
from fewshot.registry import Registry

from .align import AlignConfig, canonical_template

BACKBONES: Registry[nn.Module] = Registry("backbone")

_MEAN = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)
_STD = torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1)


def _conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class CompactCNN(nn.Module):
    """Five strided 3x3 conv layers (112 -> 7 px map), a 1x1 squeeze, then a linear layer over the map.

    Keeping the 7x7 map (instead of global pooling) lets the features say *where* the skin moved.
    """

    needs_landmarks = False

    def __init__(self, crop_size: int = 112, width: int = 24, out_dim: int = 256, dropout: float = 0.2) -> None:
        super().__init__()
        self.config = dict(crop_size=crop_size, width=width, out_dim=out_dim, dropout=dropout)
        w = width
        self.body = nn.Sequential(
            _conv_bn(3, w, 2),  # S/2
            _conv_bn(w, 2 * w, 2),  # S/4
            _conv_bn(2 * w, 3 * w, 2),  # S/8
            _conv_bn(3 * w, 4 * w, 1),
            _conv_bn(4 * w, 6 * w, 2),  # S/16
            nn.Conv2d(6 * w, 32, 1),
            nn.ReLU(inplace=True),
        )
        side = math.ceil(crop_size / 16)
        self.fc = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(32 * side * side, out_dim), nn.ReLU(inplace=True))
        self.out_dim = out_dim

    def forward(self, images: torch.Tensor, landmarks: torch.Tensor | None = None) -> torch.Tensor:
        return self.fc(self.body((images - _MEAN) / _STD))


class ResNet18(nn.Module):
    """torchvision ResNet-18 trunk (global-pooled 512-d features)."""

    needs_landmarks = False

    def __init__(self, crop_size: int = 112, weights: str | None = None) -> None:
        super().__init__()
        from torchvision.models import resnet18

        # `weights` is recorded for provenance only; a checkpoint carries the trained weights itself.
        self.config = dict(crop_size=crop_size, weights=weights)
        net = resnet18(weights=None)
        if weights:
            p = Path(weights)
            if not p.is_file():
                raise MissingWeightsError(f"{p}: no ResNet-18 weights file; pass the path of a torchvision resnet18 .pth (never downloaded)")
            try:
                state = torch.load(p, map_location="cpu", weights_only=True)
                state = state.get("state_dict", state)
                missing, _ = net.load_state_dict({k.removeprefix("module."): v for k, v in state.items()}, strict=False)
            except Exception as e:  # noqa: BLE001 - any failure here means an unusable file
                raise CheckpointError(f"{p}: not a ResNet-18 state dict ({type(e).__name__}: {str(e)[:80]})") from None
            if any(not k.startswith("fc.") for k in missing):
                raise CheckpointError(f"{p}: ResNet-18 weights lack {len(missing)} tensors (e.g. {missing[0]}); wrong architecture")
        net.fc = nn.Identity()
        self.net = net
        self.out_dim = 512
        # ImageNet statistics: what pretrained torchvision weights expect.
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor, landmarks: torch.Tensor | None = None) -> torch.Tensor:
        return self.net((images - self.mean) / self.std)


def orientation_histograms(gray: torch.Tensor, bins: int = 8, cell: int = 8) -> torch.Tensor:
    """HOG-like map: (B, 1, H, W) in [0, 1] -> (B, bins, H/cell, W/cell) unsigned-orientation
    histograms of gradient magnitude (soft-binned), L2-normalised per cell."""
    kx = torch.tensor([[-1.0, 0.0, 1.0]]).view(1, 1, 1, 3)
    ky = kx.transpose(2, 3)
    gx = F.conv2d(F.pad(gray, (1, 1, 0, 0), mode="replicate"), kx)
    gy = F.conv2d(F.pad(gray, (0, 0, 1, 1), mode="replicate"), ky)
    mag = torch.sqrt(gx * gx + gy * gy + 1e-8)
    ang = torch.atan2(gy, gx) % math.pi  # unsigned orientation in [0, pi)
    pos = ang / math.pi * bins
    centres = torch.arange(bins, dtype=gray.dtype).view(1, bins, 1, 1) + 0.5
    dist = (pos - centres).abs()
    dist = torch.minimum(dist, bins - dist)  # circular
    weight = (1.0 - dist).clamp(min=0.0)
    hist = F.avg_pool2d(weight * mag, cell)
    return hist / (hist.norm(dim=1, keepdim=True) + 0.05)


class GeometryAppearance(nn.Module):
    """Landmark geometry + HOG-like local appearance -> MLP (OpenFace's recipe, learnt end to end).

    Features: the 68 aligned landmark coordinates relative to the template (missing points -> the
    template, i.e. "no displacement"), orientation histograms of the whole crop pooled to a 7x7 grid,
    and the histogram map sampled bilinearly at every landmark (local patches that follow the face).
    """

    needs_landmarks = True

    def __init__(self, crop_size: int = 112, bins: int = 8, hidden: int = 256, out_dim: int = 256, dropout: float = 0.2) -> None:
        super().__init__()
        self.config = dict(crop_size=crop_size, bins=bins, hidden=hidden, out_dim=out_dim, dropout=dropout)
        self.crop_size, self.bins = crop_size, bins
        self.register_buffer("template", torch.tensor(canonical_template(AlignConfig(crop_size=crop_size)), dtype=torch.float32), persistent=False)
        n_in = 68 * 2 + bins * 49 + bins * 68
        self.mlp = nn.Sequential(
            nn.Linear(n_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, out_dim), nn.ReLU(inplace=True),
        )  # fmt: skip
        self.out_dim = out_dim

    def forward(self, images: torch.Tensor, landmarks: torch.Tensor | None = None) -> torch.Tensor:
        b = images.shape[0]
        if landmarks is None:
            landmarks = self.template.expand(b, -1, -1)
        lm = torch.where(torch.isfinite(landmarks), landmarks, self.template.expand(b, -1, -1))
        geom = ((lm - self.template) / self.crop_size * 10.0).reshape(b, -1)
        gray = (0.299 * images[:, 0:1] + 0.587 * images[:, 1:2] + 0.114 * images[:, 2:3])
        hog = orientation_histograms(gray, self.bins)
        grid = F.adaptive_avg_pool2d(hog, 7).reshape(b, -1)
        where = (lm / self.crop_size * 2.0 - 1.0).unsqueeze(2)  # (B, 68, 1, 2) in [-1, 1]
        local = F.grid_sample(hog, where, mode="bilinear", padding_mode="border", align_corners=False)  # (B, bins, 68, 1)
        return self.mlp(torch.cat([geom, grid, local.reshape(b, -1)], dim=1))


@BACKBONES.register("compact", "small CNN (about 0.3 M parameters), fast on a CPU: the default")
def compact(**config) -> nn.Module:
    return CompactCNN(**config)


@BACKBONES.register("resnet18", "torchvision ResNet-18, random init or --weights FILE (never downloaded)")
def resnet18(**config) -> nn.Module:
    return ResNet18(**config)


@BACKBONES.register("geometry", "landmark geometry + HOG-like patches -> MLP (OpenFace-style)")
def geometry(**config) -> nn.Module:
    return GeometryAppearance(**config)
