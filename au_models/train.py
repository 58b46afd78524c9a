"""Training an :class:`AUModel` on aligned faces, with masked multi-task losses and early stopping.

    from au_models.train import TrainConfig, train, subject_split
    result = train(model, train_set, val_set, TrainConfig(epochs=20, seed=0), checkpoint_dir="run/")
    result.model, result.history, result.val_table

Losses: :class:`au_models.losses.AULoss`, the loss adaptation uses too (unknown labels masked out:
occurrence BCE with :func:`au_models.losses.positive_weights` of the training labels, intensity squared
error on the 0..5 scale / 5, expression cross-entropy). Early stopping watches the validation macro AUC (else macro F1, else
minus the validation loss) on a subject-exclusive validation set. With a
``checkpoint_dir`` the full training state is written after every epoch and a re-run continues from it.
CPU runs are deterministic for a seed.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from fewshot.errors import ConfigError
from fewshot.io import atomic_path
from fewshot.landmarks import MIRROR

from .cache import AlignedSet
from .losses import AULoss, expression_targets, occurrence_targets, positive_weights
from .metrics import au_metrics, per_subject_metrics, summarize
from .model import AUModel, to_tensor


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (AdamW + cosine schedule). Augmentation: horizontal flip, small random
    similarity jitter (``jitter_px`` shift, ``jitter_scale``, ``jitter_deg``), brightness/contrast."""

    epochs: int = 20
    lr: float = 2e-3
    batch_size: int = 64
    seed: int = 0
    weight_decay: float = 1e-4
    patience: int = 5
    # AULoss's intensity term is ((prediction - label) / 5)^2: 6.25 weighs small errors as 0.5 x smooth-L1
    # on the 0..5 scale did before the base and adaptation losses became one
    intensity_weight: float = 6.25
    expression_weight: float = 1.0
    augment: bool = True
    jitter_px: float = 4.0
    jitter_scale: float = 0.05
    jitter_deg: float = 6.0
    threads: int = 2
    progress: bool = True


@dataclass
class TrainResult:
    model: AUModel  # weights of the best validation epoch
    history: pd.DataFrame  # one row per epoch: epoch, train_loss, val_loss, val_macro_f1, val_macro_auc, seconds
    best_epoch: int
    val_table: pd.DataFrame  # au_metrics on the validation set at the best epoch
    pos_weight: list[float] = field(default_factory=list)


def subject_split(subjects: Sequence[str], val_fraction: float = 0.2, seed: int = 0) -> tuple[list[str], list[str]]:
    """Subject-exclusive (train, validation) subject lists: at least one subject on each side."""
    uniq = sorted(set(map(str, subjects)))
    if len(uniq) < 2:
        raise ConfigError(f"need at least 2 subjects for a subject-exclusive validation split, got {len(uniq)}")
    rng = np.random.default_rng(seed)
    order = [uniq[i] for i in rng.permutation(len(uniq))]
    n_val = min(len(uniq) - 1, max(1, int(round(val_fraction * len(uniq)))))
    return sorted(order[n_val:]), sorted(order[:n_val])


def _augment(x: torch.Tensor, lm: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flip + similarity jitter (images and landmarks alike) + photometric jitter."""
    b, _, S, _ = x.shape
    flip = torch.rand(b, generator=gen) < 0.5
    if flip.any():
        x = torch.where(flip.view(b, 1, 1, 1), x.flip(3), x)
        mirrored = lm[:, torch.as_tensor(MIRROR)].clone()
        mirrored[..., 0] = S - 1 - mirrored[..., 0]
        lm = torch.where(flip.view(b, 1, 1), mirrored, lm)
    ang = (torch.rand(b, generator=gen) * 2 - 1) * np.radians(cfg.jitter_deg)
    sc = 1 + (torch.rand(b, generator=gen) * 2 - 1) * cfg.jitter_scale
    sh = (torch.rand(b, 2, generator=gen) * 2 - 1) * cfg.jitter_px * 2 / S
    # theta maps output normalised coordinates to input ones: in = A @ out + t
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    A = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # (B, 2, 2)
    theta = torch.cat([A, sh.unsqueeze(2)], 2)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    u = (lm + 0.5) / S * 2 - 1
    u_out = torch.linalg.solve(A, (u - sh.unsqueeze(1)).transpose(1, 2)).transpose(1, 2)
    lm = (u_out + 1) / 2 * S - 0.5
    contrast = 1 + (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * 0.25
    bright = (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * 0.1
    mean = x.mean((1, 2, 3), keepdim=True)
    x = ((x - mean) * contrast + mean + bright).clamp(0, 1)
    return x, lm


def _batch(data: AlignedSet, idx: np.ndarray) -> tuple[torch.Tensor, ...]:
    return (
        to_tensor(data.take_images(idx)),
        torch.from_numpy(data.landmarks[idx]),
        torch.from_numpy(occurrence_targets(data.occ[idx])),
        torch.from_numpy(np.asarray(data.intensity[idx], np.float32)),
        torch.from_numpy(expression_targets(data.expr[idx])),
    )


@torch.no_grad()
def predict_set(model: AUModel, data: AlignedSet, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Model outputs on every face of ``data`` (see :meth:`AUModel.predict_arrays`), plus 'loss' terms
    are not computed here. Columns follow ``model.aus`` / ``model.intensity_aus``."""
    was = model.training
    model.eval()
    outs: dict[str, list] = {"occ_prob": [], "intensity": [], "expr_prob": []}
    for s in range(0, len(data), batch_size):
        idx = np.arange(s, min(len(data), s + batch_size))
        x, lm, *_ = _batch(data, idx)
        o = model(x, lm if model.needs_landmarks else None)
        outs["occ_prob"].append(torch.sigmoid(o["occ_logits"]).numpy())
        outs["intensity"].append(o["intensity"].numpy())
        outs["expr_prob"].append(torch.softmax(o["expr_logits"], 1).numpy())
    model.train(was)
    dims = {"occ_prob": len(model.aus), "intensity": len(model.intensity_aus), "expr_prob": len(model.expressions)}
    return {k: np.concatenate(v) if v else np.zeros((0, dims[k]), np.float32) for k, v in outs.items()}


def _labels_for(model: AUModel, data: AlignedSet) -> tuple[np.ndarray, np.ndarray]:
    """The data's labels re-ordered to the model's AU lists (-1 / NaN where the data lacks an AU)."""
    occ = np.full((len(data), len(model.aus)), -1, np.int8)
    for j, au in enumerate(model.aus):
        if au in data.aus:
            occ[:, j] = data.occ[:, data.aus.index(au)]
    inten = np.full((len(data), len(model.intensity_aus)), np.nan, np.float32)
    for j, au in enumerate(model.intensity_aus):
        if au in data.intensity_aus:
            inten[:, j] = data.intensity[:, data.intensity_aus.index(au)]
    return occ, inten


def evaluate(model: AUModel, data: AlignedSet, threshold: float = 0.5, by_subject: bool = False) -> pd.DataFrame:
    """:func:`au_metrics` of the model on ``data`` (one row per AU; per subject too if ``by_subject``)."""
    pred = predict_set(model, data)
    occ, inten = _labels_for(model, data)
    if by_subject:
        return per_subject_metrics(data.subjects, occ, pred["occ_prob"], model.aus, inten, pred["intensity"], model.intensity_aus, threshold)
    return au_metrics(occ, pred["occ_prob"], model.aus, inten, pred["intensity"], model.intensity_aus, threshold)


def _align_labels(model: AUModel, data: AlignedSet) -> AlignedSet:
    occ, inten = _labels_for(model, data)
    return AlignedSet(data.images, data.landmarks, occ, inten, data.expr, data.subjects, list(model.aus), list(model.intensity_aus),
                      list(data.expressions), data.frames, data.align, data.source)  # fmt: skip


def _loss(model: AUModel, criterion: AULoss, x, lm, occ, inten, expr) -> torch.Tensor:
    out = model(x, lm if model.needs_landmarks else None)
    return criterion.total(criterion.terms(out["occ_logits"], occ, out["intensity"], inten, out["expr_logits"], expr))


def _val_loss(model: AUModel, data: AlignedSet, criterion: AULoss) -> float:
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(data), 256):
            idx = np.arange(s, min(len(data), s + 256))
            loss = _loss(model, criterion, *_batch(data, idx))
            total += loss.item() * len(idx)
            n += len(idx)
    return total / max(n, 1)


def train(
    model: AUModel,
    train_data: AlignedSet,
    val_data: AlignedSet | None,
    config: TrainConfig = TrainConfig(),
    checkpoint_dir: str | os.PathLike | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``train_data``; early-stop on ``val_data`` (subject-exclusive from it).

    Labels are matched to the model by AU name. With ``checkpoint_dir``, ``last.pt`` there holds the
    training state after every epoch; calling again with the same config resumes after the last epoch.
    Returns the model at its best validation epoch (the last one without ``val_data``).
    """
    cfg = config
    if train_data.align.crop_size != model.align.crop_size:
        raise ConfigError(f"training crops are {train_data.align.crop_size} px but the model expects {model.align.crop_size} px; rebuild the cache")
    if val_data is not None and len(set(train_data.subjects) & set(val_data.subjects)):
        raise ConfigError("train and validation sets share subjects; use subject_split() for a subject-exclusive split")
    if len(train_data) == 0:
        raise ConfigError("no training faces (every face failed alignment, or the split is empty)")
    torch.set_num_threads(cfg.threads)
    train_data = _align_labels(model, train_data)
    val_data = _align_labels(model, val_data) if val_data is not None and len(val_data) else None
    pw = torch.from_numpy(positive_weights(occurrence_targets(train_data.occ)))
    criterion = AULoss(len(model.aus), len(model.intensity_aus), pw, cfg.intensity_weight, cfg.expression_weight)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = int(np.ceil(len(train_data) / cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(1, cfg.epochs * steps_per_epoch), pct_start=0.15)
    state = {"epoch": 0, "best_score": -np.inf, "best_epoch": 0, "bad": 0, "history": [], "best_state": None}
    resume = Path(checkpoint_dir) / "last.pt" if checkpoint_dir else None
    fingerprint = {**asdict(cfg), "progress": None, "n_train": len(train_data), "n_val": len(val_data) if val_data else 0, "model": repr(model.config())}
    if resume is not None and resume.is_file():
        saved = torch.load(resume, map_location="cpu", weights_only=True)
        if saved.get("fingerprint") == fingerprint:
            model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["optimizer"])
            sched.load_state_dict(saved["scheduler"])
            state = saved["state"]
            if cfg.progress:
                print(f"resuming from {resume} after epoch {state['epoch']}", file=sys.stderr)
    for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
        if state["bad"] >= cfg.patience:
            break
        t0 = time.perf_counter()
        model.train()
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        torch.manual_seed(cfg.seed * 1000 + epoch)  # dropout
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(train_data))
        batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        if len(batches) > 1 and len(batches[-1]) < 2:  # BatchNorm cannot train on a single face
            batches[-2] = np.concatenate(batches[-2:])
            batches.pop()
        it = batches
        if cfg.progress:
            from tqdm import tqdm

            it = tqdm(batches, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", file=sys.stderr, dynamic_ncols=True, leave=False)
        total, seen = 0.0, 0
        for idx in it:
            x, lm, occ, inten, expr = _batch(train_data, idx)
            if cfg.augment:
                x, lm = _augment(x, lm, cfg, gen)
            loss = _loss(model, criterion, x, lm, occ, inten, expr)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched.last_epoch + 1 < sched.total_steps:
                sched.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        row = {"epoch": epoch, "train_loss": total / max(seen, 1)}
        if val_data is not None:
            row["val_loss"] = _val_loss(model, val_data, criterion)
            summary = summarize(evaluate(model, val_data))
            row["val_macro_f1"], row["val_macro_auc"] = summary["macro_f1"], summary["macro_auc"]
            # AUC is threshold-free, so it ranks epochs more stably than F1 at 0.5
            score = next((v for v in (row["val_macro_auc"], row["val_macro_f1"]) if np.isfinite(v)), -row["val_loss"])
        else:
            score = float(epoch)  # no validation: keep the last epoch
        row["seconds"] = time.perf_counter() - t0
        state["history"].append(row)
        if score > state["best_score"]:
            state.update(best_score=float(score), best_epoch=epoch, bad=0, best_state={k: v.detach().clone() for k, v in model.state_dict().items()})
        else:
            state["bad"] += 1
        state["epoch"] = epoch
        if cfg.progress:
            msg = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
            print(msg, file=sys.stderr)
        if resume is not None:
            with atomic_path(resume) as tmp:
                torch.save({"fingerprint": fingerprint, "model": model.state_dict(), "optimizer": opt.state_dict(),
                            "scheduler": sched.state_dict(), "state": state}, tmp)  # fmt: skip
    if state["best_state"] is not None:
        model.load_state_dict(state["best_state"])
    model.eval()
    val_table = evaluate(model, val_data) if val_data is not None else pd.DataFrame()
    return TrainResult(model, pd.DataFrame(state["history"]), int(state["best_epoch"]), val_table, pw.tolist())


def replay_buffer(data: AlignedSet, size: int = 128, seed: int = 0) -> dict[str, np.ndarray]:
    """A small random sample of ``data`` for continual learning (the keys of a checkpoint's ``replay``),
    drawn so every AU's positives are represented when the data has any."""
    rng = np.random.default_rng(seed)
    n = len(data)
    size = min(size, n)
    chosen: list[int] = []
    per_au = max(1, size // (2 * max(1, len(data.aus))))
    for j in range(len(data.aus)):
        pos = np.flatnonzero(data.occ[:, j] == 1)
        if len(pos):
            chosen.extend(rng.choice(pos, min(per_au, len(pos)), replace=False).tolist())
    chosen = list(dict.fromkeys(chosen))[:size]
    rest = np.setdiff1d(np.arange(n), chosen)
    chosen += rng.choice(rest, size - len(chosen), replace=False).tolist()
    idx = np.sort(np.asarray(chosen, np.int64))
    return {
        "images": data.take_images(idx), "landmarks": data.landmarks[idx].astype(np.float32), "occ": data.occ[idx].astype(np.int8),
        "intensity": data.intensity[idx].astype(np.float32), "expr": data.expr[idx].astype(np.int64),
    }  # fmt: skip
