"""Output heads over backbone features (B, D).

- :class:`OccurrenceHead`: multi-label AU occurrence logits (B, n_aus); sigmoid gives P(present).
- :class:`IntensityHead`: AU intensity (B, n_intensity) on the FACS 0..5 scale (5 * sigmoid).
- :class:`ExpressionHead`: logits (B, 8) over :data:`EXPRESSIONS` (softmax).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

# AffectNet's 8 classes in AffectNet's order: neutral + the 7 basic emotions.
EXPRESSIONS: tuple[str, ...] = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt")
MAX_INTENSITY = 5.0


class OccurrenceHead(nn.Module):
    def __init__(self, in_dim: int, n_aus: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, n_aus)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)


class IntensityHead(nn.Module):
    def __init__(self, in_dim: int, n_aus: int) -> None:
        super().__init__()
        with warnings.catch_warnings():  # a model without intensity AUs has an empty (no-op) layer
            warnings.simplefilter("ignore", UserWarning)
            self.linear = nn.Linear(in_dim, n_aus)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return MAX_INTENSITY * torch.sigmoid(self.linear(features))


class ExpressionHead(nn.Module):
    def __init__(self, in_dim: int, n_classes: int = len(EXPRESSIONS)) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, n_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)
