"""The per-identity adaptation protocol: one *cell* = one test subject x one adaptation configuration.

    from experiments.protocol import CELL_KINDS, run_cell
    rows = run_cell(cell, context)      # DataFrame, one row per AU

A cell (a plain JSON-able dict, expanded by :mod:`experiments.runner`) names ``dataset``, ``fold``,
``subject``, ``k`` (reference frames), ``generator`` ('none' = no synthesis), ``strategy``,
``plasticity`` (None for baselines), ``seed`` and the shared ``protocol`` / ``adapt`` settings. The
context holds what the runner prepared once: the aligned-face cache of the data set
(:mod:`au_models.cache`, rows in table order), a small frame index (subject, sequence, frame, image
path...), the base checkpoint of the fold, the fold's test subjects and the data set's protocol AUs.

Protocol of the ``per_identity`` cell kind:

1. **References**: the subject's k most neutral frames (``protocol.reference = 'neutral'``: the stage-1
   expression residual of :func:`fewshot.selection.expression_residual` at the pose of
   :func:`fewshot.pose.estimate_pose`, computed on the aligned landmarks, missing points filled from the
   canonical template; frames at least ``reference_gap`` apart within a sequence), or the first k
   (``'first'``), or given frame numbers (``protocol.reference_frames: {subject: [frame, ...]}``).
   Their labels are unknown at deployment, so they are taken as neutral (every AU absent, intensity 0)
   unless ``reference_labels: dataset`` (an oracle, for ablations).
2. **Adaptation** of the base model by the cell's strategy, through the stage calls of
   :mod:`fewshot.adaptation` (``build_person_set`` -> ``adapt``), the same path as ``fewshot adapt``:
   any strategy of :data:`fewshot.adaptation.STRATEGIES`, e.g. the baselines ``generic`` (the base
   model unchanged), ``calibration`` (OpenFace-style neutral calibration on the references, at full
   strength) and ``finetune_real`` (plain fine-tuning on the k real frames alone, no rehearsal); with
   ``generator: none`` the strategy trains on the real references (with the base replay buffer), with
   a generator name on the synthetic set rendered from them. The cell's ``adapt`` settings are an
   :class:`fewshot.adaptation.AdaptConfig` mapping (``{loop: {epochs: 5}, synthesis: {appearance: ...}}``).
3. **Evaluation** on every other coded frame of the subject (``eval_includes_references: true``
   evaluates the references too, as the London protocol does), and on a fixed sample
   (``max_other_frames``, seeded by the fold) of the fold's other test subjects (forgetting). The base
   model is evaluated on the same frames, so every row carries its own generic reference.

Result columns (one row per AU of the data set's protocol that the model predicts): the cell's config
(cell_id, dataset, fold, subject, k, generator, strategy, plasticity, seed), ``au``, on the subject:
``n, n_pos, f1, auc, tp, fp, fn, tn, mean_p_pos, mean_p_neg, brier`` (adapted; :func:`confusion`) and
``f1_base, auc_base, tp_base, mean_p_pos_base, brier_base...`` (generic); on the other subjects the same
with ``_other`` (``f1_other``, ``f1_other_base``...); per cell (the same on each of its rows) the
expression head on the subject's frames with a labelled expression: ``expr_n``, ``expr_acc``,
``expr_happy_on_happy``, ``expr_happy_on_other`` and their ``_base`` (:func:`expression_scores`;
NaN where the data set labels no expression); ``references`` (the
chosen frames as 'sequence:frame'), ``n_references``, ``rendered_by`` (the generator that rendered the
person's set, 'none' without synthesis), ``synthetic_rows`` and ``synthetic_sha1`` (of the rendered
images: tells two cells' synthetic sets apart), timings ``seconds_adapt``, ``seconds_total``,
``started_at`` (UTC), and versions ``v_fewshot, v_torch, v_numpy, v_python``.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
import pandas as pd
import torch

from au_models.align import canonical_template
from au_models.cache import load_aligned
from au_models.checkpoint import load_checkpoint, versions
from au_models.losses import occurrence_targets
from au_models.metrics import f1_score, roc_auc
from au_models.model import to_tensor
from experiments.datasets.base import AUFrames
from fewshot.adaptation import AdaptConfig, References, adapt, analyse_references, build_person_set
from fewshot.errors import ConfigError
from fewshot.pose import estimate_pose
from fewshot.registry import Registry
from fewshot.selection import expression_residual
from generators.render import GENERATORS

GENERATOR_FILE_OPTIONS = ("appearance", "refiner", "texture")  # synthesis options a generator may or may not take

PROTOCOL_DEFAULTS: dict[str, Any] = {
    "reference": "neutral",  # neutral | first | given
    "reference_frames": {},  # subject -> [frame, ...] or ['T1:40', ...] (reference: given)
    "reference_gap": 0,  # frames between two references of one sequence
    "reference_labels": "neutral",  # neutral (deployment: labels unknown) | dataset (oracle)
    "eval_includes_references": False,
    "max_eval_frames": 0,  # 0 = every other coded frame of the subject
    "max_other_frames": 2000,  # forgetting sample from the fold's other test subjects (0 = all, -1 = none)
    "threshold": 0.5,
}

CellFn = Callable[[dict, dict], pd.DataFrame]
CELL_KINDS: Registry[CellFn] = Registry("cell kind")


def cell_id(cell: dict) -> str:
    """Stable id of a cell: the first 16 hex digits of SHA-1 over its canonical JSON (sorted keys)."""
    blob = json.dumps(cell, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def run_cell(cell: dict, context: dict, kind: str = "per_identity") -> pd.DataFrame:
    """Run one cell with the registered cell function ``kind``; returns its result rows."""
    return CELL_KINDS.get(kind)(cell, context)


# -- references ------------------------------------------------------------------------------------
def neutral_residuals(crop_landmarks: np.ndarray, crop_size: int, template: np.ndarray) -> np.ndarray:
    """(N,) stage-1 expression residual (inter-ocular units) of aligned faces.

    crop_landmarks: (N, 68, 2) crop pixels, NaN missing (BP4D has no jaw, DISFA no inner-mouth corners):
    missing points are taken from ``template`` (68, 2), which alignment maps the face onto, so they add
    the same constant to every frame. Faces that cannot be posed get +inf.
    """
    out = np.full(len(crop_landmarks), np.inf)
    size = (crop_size, crop_size)
    for i, lm in enumerate(np.asarray(crop_landmarks, np.float64)):
        if not np.isfinite(lm).any():
            continue
        filled = np.where(np.isfinite(lm), lm, template)
        try:
            out[i] = expression_residual(filled, estimate_pose(filled, size), size)
        except Exception:  # noqa: BLE001 - a degenerate face (PnP failure) is just never a reference
            continue
    return np.where(np.isfinite(out), out, np.inf)


def choose_references(index: pd.DataFrame, rows: np.ndarray, residual: np.ndarray | None, k: int, protocol: dict, subject: str) -> np.ndarray:
    """Row numbers (into ``index``) of the k references among ``rows`` (the subject's usable rows)."""
    mode = protocol["reference"]
    if mode == "given":
        wanted = [str(v) for v in (protocol.get("reference_frames") or {}).get(subject, [])]
        seq = index["sequence"].astype(str).to_numpy()[rows]
        fr = index["frame"].to_numpy()[rows]
        keys = [f"{s}:{f}" for s, f in zip(seq, fr)]
        chosen = []
        for w in wanted:
            hit = [i for i, key in enumerate(keys) if key == w or (":" not in w and str(fr[i]) == w)]
            if not hit:
                raise ConfigError(f"protocol.reference_frames: frame {w!r} of subject {subject} is not a usable coded frame")
            chosen.append(rows[hit[0]])
        return np.asarray(chosen[:k], np.int64)
    if mode == "first":
        return rows[:k]
    order = rows[np.argsort(residual, kind="stable")] if residual is not None else rows
    gap = int(protocol.get("reference_gap") or 0)
    chosen: list[int] = []
    if gap > 0:
        seqs, frames = index["sequence"].astype(str).to_numpy(), index["frame"].to_numpy()
        for r in order:
            if all(seqs[r] != seqs[c] or abs(int(frames[r]) - int(frames[c])) >= gap for c in chosen):
                chosen.append(int(r))
            if len(chosen) == k:
                break
    for r in order:  # too few frames far enough apart: fill with the next most neutral
        if len(chosen) == k:
            break
        if int(r) not in chosen:
            chosen.append(int(r))
    return np.asarray(chosen, np.int64)


# -- model helpers ---------------------------------------------------------------------------------
def model_outputs(model, crops: np.ndarray, landmarks: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(occurrence logits (N, n_model_aus), expression logits (N, n_expressions)) of an AU model on
    aligned uint8 RGB crops; a model without an expression head gives (N, 0)."""
    model.eval()
    needs_lm = bool(getattr(model, "needs_landmarks", False))
    n_expr = len(getattr(model, "expressions", []))
    occ, expr = [], []
    with torch.no_grad():
        for s in range(0, len(crops), batch_size):
            x = to_tensor(crops[s : s + batch_size])
            lm = torch.from_numpy(np.asarray(landmarks[s : s + batch_size], np.float32)) if needs_lm else None
            o = model(x, lm) if needs_lm else model(x)
            if isinstance(o, dict):
                occ.append(o["occ_logits"].float().numpy())
                e = o.get("expr_logits")
                expr.append(e.float().numpy() if e is not None else np.zeros((len(x), 0), np.float32))
            else:
                occ.append(o[:, : len(model.aus)].float().numpy())
                expr.append(np.zeros((len(x), 0), np.float32))
    if not occ:
        return np.zeros((0, len(model.aus)), np.float32), np.zeros((0, n_expr), np.float32)
    return np.concatenate(occ), np.concatenate(expr)


def model_logits(model, crops: np.ndarray, landmarks: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Occurrence logits (N, n_model_aus) of an AU model on aligned uint8 RGB crops."""
    return model_outputs(model, crops, landmarks, batch_size)[0]


def _labels_for_model(model, aus: list[str], intensity_aus: list[str], occ: np.ndarray, inten: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    o = np.full((len(occ), len(model.aus)), -1, np.int8)
    for j, au in enumerate(model.aus):
        if au in aus:
            o[:, j] = occ[:, aus.index(au)]
    i = np.full((len(occ), len(model.intensity_aus)), np.nan, np.float32)
    for j, au in enumerate(model.intensity_aus):
        if au in intensity_aus:
            i[:, j] = inten[:, intensity_aus.index(au)]
    return o, i


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def confusion(y: np.ndarray, prob: np.ndarray, threshold: float) -> dict[str, float]:
    """Scores of one AU over its known labels (y >= 0; prob = P(present) in [0, 1]): the counts ``n``,
    ``n_pos``, ``tp, fp, fn, tn`` at ``threshold``, ``f1``, ``auc``; ``mean_p_pos`` / ``mean_p_neg``,
    the mean P over the positive / negative frames (the sensitivity of the scores, and their false
    alarm level: NaN without such a frame); ``brier``, the mean squared error of P against the 0/1
    labels (calibration: 0 perfect, 0.25 = always 0.5; NaN without a known label)."""
    known = y >= 0
    t, p = y[known] == 1, prob[known] >= threshold
    pk = np.asarray(prob, np.float64)[known]
    return {
        "n": int(known.sum()), "n_pos": int(t.sum()),
        "tp": int((t & p).sum()), "fp": int((~t & p).sum()), "fn": int((t & ~p).sum()), "tn": int((~t & ~p).sum()),
        "f1": f1_score(y, (prob >= threshold).astype(int)), "auc": roc_auc(y, prob),
        "mean_p_pos": _mean(pk[t]), "mean_p_neg": _mean(pk[~t]), "brier": _mean((pk - t) ** 2),
    }  # fmt: skip


def expression_scores(labels: np.ndarray, label_names: list[str], prob: np.ndarray, model_names: list[str]) -> dict[str, float]:
    """What the expression head says on frames with a known expression (``labels`` (N,) indexes into
    ``label_names``, -1 unknown; ``prob`` (N, n_classes) over ``model_names``): ``expr_n`` (frames with
    a known label), ``expr_acc`` (share it names right), ``expr_happy_on_happy`` (share of the
    happy-labelled frames it calls happy) and ``expr_happy_on_other`` (share of the frames labelled with
    another expression it calls happy: a clip's crying frames, the London neutral photos). NaN where
    no such frame exists or the head has no 'happy' class."""
    labels = np.asarray(labels, np.int64).reshape(-1)
    known = labels >= 0
    out = {"expr_n": int(known.sum()), "expr_acc": float("nan"), "expr_happy_on_happy": float("nan"), "expr_happy_on_other": float("nan")}
    if not known.any() or prob.shape[1] == 0:
        return out
    named = np.asarray([label_names[i] for i in labels[known]], object)
    called = np.asarray(model_names, object)[np.argmax(prob[known], axis=1)]
    out["expr_acc"] = float(np.mean(called == named))
    if "happy" in model_names:
        happy = named == "happy"
        out["expr_happy_on_happy"] = _mean((called[happy] == "happy").astype(float))
        out["expr_happy_on_other"] = _mean((called[~happy] == "happy").astype(float))
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def adapt_config(cell: dict, threads: int = 1) -> AdaptConfig:
    """The :class:`AdaptConfig` of a cell: its ``adapt`` mapping, then the grid axes (strategy,
    plasticity (1 for the baselines, which have none), seed, generator) and the runner's threads."""
    plasticity = 1.0 if cell.get("plasticity") is None else float(cell["plasticity"])
    config = AdaptConfig.from_dict(cell.get("adapt") or {}, "adapt").override({
        "strategy.name": cell["strategy"], "strategy.plasticity": plasticity, "seed": int(cell["seed"]),
        "synthesis.generator": cell["generator"], "loop.threads": threads, "analysis.reference_frames": int(cell["k"]),
    })
    # one `adapt.synthesis` serves every generator of the grid: each cell keeps the file options its
    # generator takes (warp+refiner its --refiner, warp none), and 'none' renders nothing at all
    taken = GENERATORS.get(cell["generator"]).options if config.synthesizes else ()
    unused = [k for k in GENERATOR_FILE_OPTIONS if k not in taken] + ([] if config.synthesizes else ["motion"])
    return config.override({f"synthesis.{k}": None for k in unused})


# -- the cell --------------------------------------------------------------------------------------
def _read_cache(path: str | Path):
    """(AlignedSet over every row, lazily read; ok (N,) bool) of an aligned cache."""
    data = load_aligned(path, in_memory=False, only_ok=False)
    with h5py.File(path, "r") as f:
        ok = np.asarray(f["ok"], bool)
    return data, ok


def _seeded_sample(rows: np.ndarray, n: int, seed: int) -> np.ndarray:
    if n <= 0 or len(rows) <= n:
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, n, replace=False))


@CELL_KINDS.register("per_identity", "k references of one test subject -> adapt -> evaluate on the subject and on the fold's other test subjects")
def per_identity_cell(cell: dict, ctx: dict) -> pd.DataFrame:
    """Run the protocol of the module docstring for one cell; one row per evaluated AU."""
    t_start = time.perf_counter()
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    torch.set_num_threads(int(ctx.get("threads", 1)))
    protocol = {**PROTOCOL_DEFAULTS, **(cell.get("protocol") or {})}
    subject, k, seed = str(cell["subject"]), int(cell["k"]), int(cell["seed"])
    base, meta = load_checkpoint(ctx["checkpoint"])
    data, ok = _read_cache(ctx["cache"])
    index = pd.read_parquet(ctx["index"])
    if len(index) != len(ok):
        raise ConfigError(f"{ctx['index']}: {len(index)} rows but the cache {ctx['cache']} has {len(ok)}; delete the run's prepared/ folder")
    subjects = index["subject"].astype(str).to_numpy()

    rows = np.flatnonzero((subjects == subject) & ok)
    residual = None
    if protocol["reference"] == "neutral" and len(rows):
        residual = neutral_residuals(data.landmarks[rows], data.align.crop_size, canonical_template(data.align))
    refs = choose_references(index, rows, residual, k, protocol, subject)
    if len(refs) < k:
        raise ConfigError(f"k: subject {subject} has {len(rows)} usable frame(s), fewer than k={k}")
    self_rows = rows if protocol["eval_includes_references"] else np.setdiff1d(rows, refs)
    self_rows = _seeded_sample(self_rows, int(protocol["max_eval_frames"]), 7 * int(cell["fold"]) + 1)
    others = [s for s in ctx["test_subjects"] if s != subject]
    other_rows = np.flatnonzero(np.isin(subjects, others) & ok)
    max_other = int(protocol["max_other_frames"])
    other_rows = other_rows[:0] if max_other < 0 else _seeded_sample(other_rows, max_other, int(cell["fold"]))

    ref_set = data.subset(refs)
    aus = [a for a in ctx["aus"] if a in base.aus]
    config = adapt_config(cell, int(ctx.get("threads", 1))).validate()
    t_adapt = time.perf_counter()
    model = copy.deepcopy(base)
    if config.synthesizes:  # the profile is fitted on the raw frames: analyse them as `fewshot adapt` does
        frames = AUFrames(str(cell["dataset"]), index.iloc[refs].reset_index(drop=True), list(ctx["aus"]), [], Path(str(cell["root"])))
        references = analyse_references([frames.load_image(i) for i in range(len(refs))], config.analysis)
        frames.close()
    else:  # the references as the cache aligned them; labels unknown at deployment: taken as neutral
        labels = None
        if protocol["reference_labels"] == "dataset":  # an oracle, for ablations
            occ, inten = _labels_for_model(base, ref_set.aus, ref_set.intensity_aus, ref_set.occ, ref_set.intensity)
            labels = np.concatenate([occurrence_targets(occ), inten], 1)
        references = References([], [], f"{cell['dataset']}:{subject}", crops=ref_set.take_images(np.arange(len(refs))),
                                crop_landmarks=ref_set.landmarks, labels=labels)
    person = build_person_set(references, model, meta, config, ctx["checkpoint"])
    adapt(model, meta, person, config, eval_sets={})
    seconds_adapt = time.perf_counter() - t_adapt

    def probs(m, rows_: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(P(AU present) (n, n_model_aus), expression softmax (n, n_expressions)) on the rows."""
        sub = data.subset(rows_)
        occ, expr = model_outputs(m, sub.take_images(np.arange(len(rows_))), sub.landmarks)
        if expr.shape[1]:
            expr = np.exp(expr - expr.max(axis=1, keepdims=True))
            expr /= expr.sum(axis=1, keepdims=True)
        return _sigmoid(occ), expr

    label_cols = [data.aus.index(a) for a in aus]
    out_rows = []
    evals = {}
    expr_cols: dict[str, float] = {}
    for tag, rr in (("", self_rows), ("_other", other_rows)):
        y = data.occ[rr][:, label_cols] if len(rr) else np.zeros((0, len(aus)), np.int8)
        (pb, eb) = probs(base, rr) if len(rr) else (np.zeros((0, len(base.aus))), np.zeros((0, 0)))
        (pa, ea) = probs(model, rr) if len(rr) else (np.zeros((0, len(base.aus))), np.zeros((0, 0)))
        evals[tag] = (y, pb, pa)
        if tag == "":  # the expression head on the person's frames whose expression is labelled
            names = list(getattr(base, "expressions", []))
            expr_cols = expression_scores(data.expr[rr], list(data.expressions), ea, names)
            expr_cols.update({f"{k}_base": v for k, v in expression_scores(data.expr[rr], list(data.expressions), eb, names).items() if k != "expr_n"})
    thr = float(protocol["threshold"])
    seq, fr = index["sequence"].astype(str).to_numpy(), index["frame"].to_numpy()
    ref_names = ";".join(f"{seq[r]}:{fr[r]}" for r in refs)
    v = versions()
    for j, au in enumerate(aus):
        mj = base.aus.index(au)
        row: dict[str, Any] = {"au": au}
        for tag, (y, pb, pa) in evals.items():
            yj = y[:, j] if len(y) else np.zeros(0, np.int8)
            for name, val in confusion(yj, pa[:, mj] if len(pa) else np.zeros(0), thr).items():
                row[f"{name}{tag}"] = val
            for name, val in confusion(yj, pb[:, mj] if len(pb) else np.zeros(0), thr).items():
                if name not in ("n", "n_pos"):
                    row[f"{name}{tag}_base"] = val
        out_rows.append(row)
    df = pd.DataFrame(out_rows)
    config_cols = {
        "dataset": cell["dataset"], "fold": int(cell["fold"]), "subject": subject, "k": k, "generator": cell["generator"],
        "strategy": cell["strategy"], "plasticity": np.nan if cell.get("plasticity") is None else float(cell["plasticity"]), "seed": seed,
    }  # fmt: skip
    for i, (c, val) in enumerate(config_cols.items()):
        df.insert(i, c, val)
    df.insert(0, "cell_id", cell_id(cell))
    for name, val in expr_cols.items():
        df[name] = val
    df["references"] = ref_names
    df["rendered_by"] = person.generator  # what really rendered the person's set ('none': no synthesis)
    df["synthetic_rows"] = 0 if person.images is None else len(person.images)
    df["synthetic_sha1"] = "" if person.images is None else hashlib.sha1(np.ascontiguousarray(person.images).tobytes()).hexdigest()
    df["n_references"] = len(refs)
    df["n_other_subjects"] = len(others)
    df["seconds_adapt"] = seconds_adapt
    df["seconds_total"] = time.perf_counter() - t_start
    df["started_at"] = started
    for name, val in v.items():
        df[f"v_{name}"] = val
    return df
