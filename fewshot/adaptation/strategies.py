"""Adaptation strategies: each one small class that owns what it does to the model.

A strategy's :meth:`Strategy.adapt` takes an :class:`AdaptRun` (the model, the person's training
data, the real references, the base model's replay buffer, the evaluation sets and the loop settings)
and returns an :class:`Outcome`. Strategies that train build the experiences of the Avalanche loop of
:mod:`fewshot.adaptation.loop` (:meth:`Strategy.streams`), its plugins (:meth:`Strategy.plugins`) and
what they change on the model before training (:meth:`Strategy.prepare`); ``generic`` and
``calibration`` override :meth:`Strategy.adapt` itself. The one ``plasticity`` knob in [0, 1]
(0 = keep the base model, 1 = learn the person freely) maps onto each strategy's own parameter
(:meth:`Strategy.knob`).

Importing this module loads no torch (the CLI lists the strategies without it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..registry import Registry

if TYPE_CHECKING:
    from .config import LoopConfig
    from .loop import PluginContext, Stream, TensorSet


@dataclass
class AdaptRun:
    """Everything a strategy may use (the model is adapted in place)."""

    model: Any  # au_models.AUModel
    person: "TensorSet"  # the person's training rows (synthetic, or the real references)
    reference_crops: np.ndarray  # (k, S, S, 3) uint8 RGB aligned real references (taken as neutral)
    reference_landmarks: np.ndarray  # (k, 68, 2) crop pixels
    base: "TensorSet | None"  # the base model's replay buffer
    eval_sets: dict[str, "TensorSet"]
    plasticity: float
    loop: "LoopConfig"
    seed: int
    progress: bool = False
    real: "TensorSet | None" = None  # the person's unlabeled real frames, targets = confident base outputs (NaN elsewhere)


@dataclass
class Outcome:
    """What a strategy did: the curves table (row 0 = before) and strategy-specific details."""

    curves: pd.DataFrame
    details: dict = field(default_factory=dict)


class Strategy:
    """Base class of every strategy. Class attributes describe it to the experiment grid:
    ``baseline`` (runs on the real references, takes no generator and no plasticity) and
    ``deterministic`` (no random choice: one seed is enough)."""

    name = "?"
    parameter = ""  # the strategy's own knob that plasticity maps onto
    baseline = False
    deterministic = False

    def knob(self, plasticity: float) -> float:
        """The strategy parameter for a plasticity in [0, 1]."""
        return float("nan")

    def adapt(self, run: AdaptRun) -> Outcome:
        """Adapt ``run.model`` in place. Default: train on :meth:`streams` with :meth:`plugins`."""
        from .loop import train_streams  # torch: loaded only when a strategy trains

        return Outcome(train_streams(self, run))

    # -- the hooks of the training loop ----------------------------------------------------------
    def prepare(self, model: Any) -> None:
        """Change the model before training (e.g. freeze parts of it)."""

    def plugins(self, plasticity: float, ctx: "PluginContext") -> list:
        return []

    def lr_scale(self, plasticity: float) -> float:
        return 1.0

    def streams(self, person: "TensorSet", base: "TensorSet | None", plasticity: float, loop: "LoopConfig") -> list["Stream"]:
        """The experiences, in order. Default: the person's data alone."""
        from .loop import Stream

        return [Stream("person", person, loop.epochs)]


class Consolidating(Strategy):
    """A regulariser that measures which weights matter to the base model on the base data first (EWC's
    Fisher, SI's path): experiences base consolidation, then the person. Consolidation is rehearsal of
    what the base model already fits: small steps (a tenth of the learning rate), so it measures
    importance without moving the model much."""

    def streams(self, person, base, plasticity, loop):
        from .loop import Stream

        first = [Stream("base", base, loop.consolidate_epochs, lr_factor=0.1)] if base is not None and len(base) else []
        return first + [Stream("person", person, loop.epochs)]


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
    name = "head"

    def prepare(self, model: Any) -> None:
        for p in model.backbone.parameters():
            p.requires_grad_(False)


def consolidation_lambda(plasticity: float) -> float:
    """EWC's and SI's lambda on importances normalised to mean 1 (:mod:`fewshot.adaptation.loop`'s
    ``normalised_ewc_plugin`` / ``normalised_si_plugin``): 10^(2 - 4p), 100 at plasticity 0, 1 at 0.5,
    0.01 at 1. With mean-1 importances the penalty is an importance-weighted squared distance from the
    base weights, so lambda means the same for every model size (Avalanche's raw Fisher and SI path
    integrals are 1e-6-scale and SI's are clipped at 1e-3: any lambda up to 1e3 left the model as
    plain fine-tuning did)."""
    return 10.0 ** (2.0 - 4.0 * plasticity)


@STRATEGIES.register("ewc", "Elastic Weight Consolidation (Avalanche, Fisher normalised to mean 1); plasticity -> ewc_lambda = 10^(2-4p)")
class EWC(Consolidating):
    name, parameter = "ewc", "ewc_lambda"

    def knob(self, plasticity: float) -> float:
        return consolidation_lambda(plasticity)

    def plugins(self, plasticity: float, ctx) -> list:
        from .loop import normalised_ewc_plugin

        return [normalised_ewc_plugin(self.knob(plasticity))]


@STRATEGIES.register("si", "Synaptic Intelligence (Avalanche, path importance normalised to mean 1); plasticity -> si_lambda = 10^(2-4p)")
class SI(Consolidating):
    name, parameter = "si", "si_lambda"

    def knob(self, plasticity: float) -> float:
        return consolidation_lambda(plasticity)

    def plugins(self, plasticity: float, ctx) -> list:
        from .loop import normalised_si_plugin

        return [normalised_si_plugin(self.knob(plasticity))]


@STRATEGIES.register("lwf", "Learning without Forgetting with sigmoid/BCE distillation; plasticity -> alpha = 4(1-p)")
class LwF(Strategy):
    name, parameter = "lwf", "alpha"

    def knob(self, plasticity: float) -> float:
        return 4.0 * (1.0 - plasticity)

    def plugins(self, plasticity: float, ctx) -> list:
        from .loop import make_bce_lwf_plugin

        return [make_bce_lwf_plugin(ctx.model, self.knob(plasticity), 2.0, ctx.n_occ)]


@STRATEGIES.register("replay", "rehearsal of the base buffer (Avalanche ReplayPlugin); plasticity -> replay ratio = 0.8(1-p)")
class Replay(Strategy):
    name, parameter = "replay", "replay_ratio"

    def knob(self, plasticity: float) -> float:
        return 0.8 * (1.0 - plasticity)

    def plugins(self, plasticity: float, ctx) -> list:
        if ctx.base_dataset is None or len(ctx.base_dataset) == 0:
            return []
        from avalanche.training.plugins import ReplayPlugin
        from avalanche.training.storage_policy import ReservoirSamplingBuffer

        ratio = self.knob(plasticity)
        mem_batch = int(round(ctx.batch_size * ratio / max(1e-6, 1.0 - ratio)))
        if mem_batch <= 0:
            return []
        policy = ReservoirSamplingBuffer(max_size=len(ctx.base_dataset))
        policy.update_from_dataset(ctx.base_dataset)
        return [ReplayPlugin(mem_size=len(ctx.base_dataset), batch_size=ctx.batch_size, batch_size_mem=mem_batch, storage_policy=policy)]


@STRATEGIES.register("joint", "one experience over base buffer + person data together (plasticity -> person share of epochs' samples)")
class Joint(Strategy):
    name, parameter = "joint", "person_weight"

    def knob(self, plasticity: float) -> float:
        return plasticity

    def streams(self, person, base, plasticity, loop):
        from .loop import Stream

        if base is None or not len(base):
            return [Stream("person", person, loop.epochs)]
        # person share of each epoch's samples = plasticity (repeat person rows to reach it)
        share = min(max(plasticity, 0.05), 0.95)
        reps = max(1, int(round(share / (1 - share) * len(base) / max(1, len(person)))))
        return [Stream("joint", base.concat(*[person] * reps), loop.epochs)]


@STRATEGIES.register("finetune_real", "baseline: plain fine-tuning on the real references alone, full learning rate, no rehearsal")
class FinetuneReal(Strategy):
    name, parameter, baseline = "finetune_real", "lr_scale", True

    def knob(self, plasticity: float) -> float:
        return 1.0


def calibrate_to_neutral(model, neutral_crops: np.ndarray, neutral_lm: np.ndarray, strength: float = 1.0, target_prob: float = 0.1) -> dict:
    """OpenFace-style person-specific neutral calibration, folded into the head biases so the result
    is an ordinary checkpoint: for each AU the occurrence logit on the person's neutral frame(s) is
    lowered to at most logit(target_prob), and the intensity on the neutral frame(s) is subtracted
    (in the head's pre-sigmoid space). ``strength`` in [0, 1] scales the shift. Returns the shifts."""
    import torch

    out = model.predict_arrays(neutral_crops, neutral_lm)
    occ_logit = np.log(np.clip(out["occ_prob"], 1e-6, 1 - 1e-6) / np.clip(1 - out["occ_prob"], 1e-6, 1)).mean(0)
    target = np.log(target_prob / (1 - target_prob))
    occ_shift = strength * np.maximum(occ_logit - target, 0.0)
    inten = np.clip(out["intensity"].mean(0) / 5.0, 1e-4, 1 - 1e-4) if out["intensity"].size else np.zeros(0)
    int_pre = np.log(inten / (1 - inten)) if inten.size else inten
    int_target = np.log(0.02 / 0.98)
    int_shift = strength * np.maximum(int_pre - int_target, 0.0) if inten.size else inten
    with torch.no_grad():
        model.occ_head.linear.bias -= torch.from_numpy(occ_shift.astype(np.float32))
        if int_shift.size:
            model.intensity_head.linear.bias -= torch.from_numpy(int_shift.astype(np.float32))
    return {"occ_logit_shift": dict(zip(model.aus, np.round(occ_shift, 4).tolist())),
            "intensity_shift": dict(zip(model.intensity_aus, np.round(int_shift, 4).tolist()))}


@STRATEGIES.register("calibration", "no training: OpenFace-style neutral calibration, subtract the person's neutral response")
class NeutralCalibration(Strategy):
    name, parameter, baseline, deterministic = "calibration", "shift", True, True

    def knob(self, plasticity: float) -> float:
        return plasticity

    def adapt(self, run: AdaptRun) -> Outcome:
        shifts = calibrate_to_neutral(run.model, run.reference_crops, run.reference_landmarks, strength=self.knob(run.plasticity))
        curves = pd.DataFrame([{"stage": "calibration", "epoch": 0, "loss": np.nan, "seconds": 0.0}])
        return Outcome(curves, {"calibration": shifts})


@STRATEGIES.register("generic", "baseline: the base model unchanged")
class Generic(Strategy):
    name, parameter, baseline, deterministic = "generic", "", True, True

    def adapt(self, run: AdaptRun) -> Outcome:
        return Outcome(pd.DataFrame([{"stage": "generic", "epoch": 0, "loss": np.nan, "seconds": 0.0}]))
