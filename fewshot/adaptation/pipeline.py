"""Stage 5, the main job: specialise a base AU model to one person.

    from fewshot.adaptation import AdaptConfig, adapt_person
    res = adapt_person("photo.jpg", out_dir="adapted/")      # or a clip, a folder, RGB arrays
    res.model, res.report, res.checkpoint

:func:`adapt_person` is four stage calls, which the experiment protocol and the scripts call too:

1. :func:`~fewshot.adaptation.person.build_person_set` (after
   :func:`~fewshot.adaptation.person.analyse_references`): profile, balanced grid, synthesis, alignment,
   seeded train / held-out split;
2. :func:`adapt`: the strategy's own :meth:`~fewshot.adaptation.strategies.Strategy.adapt`;
3. :func:`evaluate`: plasticity (held-out synthetic rows of the person; real labelled frames with
   ``eval_data``) and rigidity (the base model's validation buffer) before and after;
4. :func:`write_outputs`: ``model.pt`` (a normal checkpoint: loads in ``fewshot predict``),
   ``report.json``, ``synthetic.png`` (contact sheet), ``curves.png`` and ``curves.csv``, written into a
   temporary sibling folder and moved into place only when complete. An existing result is replaced
   only with ``overwrite=True``; a folder holding anything else is never written into.
"""

from __future__ import annotations

import copy
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from au_models import base_model_path
from au_models.checkpoint import load_checkpoint, save_checkpoint
from generators.sheet import au_caption, tile_sheet

from ..errors import CheckpointError, ConfigError
from ..io import write_image
from .config import AdaptConfig
from .loop import OutputAdapter, occurrence_scores, packed, seed_everything, set_metrics
from .person import PersonSet, References, analyse_references, buffer_set, build_person_set, labelled_frames_set, synthesizable_aus
from .strategies import STRATEGIES, AdaptRun, Outcome

OUTPUT_FILES = ("model.pt", "report.json", "synthetic.png", "curves.png", "curves.csv")


@dataclass
class AdaptReport:
    """What a run did and measured (``report.json``). Metric blocks: ``{"macro_f1", "per_au"}`` per
    evaluation set (person_holdout, base_validation, person_real)."""

    source: str
    base_model: str
    config: dict
    strategy: dict  # name, parameter, value (the knob at this plasticity)
    reference_frames: list[int]
    synthetic: dict  # rows, rendered, train, holdout, aus, occurrence_threshold, generator
    plasticity: dict
    rigidity: dict
    before: dict
    after: dict
    calibration: dict | None = None
    stages: list[dict] = field(default_factory=list)
    references: dict = field(default_factory=dict)  # frames, expression scores, near_neutral, what was neutralized
    guard: dict = field(default_factory=dict)  # kept, written, checks (name, before, after, allowed, passed), failed
    real_frames: dict = field(default_factory=dict)  # before / after: the person's real frames (real_frame_figures)

    def to_dict(self) -> dict:
        return _jsonable(asdict(self))


@dataclass
class AdaptResult:
    model: Any  # au_models.AUModel (eval mode)
    meta: dict  # checkpoint metadata of the adapted model
    report: AdaptReport
    curves: pd.DataFrame
    person: PersonSet | None = field(default=None, repr=False)
    checkpoint: Path | None = None
    out_dir: Path | None = None


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


def load_base(base: str | os.PathLike | None):
    """(model, meta, path) of the base checkpoint (default: the shipped one)."""
    path = Path(base) if base else base_model_path()
    if not base and not path.exists():
        raise CheckpointError(f"{path}: the shipped base model is missing; rebuild it with `python scripts/make_base_model.py` or pass --base")
    model, meta = load_checkpoint(path)
    return model, meta, path


def check_out_dir(out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse, before any work, an output folder that would lose or mix data: a file, a folder holding
    an earlier result (unless ``overwrite``), or a folder holding anything that is not ours."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: is a file, not a folder; pass --out a new folder name")
    if out.is_dir():
        entries = sorted(p.name for p in out.iterdir())
        foreign = [e for e in entries if e not in OUTPUT_FILES]
        if foreign:
            raise ConfigError(f"{out}: the folder holds other files ({', '.join(foreign[:3])}{'...' if len(foreign) > 3 else ''}); pass --out a new or empty folder")
        if entries and not overwrite:
            raise ConfigError(f"{out}: holds an earlier result ({', '.join(entries)}); pass --overwrite to replace it, or another --out")
    return out


def adapt(model, meta: dict, person: PersonSet, config: AdaptConfig, eval_sets: dict, progress: bool = False) -> Outcome:
    """Stage 5 proper: the configured strategy adapts ``model`` in place on ``person``."""
    strategy = STRATEGIES.create(config.strategy.name)
    replay = buffer_set(model, meta.get("replay"))
    crops, lm = person.neutral_reference(model)
    run = AdaptRun(model=model, person=person.train, reference_crops=crops, reference_landmarks=lm, base=replay,
                   eval_sets=eval_sets, plasticity=config.strategy.plasticity, loop=config.loop, seed=config.seed, progress=progress,
                   real=person.real.train if person.real is not None else None)
    seed_everything(config.seed)
    outcome = strategy.adapt(run)
    model.eval()
    return outcome


def eval_sets_for(model, meta: dict, person: PersonSet, eval_data: Any = None) -> tuple[dict, str]:
    """The evaluation sets of a run (person_holdout, base_validation, person_real) and the name of the
    base validation source."""
    base_val, val_source = buffer_set(model, meta.get("validation")), "base validation buffer"
    if base_val is None:
        base_val, val_source = buffer_set(model, meta.get("replay")), "base replay buffer (no validation buffer in the checkpoint)"
    sets = {}
    if person.holdout is not None:
        sets["person_holdout"] = person.holdout
    if base_val is not None:
        sets["base_validation"] = base_val
    if eval_data is not None:
        sets["person_real"] = labelled_frames_set(model, eval_data)
    return sets, val_source


def evaluate(model, eval_sets: dict, aus: list[str]) -> dict:
    """Macro F1 and per-AU F1 / AUC of ``model`` on every evaluation set."""
    return {name: set_metrics(model, data, aus) for name, data in eval_sets.items()}


def adapt_person(
    references,
    base: str | os.PathLike | None = None,
    config: AdaptConfig = AdaptConfig(),
    out_dir: str | os.PathLike | None = None,
    eval_data: Any = None,
    progress: bool = True,
    overwrite: bool = False,
    keep_anyway: bool = False,
) -> AdaptResult:
    """Adapt the base AU model to the person in ``references`` (photo path, clip, folder, a list of
    uint8 RGB arrays, or :class:`References`). ``eval_data``: an ``experiments.datasets.AUFrames`` of
    real labelled frames of this person (optional). See the module doc for the stages and outputs.
    The adapted model is kept only if :func:`keep_or_reject` passes it; otherwise the base model is
    what is returned and written, unless ``keep_anyway``."""
    config.validate()
    if out_dir is not None:
        check_out_dir(out_dir, overwrite)
    strategy = STRATEGIES.create(config.strategy.name)
    torch.set_num_threads(config.loop.threads)
    stages = _Stages()
    model, meta, base_path = load_base(base)
    if config.synthesizes:
        synthesizable_aus(model, base_path)  # an incompatible base model fails before the analysis
    stages.mark("load base model")
    refs = references if isinstance(references, References) else analyse_references(references, config.analysis)
    stages.mark("analyse")
    person = build_person_set(refs, model, meta, config, base_path, mark=stages.mark)
    ref_summary = {**refs.summary(), "neutralized": dict(person.neutralized)}
    if progress:
        print(references_line(ref_summary), file=sys.stderr)
    eval_sets, val_source = eval_sets_for(model, meta, person, eval_data)
    before = evaluate(model, eval_sets, list(model.aus))
    real_before = real_frame_figures(model, person)
    base_state = copy.deepcopy(model.state_dict())
    outcome = adapt(model, meta, person, config, eval_sets, progress)
    stages.mark("adapt")
    after = evaluate(model, eval_sets, list(model.aus))
    real_after = real_frame_figures(model, person)
    guard = keep_or_reject(before, after, real_before, real_after, config.strategy.plasticity, keep_anyway)
    if not guard["kept"] and not keep_anyway:
        model.load_state_dict(base_state)  # what the failed checks protect: the base model is written
        model.eval()
    if progress and guard["failed"]:
        print(guard_line(guard), file=sys.stderr)
    stages.mark("evaluate")

    report = AdaptReport(
        source=refs.source, base_model=str(base_path), config=config.to_dict(),
        strategy={"name": strategy.name, "parameter": strategy.parameter, "value": strategy.knob(config.strategy.plasticity)},
        reference_frames=refs.frame_numbers, synthetic=person.summary, plasticity={}, rigidity={"source": val_source},
        before=before, after=after, calibration=outcome.details.get("calibration"), stages=stages.rows,
        references=ref_summary, guard=guard, real_frames={"before": real_before, "after": real_after},
    )
    for name, block in (("person_holdout", report.plasticity), ("person_real", report.plasticity)):
        if name in before:
            block.update({f"{name}_macro_f1_before": before[name]["macro_f1"], f"{name}_macro_f1_after": after[name]["macro_f1"]})
    if "base_validation" in before:
        b, a = before["base_validation"]["macro_f1"], after["base_validation"]["macro_f1"]
        report.rigidity.update(base_macro_f1_before=b, base_macro_f1_after=a, drop=b - a)
    adapted_meta = {k: v for k, v in meta.items() if k not in ("replay", "validation", "model", "preprocessing")}
    adapted_meta["adaptation"] = {k: getattr(report, k) for k in ("source", "base_model", "config", "strategy", "reference_frames", "references",
                                                                   "plasticity", "rigidity", "calibration", "guard")}
    result = AdaptResult(model, adapted_meta, report, outcome.curves, person=person)
    if out_dir is not None:
        write_outputs(result, out_dir, replay=meta.get("replay"), overwrite=overwrite, stages=stages)
    return result


# The keep-or-reject guard's tolerances. Held-out rows of the person (synthetic, or real labelled
# frames) may not lose macro F1; the base validation data may lose up to BASE_DROP_PER_PLASTICITY x
# the plasticity asked for (0.03 at the default 0.5); on the person's real frames where the base model
# was confident, its sensitivity (mean P on confident positives) may drop by REAL_SENSITIVITY_DROP and
# its false alarms (mean P on confident negatives) rise by REAL_FALSE_ALARM_RISE.
HOLDOUT_TOLERANCE = 0.01
BASE_DROP_PER_PLASTICITY = 0.06
REAL_SENSITIVITY_DROP = 0.02
REAL_FALSE_ALARM_RISE = 0.05


@torch.no_grad()
def real_frame_figures(model, person: PersonSet) -> dict:
    """On the person's held-out real frames (a clip's held-out blocks; a photo's jittered copies), the
    model's mean occurrence probability where the *base* model was confidently positive (sensitivity)
    and confidently negative (false alarms), pooled over AUs and per AU; {} without real frames."""
    real = person.real
    if real is None:
        return {}
    data, where = (real.holdout, "clip held-out blocks") if real.holdout is not None and len(real.holdout) else (real.train, f"{real.kind} frames")

    n_occ = len(model.aus)
    p, y = occurrence_scores(OutputAdapter(packed(model)), data, n_occ)
    pos, neg = y >= 0.5, y < 0.5  # NaN compares False: not confident
    out = {"frames": where, "n": int(len(p)), "n_positive": int(pos.sum()), "n_negative": int(neg.sum()),
           "sensitivity": float(p[pos].mean()) if pos.any() else None, "false_alarms": float(p[neg].mean()) if neg.any() else None,
           "per_au": {}}
    for j, au in enumerate(model.aus):
        if pos[:, j].any() or neg[:, j].any():
            out["per_au"][au] = {"sensitivity": float(p[pos[:, j], j].mean()) if pos[:, j].any() else None,
                                 "false_alarms": float(p[neg[:, j], j].mean()) if neg[:, j].any() else None,
                                 "positives": int(pos[:, j].sum()), "negatives": int(neg[:, j].sum())}
    return out


def keep_or_reject(before: dict, after: dict, real_before: dict, real_after: dict, plasticity: float, keep_anyway: bool = False) -> dict:
    """The keep-or-reject guard: every check (name, before, after, allowed change, passed) of an adapted
    model against the base one, ``kept`` (all passed, or ``keep_anyway``), ``written`` ('adapted' | 'base
    model') and the names of the failed checks."""
    checks = []

    def check(name, b, a, allowed, higher_is_better=True):
        if b is None or a is None or not (np.isfinite(b) and np.isfinite(a)):
            return
        change = (a - b) if higher_is_better else (b - a)
        checks.append({"name": name, "before": round(float(b), 4), "after": round(float(a), 4),
                       "allowed_loss": round(float(allowed), 4), "passed": bool(change >= -allowed - 1e-9)})

    for name in ("person_holdout", "person_real"):
        if name in before:
            check(f"{name} macro F1", before[name]["macro_f1"], after[name]["macro_f1"], HOLDOUT_TOLERANCE)
    if "base_validation" in before:
        check("base validation macro F1", before["base_validation"]["macro_f1"], after["base_validation"]["macro_f1"],
              BASE_DROP_PER_PLASTICITY * plasticity)
    if real_before:
        check(f"real-frame sensitivity ({real_before['frames']})", real_before["sensitivity"], real_after["sensitivity"], REAL_SENSITIVITY_DROP)
        check(f"real-frame false alarms ({real_before['frames']})", real_before["false_alarms"], real_after["false_alarms"],
              REAL_FALSE_ALARM_RISE, higher_is_better=False)
    failed = [c["name"] for c in checks if not c["passed"]]
    kept = not failed or keep_anyway
    return {"kept": kept, "written": "adapted" if kept else "base model", "keep_anyway": bool(keep_anyway), "checks": checks, "failed": failed}


def guard_line(guard: dict) -> str:
    """One line on what the guard refused (stderr)."""
    what = "; ".join(f"{c['name']} {c['before']:.3f} -> {c['after']:.3f} (allowed loss {c['allowed_loss']:.3f})"
                     for c in guard["checks"] if not c["passed"])
    if guard["kept"]:
        return f"guard: kept anyway (--keep-anyway) although {what}"
    return f"guard: the adapted model lost on {what}; writing the base model instead (pass --keep-anyway to keep the adapted one)"


def references_line(summary: dict) -> str:
    """One line on how neutral the references were (printed to stderr, the report holds the figures)."""
    frames = ", ".join(str(f) for f in summary.get("frames", []))
    if summary.get("near_neutral") is None:
        return f"references: frame(s) {frames} (expression not measured)"
    scores = ", ".join(f"{v:.1f}" for v in summary["expression_score"])
    head = f"references: frame(s) {frames}, expression score {scores} (near neutral <= {summary['threshold']:.2f})"
    taken = summary.get("neutralized") or {}
    if taken:
        return (head + "; no reference is near neutral: the profile was neutralized (took out "
                + ", ".join(f"{a} {v:.1f}" for a, v in taken.items()) + ") and calibrates on its rendered neutral face")
    if not summary["near_neutral"]:
        return head + "; no reference is near neutral, and nothing the face model can take out was found"
    return head


def write_outputs(result: AdaptResult, out_dir: str | os.PathLike, replay: dict | None = None, overwrite: bool = False,
                  stages: _Stages | None = None) -> Path:
    """Write a result into ``out_dir`` (see the module doc); returns the checkpoint path."""
    out = check_out_dir(out_dir, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    old = None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # a result folder is shared data, not a private temp folder
        save_checkpoint(tmp / "model.pt", result.model, result.meta, replay=replay)
        result.curves.to_csv(tmp / "curves.csv", index=False)
        _plot_curves(result.curves, tmp / "curves.png", f"{result.report.strategy['name']} (plasticity {result.report.config['strategy']['plasticity']})")
        person = result.person
        if person is not None and person.images is not None and len(person.images):
            captions = [au_caption({a: row[a] for a in person.grid_aus}) for _, row in person.grid.iterrows()]
            write_image(tmp / "synthetic.png", tile_sheet(person.images, captions, n=24, cols=6))
        if stages is not None:
            stages.mark("write outputs")
            result.report.stages = stages.rows
        (tmp / "report.json").write_text(json.dumps(result.report.to_dict(), indent=2))
        if out.exists():  # an earlier result, checked above: keep it until the new one is in place
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    result.out_dir, result.checkpoint = out, out / "model.pt"
    return result.checkpoint


def _plot_curves(curves: pd.DataFrame, path: Path, title: str) -> None:
    fig = Figure(figsize=(9, 3.4))  # no pyplot: no global figure state, no backend switch
    a1, a2 = fig.subplots(1, 2)
    step = np.arange(len(curves))
    a1.plot(step[1:], curves["loss"].iloc[1:], "o-", color="k")
    a1.set_xlabel("epoch (all experiences)")
    a1.set_ylabel("training loss")
    for c in [c for c in curves.columns if c.startswith("f1_")]:
        a2.plot(step, curves[c], "o-", label=c[3:])
    a2.set_xlabel("epoch (0 = before adaptation)")
    a2.set_ylabel("macro F1")
    if any(c.startswith("f1_") for c in curves.columns):
        a2.legend(fontsize=8)
    for k, st in enumerate(curves["stage"]):
        if k and st != curves["stage"].iloc[k - 1]:
            for a in (a1, a2):
                a.axvline(k - 0.5, color="grey", lw=0.5, ls="--")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


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
