"""Base-model training protocol: data set -> aligned cache -> subject-exclusive folds -> model + metrics.

    from experiments.train import train_base
    res = train_base("bp4d", "/data/BP4D", fold=1, backbone="compact", out="bp4d_fold1.pt")
    res.metrics          # one row per AU per fold: fold, au, n, n_pos, base_rate, f1, auc, n_int, icc, mae

DISFA and BP4D use the standard JAA-Net / ME-GraphAU 3-fold partitions (fold1 tests part3, ...);
other data sets (folder, synthetic) get a seeded subject-exclusive 3-way partition. A validation set
for early stopping is split off the training subjects (subject-exclusive too). ``fold=0`` trains on
every subject (no test metrics). Writes ``out`` (the checkpoint), ``<out stem>.metrics.csv`` and
``<out stem>.subjects.csv`` (per-subject breakdown).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from au_models.align import AlignConfig
from au_models.metrics import summarize
from fewshot.errors import ConfigError, Interrupted
from fewshot.io import write_table

from .datasets import load_dataset

FOLDS = (1, 2, 3)


@dataclass
class TrainBaseResult:
    checkpoints: list[Path]
    metrics: pd.DataFrame  # one row per AU per fold
    per_subject: pd.DataFrame
    history: pd.DataFrame  # one row per epoch per fold


def parse_folds(fold: int | str | Sequence[int]) -> list[int]:
    """'1' -> [1]; 'all' -> [1, 2, 3]; '1,3' -> [1, 3]; 0 -> [0] (train on everything)."""
    if isinstance(fold, (list, tuple)):
        return [int(f) for f in fold]
    s = str(fold).strip().lower()
    if s == "all":
        return list(FOLDS)
    try:
        out = [int(v) for v in s.split(",")]
    except ValueError:
        raise ConfigError(f"--fold {fold!r}: use 1, 2, 3, a list like 1,3, 'all', or 0 for no test fold") from None
    if any(f not in (0, *FOLDS) for f in out):
        raise ConfigError(f"--fold {fold!r}: folds are 1, 2, 3 (0 = train on every subject)")
    return out


def fold_subjects(frames, fold: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """(train subjects, test subjects) of ``fold`` for an AUFrames."""
    subjects = frames.subjects()
    if fold == 0:
        return subjects, []
    if frames.name in ("disfa", "bp4d"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tr, te = frames.split(fold)
        return tr.subjects(), te.subjects()
    if len(subjects) < 3:
        raise ConfigError(f"{frames.name}: {len(subjects)} subject(s); subject-exclusive folds need at least 3 (or use --fold 0)")
    order = [subjects[i] for i in np.random.default_rng(seed).permutation(len(subjects))]
    parts = [order[i::3] for i in range(3)]
    test = sorted(parts[fold - 1])
    return sorted(set(subjects) - set(test)), test


def cache_path(frames, cache_dir: Path, crop_size: int) -> Path:
    """Where the aligned cache of ``frames`` at ``crop_size`` px lives under ``cache_dir`` (keyed by name, root and size)."""
    key = hashlib.sha1(f"{frames.name}:{Path(frames.root).resolve()}:{len(frames.table)}:{crop_size}".encode()).hexdigest()[:10]
    return cache_dir / f"{frames.name}_{crop_size}px_{key}.h5"


def train_base(
    dataset: str,
    root: str | os.PathLike,
    fold: int | str | Sequence[int] = 1,
    backbone: str = "compact",
    out: str | os.PathLike = "model.pt",
    epochs: int = 20,
    lr: float = 2e-3,
    batch_size: int = 64,
    seed: int = 0,
    crop_size: int = 112,
    val_fraction: float = 0.2,
    cache_dir: str | os.PathLike | None = None,
    replay_size: int = 128,
    backbone_config: dict | None = None,
    dataset_options: dict | None = None,
    intensity: bool = True,
    patience: int = 5,
    threads: int = 2,
    progress: bool = True,
) -> TrainBaseResult:
    """Train one base model per fold and evaluate it on the fold's test subjects (see module doc).

    With several folds, checkpoints are ``<out stem>_fold<k>.pt``. Per-epoch training state goes to
    ``<cache_dir>/run_<out stem>_fold<k>/`` so an interrupted run resumes.
    """
    import torch

    from au_models.cache import build_cache, load_aligned
    from au_models.checkpoint import save_checkpoint, versions
    from au_models.model import AUModel
    from au_models.train import TrainConfig, evaluate, replay_buffer, subject_split, train

    folds = parse_folds(fold)
    out = Path(out)
    cache_dir = Path(cache_dir) if cache_dir else out.parent / "cache"
    frames = load_dataset(dataset, root, **(dataset_options or {}))
    align = AlignConfig(crop_size=crop_size)
    cache = build_cache(frames, cache_path(frames, cache_dir, crop_size), align, progress=progress)
    data = load_aligned(cache)
    aus = list(frames.aus)
    intensity_aus = list(frames.intensity_aus) if intensity else []
    cfg = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, patience=patience, threads=threads, progress=progress)
    ckpts, tables, subj_tables, histories = [], [], [], []
    for k in folds:
        train_subj, test_subj = fold_subjects(frames, k, seed)
        fit_subj, val_subj = subject_split(train_subj, val_fraction, seed)
        fit, val, test = data.by_subjects(fit_subj), data.by_subjects(val_subj), data.by_subjects(test_subj)
        torch.manual_seed(seed)
        model = AUModel(backbone, aus, intensity_aus, align=align, backbone_config=backbone_config)
        path = out if len(folds) == 1 else out.with_name(f"{out.stem}_fold{k}{out.suffix}")
        state = cache_dir / f"run_{path.stem}"
        try:
            res = train(model, fit, val, cfg, checkpoint_dir=state)
        except KeyboardInterrupt:
            raise Interrupted(f"{path}: not written; the training state after the last finished epoch is kept in {state}; "
                              "run the same command again to resume") from None
        hist = res.history.assign(fold=k)
        histories.append(hist)
        summary: dict = {}
        if len(test):
            table = evaluate(model, test)
            table.insert(0, "fold", k)
            tables.append(table)
            per_subj = evaluate(model, test, by_subject=True)
            per_subj.insert(0, "fold", k)
            subj_tables.append(per_subj)
            summary = summarize(table, aus)
        prov = dict(
            dataset=dataset, root=str(Path(root).resolve()), fold=k, seed=seed, train_subjects=fit_subj, val_subjects=val_subj,
            test_subjects=test_subj, n_train=len(fit), n_val=len(val), n_test=len(test), best_epoch=res.best_epoch,
            train_config=asdict(replace(cfg, progress=False)), pos_weight=res.pos_weight, metrics=summary,
            per_au=tables[-1].drop(columns="fold").to_dict("list") if len(test) else {}, versions=versions(),
        )  # fmt: skip
        replay = replay_buffer(fit, replay_size, seed) if replay_size > 0 else None
        save_checkpoint(path, model, {"provenance": prov}, replay=replay)
        ckpts.append(path)
    metrics = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    per_subject = pd.concat(subj_tables, ignore_index=True) if subj_tables else pd.DataFrame()
    if len(metrics):
        write_table(metrics, out.with_name(f"{out.stem}.metrics.csv"))
        write_table(per_subject, out.with_name(f"{out.stem}.subjects.csv"))
    return TrainBaseResult(ckpts, metrics, per_subject, pd.concat(histories, ignore_index=True))
