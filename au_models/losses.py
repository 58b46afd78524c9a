"""The one label convention, loss and positive-weight rule of base training and adaptation.

Labels in memory are float arrays with **NaN = unknown**: occurrence 0/1, intensity FACS 0..5,
expression a class index (NaN unknown). Files that store integers (the aligned HDF5 cache, a
checkpoint's replay and validation buffers) write -1 for unknown; :func:`occurrence_targets` and
:func:`expression_targets` are the only places that read that encoding.

Loss (:class:`AULoss`), unknown labels masked out:
``BCE-with-logits(occurrence; pos_weight) + intensity_weight * mean(((intensity - y) / 5)^2)
+ expression_weight * cross-entropy(expression)``.

Positive weights (:func:`positive_weights`): per AU ``(1 - p) / max(p, 0.05)`` of the share ``p`` of
positives among the known labels, clipped to [0.2, 10]; 1 for an AU with no known label.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MIN_POSITIVE_SHARE = 0.05
POS_WEIGHT_RANGE = (0.2, 10.0)


def occurrence_targets(occ: np.ndarray) -> np.ndarray:
    """Stored occurrence labels (int 1/0, -1 unknown; or float with NaN) -> float32 0/1, NaN unknown."""
    occ = np.asarray(occ, np.float32)
    return np.where(occ >= 0, occ, np.nan).astype(np.float32)


def expression_targets(expr: np.ndarray) -> np.ndarray:
    """Stored expression classes (int, -1 unknown) -> float32 class index, NaN unknown."""
    expr = np.asarray(expr, np.float32)
    return np.where(expr >= 0, expr, np.nan).astype(np.float32)


def positive_weights(y_occ: np.ndarray) -> np.ndarray:
    """(A,) float32 BCE positive weights of (N, A) occurrence targets (NaN unknown); see module doc."""
    y = np.asarray(y_occ, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an AU with no known label: its share is NaN
        share = np.nan_to_num(np.nanmean(y, axis=0), nan=0.5)  # float32 throughout: weights repeat bit for bit
    return np.clip((1 - share) / np.clip(share, MIN_POSITIVE_SHARE, 1), *POS_WEIGHT_RANGE).astype(np.float32)


class AULoss(nn.Module):
    """Masked multi-task AU loss (module doc). ``terms`` takes the model's outputs and float targets
    (NaN unknown); ``forward`` takes the packed layout ``[occurrence logits | intensities]`` that the
    adaptation loop sees, with targets in the same layout."""

    def __init__(self, n_occ: int, n_int: int, pos_weight: torch.Tensor | np.ndarray | None = None,
                 intensity_weight: float = 0.5, expression_weight: float = 1.0) -> None:
        super().__init__()
        self.n_occ, self.n_int = n_occ, n_int
        pw = torch.ones(n_occ) if pos_weight is None else torch.as_tensor(np.asarray(pos_weight, np.float32))
        self.register_buffer("pos_weight", pw)
        self.intensity_weight, self.expression_weight = intensity_weight, expression_weight

    def terms(self, occ_logits: torch.Tensor, y_occ: torch.Tensor, intensity: torch.Tensor | None = None,
              y_int: torch.Tensor | None = None, expr_logits: torch.Tensor | None = None,
              y_expr: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Unweighted loss terms ``occ``, ``intensity``, ``expression`` (0 where nothing is known)."""
        zero = occ_logits.new_zeros(())
        out = {"occ": zero, "intensity": zero, "expression": zero}
        m = ~torch.isnan(y_occ)
        if m.any():
            per = F.binary_cross_entropy_with_logits(occ_logits, torch.nan_to_num(y_occ), pos_weight=self.pos_weight, reduction="none")
            out["occ"] = (per * m).sum() / m.sum()
        if intensity is not None and y_int is not None and y_int.numel():
            mi = ~torch.isnan(y_int)
            if mi.any():
                d = (intensity - torch.nan_to_num(y_int)) / 5.0
                out["intensity"] = (d.pow(2) * mi).sum() / mi.sum()
        if expr_logits is not None and y_expr is not None:
            me = ~torch.isnan(y_expr)
            if me.any():
                out["expression"] = F.cross_entropy(expr_logits[me], y_expr[me].long())
        return out

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        return terms["occ"] + self.intensity_weight * terms["intensity"] + self.expression_weight * terms["expression"]

    def forward(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n, k = self.n_occ, self.n_int
        has_int = bool(k) and out.shape[1] > n
        t = self.terms(out[:, :n], y[:, :n], out[:, n : n + k] if has_int else None, y[:, n : n + k] if has_int else None)
        return self.total(t)
