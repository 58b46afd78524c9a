"""Stage 5: person-specific adaptation, the main job.

    from fewshot.adapt import adapt_person, AdaptConfig
    res = adapt_person("photo.jpg", out_dir="adapted/")     # or a clip, a folder, RGB arrays
    res.model, res.report, res.checkpoint

Pipeline: analyse the photo/clip (stage 1; a clip's best reference frames), fit the person's profile
and design a balanced grid over the base model's AUs (stage 2), synthesize it (stage 3), align the
synthetic faces as the base model expects (stage 4) and fine-tune with a continual-learning strategy
(:mod:`fewshot.strategies`) in the Avalanche loop of :mod:`fewshot.adapt_loop`. The report measures
plasticity (held-out synthetic rows of this person; real labelled frames with ``eval_data``) and
rigidity (the base model's own validation buffer before and after).

Outputs in ``out_dir`` (written into a temporary sibling folder and moved in only when complete):
``model.pt`` (a normal checkpoint: loads in ``fewshot predict``), ``report.json``, ``synthetic.png``
(contact sheet of the synthetic set), ``curves.png`` and ``curves.csv`` (adaptation curves).
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .errors import CheckpointError, ConfigError

DEFAULT_STRATEGY = "si"


@dataclass(frozen=True)
class AdaptConfig:
    """Every knob of an adaptation run (recorded in the report)."""

    strategy: str = DEFAULT_STRATEGY
    plasticity: float = 0.5  # 0 = keep the base model, 1 = learn the person freely
    grid_size: int = 200
    grid_strategy: str = "balanced"
    render_size: int = 128  # synthesis resolution; the model's own crop size is applied after
    epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 32
    holdout: float = 0.2  # share of synthetic rows kept for the plasticity metrics
    consolidate_epochs: int = 1
    reference_frames: int = 5  # best frames of a clip used for the profile and calibration
    seed: int = 0
    threads: int = 2  # torch threads (fixed, so results are bit-for-bit repeatable)

    def validate(self) -> None:
        from .strategies import STRATEGIES

        STRATEGIES.get(self.strategy)
        if not 0.0 <= self.plasticity <= 1.0:
            raise ConfigError(f"--plasticity must be in [0, 1], not {self.plasticity}")
        if self.grid_size < 10:
            raise ConfigError(f"--grid-size must be at least 10, not {self.grid_size}")
        if not 0.0 < self.holdout < 0.9:
            raise ConfigError(f"holdout must be in (0, 0.9), not {self.holdout}")


@dataclass
class AdaptResult:
    model: Any  # au_models.AUModel (eval mode)
    meta: dict
    report: dict
    curves: pd.DataFrame
    checkpoint: Path | None = None
    out_dir: Path | None = None
    synthetic_images: np.ndarray | None = field(default=None, repr=False)


def default_base_model() -> Path:
    """The base checkpoint shipped inside the package."""
    from au_models import __file__ as au_init

    return Path(au_init).parent / "data" / "base.pt"


class _Stages:
    """Wall time and peak resident memory after each stage."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self._t = time.perf_counter()

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        self.rows.append({"stage": name, "seconds": round(now - self._t, 3), "peak_rss_mb": round(peak_mb, 1)})
        self._t = now


def _reference_faces(references, k: int):
    """Stage 1 on the references -> (faces used for the profile, their RGB frames, source name)."""
    from .analysis import Analyzer
    from .io import FrameSource, read_image
    from .selection import reference_faces

    an = Analyzer(embed=True)
    if isinstance(references, (str, os.PathLike)):
        src = FrameSource(references)
        if src.kind == "image":
            img = read_image(references)
            faces = an.analyze_image(img, str(references))
            if not faces:
                from .errors import NoFaceError

                raise NoFaceError(f"{references}: no face found in the photo; use a well-lit, roughly frontal face at least 80 px wide")
            return faces[:1], [img], str(references)
        # embeddings cost ~0.1 s a frame: analyse the whole clip without them, embed the chosen frames
        result = Analyzer(embed=False).analyze(references, progress=False)
        faces = reference_faces(result, k)
        wanted = {f.frame for f in faces}
        frames = {fr.index: fr.image for fr in FrameSource(references) if fr.index in wanted}
        faces = [dataclasses.replace(f, embedding=an.backend.embed(frames[f.frame], f.landmarks)) for f in faces]
        return faces, [frames[f.frame] for f in faces], str(references)
    imgs = list(references)
    faces, frames = [], []
    for i, img in enumerate(imgs):
        found = an.analyze_image(np.asarray(img), f"<reference {i}>")
        if found:
            faces.append(found[0])
            frames.append(np.asarray(img))
    if not faces:
        from .errors import NoFaceError

        raise NoFaceError("no face found in any reference image; use well-lit, roughly frontal faces")
    return faces, frames, "<arrays>"


def _labels(grid: pd.DataFrame, aus: Sequence[str], intensity_aus: Sequence[str], threshold: float) -> np.ndarray:
    """Targets in the OutputAdapter layout: occurrence 0/1 then intensity 0..5; NaN where the grid
    has no such AU column."""
    n = len(grid)
    occ = np.full((n, len(aus)), np.nan, np.float32)
    for j, a in enumerate(aus):
        if a in grid:
            occ[:, j] = (grid[a].to_numpy(float) >= threshold).astype(np.float32)
    inten = np.full((n, len(intensity_aus)), np.nan, np.float32)
    for j, a in enumerate(intensity_aus):
        if a in grid:
            inten[:, j] = grid[a].to_numpy(np.float32)
    return np.concatenate([occ, inten], axis=1)


def _buffer_labels(buf: dict, n_occ: int, n_int: int) -> np.ndarray:
    occ = np.asarray(buf["occ"], np.float32)
    occ = np.where(occ < 0, np.nan, occ)
    inten = np.asarray(buf["intensity"], np.float32).reshape(len(occ), -1)[:, :n_int]
    if inten.shape[1] < n_int:
        inten = np.concatenate([inten, np.full((len(occ), n_int - inten.shape[1]), np.nan, np.float32)], 1)
    return np.concatenate([occ[:, :n_occ], inten], axis=1)


def _tensor_set(model, crops: np.ndarray, lm: np.ndarray, y: np.ndarray):
    import torch

    from au_models.model import to_tensor

    from .adapt_loop import TensorSet

    x = to_tensor(crops)
    if model.needs_landmarks:  # pack crop landmarks behind the pixels (see _packed)
        x = torch.cat([x.flatten(1), torch.from_numpy(np.nan_to_num(np.asarray(lm, np.float32))).flatten(1)], 1)
    return TensorSet(x, torch.from_numpy(np.asarray(y, np.float32)))


def _packed(model):
    """``model`` itself, or for a landmark-using AU model a wrapper that takes one packed tensor
    (pixels then 68x2 landmarks, see :func:`_tensor_set`)."""
    if not model.needs_landmarks:
        return model
    from torch import nn

    S = model.align.crop_size

    class Packed(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(x[:, : 3 * S * S].reshape(-1, 3, S, S), x[:, 3 * S * S :].reshape(-1, 68, 2))

    return Packed(model)


def _metrics(model, data, aus: Sequence[str]) -> dict:
    """Per-AU F1 and AUC (``au_models.metrics.au_metrics``; F1 left out where an AU has no known
    positive) + macro F1 on a TensorSet (occurrence part)."""
    from au_models.metrics import au_metrics

    from .adapt_loop import macro_f1, occurrence_scores
    from .strategies import OutputAdapter

    p, y = occurrence_scores(OutputAdapter(_packed(model)), data, len(aus))
    table = au_metrics(np.where(np.isnan(y), -1, y).astype(np.int8), p, aus)
    per_au = {
        r.au: {"f1": float(r.f1) if r.n_pos else None, "auc": float(r.auc), "n": int(r.n), "positives": int(r.n_pos)}
        for r in table.itertuples(index=False)
    }
    return {"macro_f1": macro_f1(p, y), "per_au": per_au}


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


def _contact_sheet(images: np.ndarray, grid: pd.DataFrame, aus: Sequence[str], n: int = 24, cols: int = 6) -> np.ndarray:
    import cv2

    idx = np.unique(np.linspace(0, len(images) - 1, min(n, len(images))).round().astype(int))
    S = images.shape[1]
    rows = int(np.ceil(len(idx) / cols))
    sheet = np.full((rows * (S + 16), cols * S, 3), 255, np.uint8)
    for k, i in enumerate(idx):
        r, c = divmod(k, cols)
        sheet[r * (S + 16) : r * (S + 16) + S, c * S : (c + 1) * S] = images[i]
        on = [a[2:] for a in aus if a in grid and grid[a].iloc[i] >= 1]
        label = ("AU " + ",".join(on)) if on else "neutral"
        cv2.putText(sheet, label[: S // 6], (c * S + 2, r * (S + 16) + S + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 0, 0), 1, cv2.LINE_AA)
    return sheet


def _plot_curves(curves: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    step = np.arange(len(curves))
    a1.plot(step[1:], curves["loss"].iloc[1:], "o-", color="k")
    a1.set_xlabel("epoch (all experiences)")
    a1.set_ylabel("training loss")
    for c in [c for c in curves.columns if c.startswith("f1_")]:
        a2.plot(step, curves[c], "o-", label=c[3:])
    a2.set_xlabel("epoch (0 = before adaptation)")
    a2.set_ylabel("macro F1")
    a2.legend(fontsize=8)
    for k, st in enumerate(curves["stage"]):
        if k and st != curves["stage"].iloc[k - 1]:
            for a in (a1, a2):
                a.axvline(k - 0.5, color="grey", lw=0.5, ls="--")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _base_sets(model, meta: dict, n_occ: int, n_int: int):
    """(replay TensorSet or None, validation TensorSet or None, name of the validation source)."""
    rep = meta.get("replay")
    val = meta.get("validation")
    mk = lambda b: _tensor_set(model, b["images"], b["landmarks"], _buffer_labels(b, n_occ, n_int))  # noqa: E731
    replay = mk(rep) if rep is not None and len(rep.get("images", [])) else None
    if val is not None and len(val.get("images", [])):
        return replay, mk(val), "base validation buffer"
    return replay, replay, "base replay buffer (no validation buffer in the checkpoint)"


def adapt_person(
    references,
    base: str | os.PathLike | None = None,
    config: AdaptConfig = AdaptConfig(),
    out_dir: str | os.PathLike | None = None,
    eval_data: Any = None,
    progress: bool = True,
) -> AdaptResult:
    """Adapt the base AU model to the person in ``references`` (photo path, clip, folder, or a list
    of uint8 RGB arrays). ``eval_data``: an ``experiments.datasets.AUFrames`` of real labelled frames
    of this person (optional). See the module doc for outputs."""
    import torch

    from au_models.align import align_faces
    from au_models.checkpoint import load_checkpoint
    from generators import design_grid, fit_profile
    from generators.render import generate

    from .adapt_loop import run_adaptation, seed_everything
    from .strategies import STRATEGIES

    config.validate()
    strategy = STRATEGIES.create(config.strategy)
    torch.set_num_threads(config.threads)
    stages = _Stages()
    base_path = Path(base) if base else default_base_model()
    if not base and not base_path.exists():
        raise CheckpointError(f"{base_path}: the shipped base model is missing; rebuild it with `python scripts/make_base_model.py` or pass --base")
    model, meta = load_checkpoint(base_path)
    from generators.aus import AU_CODES

    known = set(AU_CODES)
    aus = list(model.aus)
    grid_aus = [a for a in aus if a in known]
    if not grid_aus:
        raise CheckpointError(f"{base_path}: incompatible base model: none of its AUs ({', '.join(aus)}) can be synthesized; use a model over FACS AUs")
    stages.mark("load base model")

    faces, frames, source = _reference_faces(references, config.reference_frames)
    stages.mark("analyse")
    # the profile's reference is the most frontal face; hand its pixels over (arrays have no file)
    ref_i = int(np.argmin([float(np.abs(f.pose.rotation[:2]).sum()) for f in faces]))
    profile = fit_profile(faces, image=frames[ref_i])
    grid = design_grid(profile, n=config.grid_size, strategy=config.grid_strategy, aus=grid_aus, seed=config.seed)
    stages.mark("design grid")
    batch = generate(profile, grid, size=config.render_size)
    stages.mark("synthesize")

    crops, crop_lm, ok = align_faces(batch.images, batch.landmarks, model.align)
    threshold = float(meta.get("occurrence_threshold", 1.0))
    y = _labels(grid, aus, model.intensity_aus, threshold)
    crops, crop_lm, y, grid_ok = crops[ok], crop_lm[ok], y[ok], grid[ok].reset_index(drop=True)
    n = len(crops)
    rng = np.random.default_rng(config.seed)
    perm = rng.permutation(n)
    n_hold = max(1, int(round(config.holdout * n)))
    hold, train = np.sort(perm[:n_hold]), np.sort(perm[n_hold:])
    n_occ, n_int = len(aus), len(model.intensity_aus)
    person = _tensor_set(model, crops[train], crop_lm[train], y[train])
    holdout = _tensor_set(model, crops[hold], crop_lm[hold], y[hold])
    replay, base_val, val_source = _base_sets(model, meta, n_occ, n_int)
    ref_lm = np.stack([f.landmarks for f in faces])
    ref_crops, ref_crop_lm, _ = align_faces(frames, ref_lm, model.align)
    stages.mark("align")

    before = {"person_holdout": _metrics(model, holdout, aus)}
    if base_val is not None:
        before["base_validation"] = _metrics(model, base_val, aus)
    eval_set = None
    if eval_data is not None:
        eval_set = _eval_tensor_set(model, eval_data, aus)
        before["person_real"] = _metrics(model, eval_set, aus)

    seed_everything(config.seed)
    calibration = None
    if config.strategy == "calibration":
        calibration = calibrate_to_neutral(model, ref_crops, ref_crop_lm, strength=strategy.knob(config.plasticity))
        curves = pd.DataFrame([{"stage": "calibration", "epoch": 0, "loss": np.nan, "seconds": 0.0}])
    else:
        pos = np.nanmean(np.where(np.isnan(y[train, :n_occ]), np.nan, y[train, :n_occ]), axis=0)
        pw = torch.from_numpy(np.clip((1 - np.nan_to_num(pos, nan=0.5)) / np.clip(np.nan_to_num(pos, nan=0.5), 0.05, 1), 0.2, 10).astype(np.float32))
        eval_sets = {"person_holdout": holdout}
        if base_val is not None:
            eval_sets["base_validation"] = base_val
        if eval_set is not None:
            eval_sets["person_real"] = eval_set
        packed = _packed(model)
        _, curves = run_adaptation(
            packed, strategy, config.plasticity, person, replay, n_occ, n_int, eval_sets,
            epochs=config.epochs, lr=config.lr, batch_size=config.batch_size, seed=config.seed,
            consolidate_epochs=config.consolidate_epochs, pos_weight=pw,
            backbone_params=lambda m: list(model.backbone.parameters()), progress=progress,
        )
    model.eval()
    stages.mark("adapt")

    after = {"person_holdout": _metrics(model, holdout, aus)}
    if base_val is not None:
        after["base_validation"] = _metrics(model, base_val, aus)
    if eval_set is not None:
        after["person_real"] = _metrics(model, eval_set, aus)
    stages.mark("evaluate")

    report = {
        "source": source,
        "base_model": str(base_path),
        "config": asdict(config),
        "strategy": {"name": strategy.name, "parameter": strategy.parameter, "value": strategy.knob(config.plasticity)},
        "reference_frames": [int(f.frame) for f in faces],
        "synthetic": {"rows": int(len(grid)), "rendered": int(n), "train": int(len(train)), "holdout": int(len(hold)),
                      "aus": grid_aus, "occurrence_threshold": threshold, "generator": batch.generator},
        "plasticity": {"person_holdout_macro_f1_before": before["person_holdout"]["macro_f1"],
                       "person_holdout_macro_f1_after": after["person_holdout"]["macro_f1"]},
        "rigidity": {"source": val_source},
        "before": before,
        "after": after,
        "calibration": calibration,
        "stages": stages.rows,
    }
    if base_val is not None:
        b, a = before["base_validation"]["macro_f1"], after["base_validation"]["macro_f1"]
        report["rigidity"].update(base_macro_f1_before=b, base_macro_f1_after=a, drop=b - a)
    if eval_set is not None:
        report["plasticity"].update(person_real_macro_f1_before=before["person_real"]["macro_f1"],
                                    person_real_macro_f1_after=after["person_real"]["macro_f1"])
    adapted_meta = {k: v for k, v in meta.items() if k not in ("replay", "validation", "model", "preprocessing")}
    adapted_meta["adaptation"] = {k: report[k] for k in ("source", "base_model", "config", "strategy", "reference_frames", "plasticity", "rigidity", "calibration")}
    result = AdaptResult(model, adapted_meta, report, curves, synthetic_images=batch.images)
    if out_dir is not None:
        result.out_dir = Path(out_dir)
        result.checkpoint = _write_outputs(result, meta, grid_ok, aus)
    stages.mark("write outputs")
    report["stages"] = stages.rows
    if out_dir is not None:  # final timings into the written report
        from .io import atomic_path

        with atomic_path(result.out_dir / "report.json") as tmp:
            tmp.write_text(json.dumps(_jsonable(report), indent=2))
    return result


def _eval_tensor_set(model, frames, aus: Sequence[str]):
    """Real labelled frames (AUFrames) -> TensorSet, aligned with their own landmarks (or stage 1)."""
    from au_models.align import align_faces

    from .analysis import Analyzer

    t = frames.table
    imgs = [frames.load_image(i) for i in range(len(t))]
    lm = frames.landmarks() if hasattr(frames, "landmarks") else np.full((len(t), 68, 2), np.nan)
    if np.isnan(lm).all():
        an = Analyzer(embed=False)
        found = [an.analyze_image(im) for im in imgs]
        lm = np.stack([f[0].landmarks if f else np.full((68, 2), np.nan) for f in found])
    crops, clm, ok = align_faces(imgs, lm, model.align)
    occ = np.full((len(t), len(aus)), np.nan, np.float32)
    for j, a in enumerate(aus):
        if a in t:
            v = t[a].to_numpy(float)
            occ[:, j] = np.where(v < 0, np.nan, v)
    y = np.concatenate([occ, np.full((len(t), len(model.intensity_aus)), np.nan, np.float32)], 1)
    return _tensor_set(model, crops[ok], clm[ok], y[ok])


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not np.isfinite(x) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, Path):
        return str(x)
    return x


def _write_outputs(res: AdaptResult, base_meta: dict, grid: pd.DataFrame, aus: Sequence[str]) -> Path:
    """Write everything into a temporary sibling folder, then move the files into out_dir."""
    from au_models.checkpoint import save_checkpoint

    from .io import write_image

    out = res.out_dir
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        replay = base_meta.get("replay")
        save_checkpoint(tmp / "model.pt", res.model, res.meta, replay=replay)
        (tmp / "report.json").write_text(json.dumps(_jsonable(res.report), indent=2))
        res.curves.to_csv(tmp / "curves.csv", index=False)
        _plot_curves(res.curves, tmp / "curves.png", f"{res.report['strategy']['name']} (plasticity {res.report['config']['plasticity']})")
        if res.synthetic_images is not None and len(res.synthetic_images):
            write_image(tmp / "synthetic.png", _contact_sheet(res.synthetic_images, grid, aus))
        out.mkdir(parents=True, exist_ok=True)
        for f in tmp.iterdir():
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out / "model.pt"
