"""The training loop of the strategies that train: Avalanche's SupervisedTemplate over the streams a
strategy builds (e.g. [base consolidation, person]), with the strategy's plugins, evaluation after
every epoch, deterministic for a seed on the CPU.

The model seen by the loop returns one tensor ``[occurrence logits | intensities]``
(:class:`OutputAdapter`); a landmark-using AU model gets its landmarks packed behind the pixels of each
input row (:func:`tensor_set`, :class:`Packed`). Targets follow :mod:`au_models.losses`: the same layout
with NaN for unknown labels.
"""

from __future__ import annotations

import copy
import importlib
import random
import sys
import time
import types
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import TensorDataset

from au_models.losses import AULoss, positive_weights
from au_models.metrics import au_metrics, f1_score
from au_models.model import to_tensor

if TYPE_CHECKING:
    from .strategies import AdaptRun, Strategy


@dataclass
class TensorSet:
    """Prepared inputs and targets of one data set."""

    x: torch.Tensor  # (N, C, H, W) float, or (N, 3*S*S + 136) packed pixels + landmarks
    y: torch.Tensor  # (N, n_occ + n_int) float, NaN = unknown

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def avalanche(self):
        load_avalanche()
        from avalanche.benchmarks.utils import AvalancheDataset

        t = torch.zeros(len(self), dtype=torch.long)
        return AvalancheDataset([TensorDataset(self.x, self.y, t)])

    def concat(self, *others: "TensorSet") -> "TensorSet":
        return TensorSet(torch.cat([self.x, *(o.x for o in others)]), torch.cat([self.y, *(o.y for o in others)]))


@dataclass(frozen=True)
class Stream:
    """One experience of the loop: a stage name, its data and its epochs."""

    stage: str  # 'base' (consolidation: small steps), 'person', 'joint'...
    data: TensorSet
    epochs: int
    lr_factor: float = 1.0


def tensor_set(model, crops: np.ndarray, landmarks: np.ndarray, y: np.ndarray) -> TensorSet:
    """Aligned uint8 RGB crops (N, S, S, 3), their crop landmarks (N, 68, 2) and targets -> TensorSet.
    A landmark-using model gets the landmarks packed behind the pixels (see :class:`Packed`)."""
    x = to_tensor(crops)
    if model.needs_landmarks:
        lm = torch.from_numpy(np.nan_to_num(np.asarray(landmarks, np.float32)))
        x = torch.cat([x.flatten(1), lm.flatten(1)], 1)
    return TensorSet(x, torch.from_numpy(np.asarray(y, np.float32)))


class Packed(nn.Module):
    """A landmark-using AU model taking one packed tensor (pixels then 68x2 landmarks)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.m = model
        self.side = model.align.crop_size

    def forward(self, x: torch.Tensor):
        S = self.side
        return self.m(x[:, : 3 * S * S].reshape(-1, 3, S, S), x[:, 3 * S * S :].reshape(-1, 68, 2))


def packed(model: nn.Module) -> nn.Module:
    """``model`` itself, or for a landmark-using AU model the :class:`Packed` wrapper."""
    return Packed(model) if getattr(model, "needs_landmarks", False) else model


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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@torch.no_grad()
def predict_outputs(model: nn.Module, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i : i + batch]) for i in range(0, len(x), batch)]) if len(x) else torch.zeros(0)


def occurrence_scores(model: nn.Module, data: TensorSet, n_occ: int) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (N, n_occ), labels (N, n_occ) with NaN unknown) of an OutputAdapter model."""
    out = predict_outputs(model, data.x)
    return torch.sigmoid(out[:, :n_occ]).numpy(), data.y[:, :n_occ].numpy()


def macro_f1(prob: np.ndarray, y: np.ndarray, threshold: float = 0.5) -> float:
    """Mean F1 over AUs that have at least one known positive label (NaN labels masked)."""
    f1s = [f1_score(y[:, j], (prob[:, j] >= threshold).astype(int)) for j in range(y.shape[1]) if (y[:, j] == 1).any()]
    return float(np.mean(f1s)) if f1s else float("nan")


def set_metrics(model, data: TensorSet, aus: list[str]) -> dict:
    """Per-AU F1 and AUC (F1 left out where an AU has no known positive) + macro F1 of an AU model
    on a TensorSet (occurrence part)."""
    p, y = occurrence_scores(OutputAdapter(packed(model)), data, len(aus))
    table = au_metrics(y, p, aus)
    per_au = {
        r.au: {"f1": float(r.f1) if r.n_pos else None, "auc": float(r.auc), "n": int(r.n), "positives": int(r.n_pos)}
        for r in table.itertuples(index=False)
    }
    return {"macro_f1": macro_f1(p, y), "per_au": per_au}


def make_bce_lwf_plugin(teacher: nn.Module, alpha: float, temperature: float, n_occ: int):
    """Learning without Forgetting for multi-label outputs: the student's per-AU sigmoid is pulled
    toward the frozen base model's (binary cross-entropy between Bernoulli distributions at
    temperature T, scaled by T^2), and its intensities toward the base intensities (MSE). Avalanche's
    own LwF uses a softmax over classes, which is wrong for independent AUs."""
    from avalanche.training.plugins import SupervisedPlugin

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


def make_real_frames_plugin(real: TensorSet, weight: float, n_occ: int, batch_size: int, seed: int):
    """The real-frame plugin every training strategy gets (:func:`train_streams`; half the training
    batch size): each training iteration also draws ``batch_size`` of the person's own unlabeled real frames and adds ``weight`` x
    the binary cross-entropy of the model's occurrence logits against ``real``'s targets (the base
    model's probabilities where it was confident, NaN elsewhere, masked). The strategies stay the
    rigidity/plasticity knob on the synthetic data; this keeps what the base model was sure of on the
    person's real face."""
    from avalanche.training.plugins import SupervisedPlugin

    targets = real.y[:, :n_occ]
    usable = torch.nonzero(~torch.isnan(targets).all(1)).flatten()

    class RealFramesPlugin(SupervisedPlugin):
        def __init__(self) -> None:
            super().__init__()
            self.rng = torch.Generator().manual_seed(int(seed) + 104729)

        def before_backward(self, strategy, **kwargs):
            if weight <= 0 or not len(usable):
                return
            idx = usable[torch.randint(len(usable), (min(batch_size, len(usable)),), generator=self.rng)]
            y = targets[idx]
            known = ~torch.isnan(y)
            logits = strategy.model(real.x[idx])[:, :n_occ]
            loss = nn.functional.binary_cross_entropy_with_logits(logits[known], y[known])
            strategy.loss = strategy.loss + weight * loss

    return RealFramesPlugin()


def _normalise(tensors) -> None:
    """Scale importance tensors in place to mean 1 over all their entries (negative entries to 0)."""
    tensors = list(tensors)
    for t in tensors:
        t.clamp_(min=0.0)
    total = sum(float(t.sum()) for t in tensors)
    count = sum(t.numel() for t in tensors)
    if total > 0:
        for t in tensors:
            t.mul_(count / total)


def normalised_ewc_plugin(ewc_lambda: float):
    """Avalanche's EWCPlugin with each experience's Fisher importances scaled to mean 1 (see
    :func:`fewshot.adaptation.strategies.consolidation_lambda`)."""
    load_avalanche()
    from avalanche.training.plugins import EWCPlugin

    class NormalisedEWC(EWCPlugin):
        def compute_importances(self, *args, **kwargs):
            importances = super().compute_importances(*args, **kwargs)
            _normalise(v.data for v in importances.values())
            return importances

    return NormalisedEWC(ewc_lambda=ewc_lambda)


def normalised_si_plugin(si_lambda: float):
    """Avalanche's SynapticIntelligencePlugin with each experience's path importances scaled to mean 1
    after Avalanche computes (and clips) them."""
    load_avalanche()
    from avalanche.training.plugins import SynapticIntelligencePlugin

    class NormalisedSI(SynapticIntelligencePlugin):
        # Avalanche 0.6 stores the reference and the per-step weights as ``param.detach().cpu().flatten()``,
        # which on the CPU is a view of the live parameter, not a copy: the penalty (w - w*)^2 and every
        # step's weight change were identically 0, so SI did nothing at any lambda. Copies here.
        def before_training_exp(self, strategy, **kwargs):
            super().before_training_exp(strategy, **kwargs)
            for v in self.ewc_data[0].values():
                v.data = v.data.clone()

        def before_training_iteration(self, strategy, **kwargs):
            super().before_training_iteration(strategy, **kwargs)
            for v in self.syn_data["old_theta"].values():
                v.data = v.data.clone()

        def after_training_iteration(self, strategy, **kwargs):
            syn = self.syn_data
            params = dict(self.allowed_parameters(strategy.model, self.excluded_parameters))
            for name, path in syn["trajectory"].items():
                p = params[name]
                new = p.detach().flatten().clone()
                syn["new_theta"][name].data = new
                if p.grad is not None:
                    path.data += p.grad.detach().flatten() * (new - syn["old_theta"][name].data)

        def after_training_exp(self, strategy, **kwargs):
            super().after_training_exp(strategy, **kwargs)
            _normalise(v.data for v in self.ewc_data[1].values())

    return NormalisedSI(si_lambda=si_lambda)


AVALANCHE_MODULES = (
    "avalanche.benchmarks.utils", "avalanche.benchmarks.scenarios.dataset_scenario", "avalanche.training.plugins",
    "avalanche.training.plugins.evaluation", "avalanche.training.storage_policy", "avalanche.training.templates",
)


def load_avalanche() -> None:
    """Import the Avalanche modules the loop and the strategies use, once, without their import-time
    side effects: qpsolvers' 'no QP solver' warning, and wandb (which Avalanche imports unconditionally)
    creating ``*wandb-media`` / ``*wandb-artifacts`` folders in the system temp folder that a killed
    process leaves behind. wandb is stood in for by an empty module during the import only, so a real
    ``import wandb`` later in the process is unaffected."""
    if all(m in sys.modules for m in AVALANCHE_MODULES):
        return
    stub = None
    if "wandb" not in sys.modules:
        stub = types.ModuleType("wandb")
        stub.__path__ = []  # a package, so `import wandb.x` fails as ImportError, not AttributeError
        sys.modules["wandb"] = stub
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name in AVALANCHE_MODULES:
                importlib.import_module(name)
    finally:
        if stub is not None and sys.modules.get("wandb") is stub:
            del sys.modules["wandb"]


def train_streams(strategy: "Strategy", run: "AdaptRun") -> pd.DataFrame:
    """Train ``run.model`` in place on the streams ``strategy`` builds, with its plugins; returns the
    curves table (one row per experience x epoch: stage, epoch, loss, macro F1 on every eval set,
    seconds; row 0 = before adaptation)."""
    load_avalanche()
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.training.plugins import SupervisedPlugin
    from avalanche.training.plugins.evaluation import EvaluationPlugin
    from avalanche.training.templates import SupervisedTemplate

    model, loop, plasticity = packed(run.model), run.loop, run.plasticity
    n_occ, n_int = len(run.model.aus), len(run.model.intensity_aus)
    wrapped = OutputAdapter(model)
    curves: list[dict] = []
    t0 = time.perf_counter()

    def evaluate(stage: str, epoch: int, loss: float) -> None:
        row = {"stage": stage, "epoch": epoch, "loss": loss, "seconds": time.perf_counter() - t0}
        for name, ds in run.eval_sets.items():
            p, y = occurrence_scores(wrapped, ds, n_occ)
            row[f"f1_{name}"] = macro_f1(p, y)
        curves.append(row)
        wrapped.train()

    evaluate("start", 0, float("nan"))
    strategy.prepare(run.model)

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
            if run.progress:
                print(f"  [{strategy.name}] {self.stage} epoch {self.epoch}: loss {curves[-1]['loss']:.4f}", file=sys.stderr)

    class FrozenNorm(SupervisedPlugin):
        """Normalisation layers keep the base model's running statistics: a few hundred rows of one
        person would otherwise replace statistics learned on every training face, which no weight
        penalty protects (the base validation data lost ~0.03 macro F1 at any EWC / SI lambda)."""

        def before_training_iteration(self, s, **kw):
            for m in s.model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()

    curve_plugin = Curves()
    seed_everything(run.seed)
    base_av = run.base.avalanche() if run.base is not None and len(run.base) else None
    ctx = PluginContext(model=wrapped, base_dataset=base_av, n_occ=n_occ, batch_size=loop.batch_size)
    plugins = strategy.plugins(plasticity, ctx) + [curve_plugin, FrozenNorm()]
    if run.real is not None and len(run.real) and loop.real_weight > 0:
        plugins.append(make_real_frames_plugin(run.real, loop.real_weight, n_occ, max(2, loop.batch_size // 2), run.seed))
    pos_weight = torch.from_numpy(positive_weights(run.person.y[:, :n_occ].numpy()))
    criterion = AULoss(n_occ, n_int, pos_weight)
    params = [p for p in wrapped.parameters() if p.requires_grad]
    lr = loop.lr * strategy.lr_scale(plasticity)
    optimizer = torch.optim.Adam(params, lr=lr)
    streams = strategy.streams(run.person, run.base, plasticity, loop)
    bm = benchmark_from_datasets(train=[s.data.avalanche() if s.data is not run.base else base_av for s in streams])
    # one template for all experiences: its clock counts experiences, which EWC/SI key their state on
    with warnings.catch_warnings():  # "No loggers specified": the curves plugin is our logger
        warnings.simplefilter("ignore", UserWarning)
        evaluator = EvaluationPlugin()
    template = SupervisedTemplate(
        model=wrapped, optimizer=optimizer, criterion=criterion, train_mb_size=loop.batch_size, train_epochs=1,
        plugins=plugins, evaluator=evaluator, device="cpu",
    )
    for stream, exp in zip(streams, bm.train_stream):
        seed_everything(run.seed + 7919 * len(curves))
        template.train_epochs = stream.epochs
        for g in optimizer.param_groups:
            g["lr"] = lr * stream.lr_factor
        curve_plugin.stage, curve_plugin.epoch = stream.stage, 0
        # Avalanche 0.6 calls its own deprecated APIs (replay's storage update) and resets the warning
        # filters as it does: record what training warns, drop Avalanche's deprecations, pass the rest on
        with warnings.catch_warnings(record=True) as caught:
            template.train(exp, num_workers=0)
        for w in caught:
            if not (issubclass(w.category, DeprecationWarning) and "avalanche" in w.filename):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    for p in run.model.parameters():
        p.requires_grad_(True)
    run.model.eval()
    return pd.DataFrame(curves)


@dataclass
class PluginContext:
    """What a strategy may use to build its plugins."""

    model: nn.Module  # the OutputAdapter-wrapped model being adapted
    base_dataset: object  # AvalancheDataset of the base replay buffer (may be None)
    n_occ: int
    batch_size: int
