"""Continual-learning strategies for person-specific adaptation, as plugins over one loop.

The adaptation loop is Avalanche's ``SupervisedTemplate`` run over two experiences:

* experience 0, the **base data** (the replay buffer stored with the base model): a short
  consolidation pass (rehearsal of what the base model already knows) that lets regularisers
  measure which weights matter to it (EWC's Fisher information, SI's path integral);
* experience 1, **this person** (the synthetic set of stage 3).

A strategy is one small class: which Avalanche plugins it adds, whether it consolidates on the base
data first, whether it trains at all, and how the single ``plasticity`` knob in [0, 1]
(0 = keep the base model, 1 = learn the person freely) maps onto its own parameter.

Models seen by the loop return one tensor ``[occurrence logits | intensities]`` (see
:class:`OutputAdapter`); targets are the same layout with NaN for unknown labels.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .registry import Registry


class OutputAdapter(nn.Module):
    """Wrap an AU model whose forward returns a dict into one returning
    ``cat([occ_logits, intensity], 1)``, the layout Avalanche's criterion and plugins see."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        parts = [out["occ_logits"]]
        if out.get("intensity") is not None:
            parts.append(out["intensity"])
        return torch.cat(parts, dim=1)


class MaskedAULoss(nn.Module):
    """BCE on occurrence logits + weighted MSE on intensities (scaled by 1/5), NaN targets masked.

    pos_weight (n_occ,) rebalances rare AUs. Works on the ``OutputAdapter`` layout.
    """

    def __init__(self, n_occ: int, n_int: int, pos_weight: torch.Tensor | None = None, intensity_weight: float = 0.5) -> None:
        super().__init__()
        self.n_occ, self.n_int = n_occ, n_int
        self.register_buffer("pos_weight", pos_weight if pos_weight is not None else torch.ones(n_occ))
        self.intensity_weight = intensity_weight

    def forward(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        occ, yo = out[:, : self.n_occ], y[:, : self.n_occ]
        m = ~torch.isnan(yo)
        loss = out.new_zeros(())
        if m.any():
            l = nn.functional.binary_cross_entropy_with_logits(occ, torch.nan_to_num(yo), pos_weight=self.pos_weight, reduction="none")
            loss = loss + (l * m).sum() / m.sum()
        if self.n_int and out.shape[1] > self.n_occ:
            yi = y[:, self.n_occ : self.n_occ + self.n_int]
            mi = ~torch.isnan(yi)
            if mi.any():
                d = (out[:, self.n_occ : self.n_occ + self.n_int] - torch.nan_to_num(yi)) / 5.0
                loss = loss + self.intensity_weight * (d.pow(2) * mi).sum() / mi.sum()
        return loss


def _import_avalanche():
    import warnings

    warnings.filterwarnings("ignore", module="avalanche")
    from avalanche.training import plugins as av_plugins
    from avalanche.training.plugins import SupervisedPlugin

    return av_plugins, SupervisedPlugin


def make_bce_lwf_plugin(teacher: nn.Module, alpha: float, temperature: float, n_occ: int):
    """Learning without Forgetting for multi-label outputs: the student's per-AU sigmoid is pulled
    toward the frozen base model's (binary cross-entropy between Bernoulli distributions at
    temperature T, scaled by T^2), and its intensities toward the base intensities (MSE). Avalanche's
    own LwF uses a softmax over classes, which is wrong for independent AUs."""
    _, SupervisedPlugin = _import_avalanche()

    class BCELwFPlugin(SupervisedPlugin):
        def __init__(self) -> None:
            super().__init__()
            self.teacher = copy.deepcopy(teacher).eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)

        def before_backward(self, strategy, **kwargs):
            if alpha <= 0:
                return
            with torch.no_grad():
                t_out = self.teacher(strategy.mb_x)
            s_out = strategy.mb_output
            t_logit = t_out[:, :n_occ] / temperature
            t_prob = torch.sigmoid(t_logit)
            # KL(teacher || student) per AU = BCE(student; teacher) - H(teacher): zero when they agree
            bce = nn.functional.binary_cross_entropy_with_logits(s_out[:, :n_occ] / temperature, t_prob)
            entropy = nn.functional.binary_cross_entropy_with_logits(t_logit, t_prob)
            distill = (bce - entropy) * temperature**2
            if s_out.shape[1] > n_occ:
                distill = distill + ((s_out[:, n_occ:] - t_out[:, n_occ:]) / 5.0).pow(2).mean()
            strategy.loss = strategy.loss + alpha * distill

    return BCELwFPlugin()


@dataclass
class AdaptContext:
    """What a strategy may use to build its plugins."""

    model: nn.Module  # the OutputAdapter-wrapped model being adapted
    base_dataset: Any  # AvalancheDataset of the base replay buffer (may be None)
    n_occ: int
    batch_size: int
    extras: dict = field(default_factory=dict)


class Strategy:
    """Base class: override the class attributes and :meth:`plugins`."""

    name = "?"
    consolidate = False  # run experience 0 (base data) before the person
    trains = True  # False: no gradient step (e.g. calibration)
    joint = False  # train on base data + person data together, one experience
    freeze_backbone = False
    parameter = ""  # the strategy's own knob that plasticity maps onto

    def knob(self, plasticity: float) -> float:
        """The strategy parameter for a plasticity in [0, 1]."""
        return float("nan")

    def plugins(self, plasticity: float, ctx: AdaptContext) -> list:
        return []

    def lr_scale(self, plasticity: float) -> float:
        return 1.0


STRATEGIES: Registry[Strategy] = Registry("adaptation strategy")


@STRATEGIES.register("naive", "plain fine-tuning on the person (plasticity scales the learning rate)")
class Naive(Strategy):
    name, parameter = "naive", "lr_scale"

    def knob(self, plasticity: float) -> float:
        return self.lr_scale(plasticity)

    def lr_scale(self, plasticity: float) -> float:
        return 0.1 + 0.9 * plasticity


@STRATEGIES.register("head", "fine-tune the heads only, backbone frozen (plasticity scales the learning rate)")
class HeadOnly(Naive):
    name, freeze_backbone = "head", True


@STRATEGIES.register("ewc", "Elastic Weight Consolidation (Avalanche); plasticity -> ewc_lambda = 10^(4(1-p))")
class EWC(Strategy):
    name, consolidate, parameter = "ewc", True, "ewc_lambda"

    def knob(self, plasticity: float) -> float:
        return 10.0 ** (4.0 * (1.0 - plasticity))

    def plugins(self, plasticity: float, ctx: AdaptContext) -> list:
        av, _ = _import_avalanche()
        return [av.EWCPlugin(ewc_lambda=self.knob(plasticity))]


@STRATEGIES.register("si", "Synaptic Intelligence (Avalanche); plasticity -> si_lambda = 10^(3(1-p))")
class SI(Strategy):
    name, consolidate, parameter = "si", True, "si_lambda"

    def knob(self, plasticity: float) -> float:
        return 10.0 ** (3.0 * (1.0 - plasticity))

    def plugins(self, plasticity: float, ctx: AdaptContext) -> list:
        av, _ = _import_avalanche()
        return [av.SynapticIntelligencePlugin(si_lambda=self.knob(plasticity))]


@STRATEGIES.register("lwf", "Learning without Forgetting with sigmoid/BCE distillation; plasticity -> alpha = 4(1-p)")
class LwF(Strategy):
    name, parameter = "lwf", "alpha"

    def knob(self, plasticity: float) -> float:
        return 4.0 * (1.0 - plasticity)

    def plugins(self, plasticity: float, ctx: AdaptContext) -> list:
        return [make_bce_lwf_plugin(ctx.model, self.knob(plasticity), 2.0, ctx.n_occ)]


@STRATEGIES.register("replay", "rehearsal of the base buffer (Avalanche ReplayPlugin); plasticity -> replay ratio = 0.8(1-p)")
class Replay(Strategy):
    name, parameter = "replay", "replay_ratio"

    def knob(self, plasticity: float) -> float:
        return 0.8 * (1.0 - plasticity)

    def plugins(self, plasticity: float, ctx: AdaptContext) -> list:
        if ctx.base_dataset is None or len(ctx.base_dataset) == 0:
            return []
        av, _ = _import_avalanche()
        from avalanche.training.storage_policy import ReservoirSamplingBuffer

        ratio = self.knob(plasticity)
        mem_batch = int(round(ctx.batch_size * ratio / max(1e-6, 1.0 - ratio)))
        if mem_batch <= 0:
            return []
        policy = ReservoirSamplingBuffer(max_size=len(ctx.base_dataset))
        policy.update_from_dataset(ctx.base_dataset)
        return [av.ReplayPlugin(mem_size=len(ctx.base_dataset), batch_size=ctx.batch_size, batch_size_mem=mem_batch, storage_policy=policy)]


@STRATEGIES.register("joint", "one experience over base buffer + person data together (plasticity -> person share of epochs' samples)")
class Joint(Strategy):
    name, joint, parameter = "joint", True, "person_weight"

    def knob(self, plasticity: float) -> float:
        return plasticity


@STRATEGIES.register("calibration", "no training: OpenFace-style neutral calibration, subtract the person's neutral response")
class NeutralCalibration(Strategy):
    name, trains, parameter = "calibration", False, "shift"

    def knob(self, plasticity: float) -> float:
        return plasticity


def strategy_names() -> list[str]:
    return STRATEGIES.names()
