"""The adaptation loop: Avalanche's SupervisedTemplate over [base consolidation, person] experiences
with a strategy's plugins, evaluation after every epoch, deterministic for a seed on the CPU.

Inputs are float tensors already prepared for the model (N, C, H, W) and targets in the
:class:`~fewshot.strategies.OutputAdapter` layout ``[occurrence (0/1, NaN unknown) | intensity (0..5, NaN)]``.
"""

from __future__ import annotations

import random
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import TensorDataset

from .strategies import STRATEGIES, AdaptContext, MaskedAULoss, OutputAdapter, Strategy


@dataclass
class TensorSet:
    """Prepared inputs and targets of one data set."""

    x: torch.Tensor  # (N, C, H, W) float
    y: torch.Tensor  # (N, n_occ + n_int) float, NaN = unknown

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def avalanche(self):
        from avalanche.benchmarks.utils import AvalancheDataset

        t = torch.zeros(len(self), dtype=torch.long)
        return AvalancheDataset([TensorDataset(self.x, self.y, t)])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@torch.no_grad()
def predict_outputs(model: nn.Module, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i : i + batch]) for i in range(0, len(x), batch)]) if len(x) else torch.zeros(0)


def occurrence_scores(model: nn.Module, data: TensorSet, n_occ: int) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (N, n_occ), labels (N, n_occ) with NaN unknown)."""
    out = predict_outputs(model, data.x)
    return torch.sigmoid(out[:, :n_occ]).numpy(), data.y[:, :n_occ].numpy()


def macro_f1(prob: np.ndarray, y: np.ndarray, threshold: float = 0.5) -> float:
    """Mean F1 (``au_models.metrics.f1_score``) over AUs that have at least one known positive label
    (NaN labels masked)."""
    from au_models.metrics import f1_score

    known = np.where(np.isnan(y), -1, y)
    f1s = [f1_score(known[:, j], (prob[:, j] >= threshold).astype(int)) for j in range(y.shape[1]) if (known[:, j] == 1).any()]
    return float(np.mean(f1s)) if f1s else float("nan")


def run_adaptation(
    model: nn.Module,
    strategy: Strategy | str,
    plasticity: float,
    person: TensorSet,
    base: TensorSet | None,
    n_occ: int,
    n_int: int,
    eval_sets: dict[str, TensorSet],
    epochs: int = 3,
    lr: float = 1e-3,
    batch_size: int = 32,
    seed: int = 0,
    consolidate_epochs: int = 1,
    pos_weight: torch.Tensor | None = None,
    backbone_params: Callable[[nn.Module], list] | None = None,
    progress: bool = True,
) -> tuple[nn.Module, pd.DataFrame]:
    """Adapt ``model`` (an AU model returning a dict) in place; returns it and the curves table
    (one row per experience x epoch: stage, epoch, loss, macro F1 on every eval set, seconds)."""
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.training.plugins import SupervisedPlugin
    from avalanche.training.plugins.evaluation import EvaluationPlugin
    from avalanche.training.templates import SupervisedTemplate

    strat = STRATEGIES.create(strategy) if isinstance(strategy, str) else strategy
    wrapped = OutputAdapter(model)
    curves: list[dict] = []
    t0 = time.perf_counter()

    def evaluate(stage: str, epoch: int, loss: float) -> None:
        row = {"stage": stage, "epoch": epoch, "loss": loss, "seconds": time.perf_counter() - t0}
        for name, ds in eval_sets.items():
            p, y = occurrence_scores(wrapped, ds, n_occ)
            row[f"f1_{name}"] = macro_f1(p, y)
        curves.append(row)
        wrapped.train()

    evaluate("start", 0, float("nan"))
    if not strat.trains:
        return model, pd.DataFrame(curves)

    if strat.freeze_backbone and backbone_params is not None:
        for p in backbone_params(model):
            p.requires_grad_(False)

    class Curves(SupervisedPlugin):
        def __init__(self) -> None:
            super().__init__()
            self.stage, self.losses, self.epoch = "", [], 0

        def after_training_iteration(self, s, **kw):
            self.losses.append(float(s.loss.detach()))

        def after_training_epoch(self, s, **kw):
            self.epoch += 1
            evaluate(self.stage, self.epoch, float(np.mean(self.losses)) if self.losses else float("nan"))
            self.losses = []
            if progress:
                print(f"  [{strat.name}] {self.stage} epoch {self.epoch}: loss {curves[-1]['loss']:.4f}", file=sys.stderr)

    curve_plugin = Curves()
    seed_everything(seed)
    base_av = base.avalanche() if base is not None and len(base) else None
    ctx = AdaptContext(model=wrapped, base_dataset=base_av, n_occ=n_occ, batch_size=batch_size)
    plugins = strat.plugins(plasticity, ctx) + [curve_plugin]
    criterion = MaskedAULoss(n_occ, n_int, pos_weight)
    params = [p for p in wrapped.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr * strat.lr_scale(plasticity))

    streams = []
    if strat.joint and base is not None and len(base):
        # person share of each epoch's samples = plasticity (repeat person rows to reach it)
        share = min(max(plasticity, 0.05), 0.95)
        reps = max(1, int(round(share / (1 - share) * len(base) / max(1, len(person)))))
        joint = TensorSet(torch.cat([base.x] + [person.x] * reps), torch.cat([base.y] + [person.y] * reps))
        streams.append(("joint", joint.avalanche(), epochs))
    else:
        if strat.consolidate and base_av is not None:
            streams.append(("base", base_av, consolidate_epochs))
        streams.append(("person", person.avalanche(), epochs))

    bm = benchmark_from_datasets(train=[d for _, d, _ in streams])
    # one template for all experiences: its clock counts experiences, which EWC/SI key their state on
    template = SupervisedTemplate(
        model=wrapped, optimizer=optimizer, criterion=criterion, train_mb_size=batch_size, train_epochs=1,
        plugins=plugins, evaluator=EvaluationPlugin(), device="cpu",
    )
    for (stage, _, n_ep), exp in zip(streams, bm.train_stream):
        seed_everything(seed + 7919 * len(curves))
        template.train_epochs = n_ep
        # consolidation is rehearsal of what the base model already fits: small steps, so it measures
        # importance (EWC's Fisher, SI's path) without moving the model much
        for g in optimizer.param_groups:
            g["lr"] = lr * strat.lr_scale(plasticity) * (0.1 if stage == "base" else 1.0)
        curve_plugin.stage, curve_plugin.epoch = stage, 0
        template.train(exp, num_workers=0)
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    return model, pd.DataFrame(curves)
