"""What `fewshot adapt --clip` does to the detector on the person's own real frames (the checks of step 10).

    python scripts/clip_adapt_check.py [--clip ../shared/data/pexels_clip/WolfgangLanger_Pexels.mp4]
                                       [--strategies si,calibration,...] [--seeds 0] [--out runs/clip_adapt_check]
                                       [--write-results [--section clip_adapt]]

For each strategy (default: the default of `fewshot adapt`) and seed, the clip is adapted to exactly as
`fewshot adapt --clip` does (``fewshot.adaptation.adapt_person``, defaults otherwise), and the base and
the adapted model predict every frame. Reported, on the clip's coarse labels (Pexels: frames 0-130 crying,
240-471 laughing; nothing in adaptation sees them): AUC of P(AU12) laughing vs crying, mean P(AU12) on
the laughing frames (sensitivity), the share of crying / laughing frames the expression head calls
happy; the references chosen, how expressive they were and what the profile had taken out; the run's
own base-validation macro F1 drop and its wall time. Per-frame tables go to ``<out>/`` (CSV).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CRYING, LAUGHING = (0, 130), (240, 471)


def auc(pos, neg) -> float:
    from au_models.metrics import roc_auc

    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    return roc_auc(np.r_[np.ones(len(pos), int), np.zeros(len(neg), int)], np.r_[pos, neg])


def frame_table(model, frames, faces) -> pd.DataFrame:
    from au_models.predict import Predictor

    pred = Predictor(model)
    imgs = [frames[f.frame] for f in faces]
    out, ok = pred.faces(imgs, np.stack([f.landmarks for f in faces]), 64)
    tab = pred.table(out, ok)
    tab.insert(0, "frame", [f.frame for f in faces])
    return tab


def figures(tab: pd.DataFrame) -> dict:
    cry, laugh = tab[tab.frame.between(*CRYING)], tab[tab.frame.between(*LAUGHING)]
    return {"AU12_auc": auc(laugh.AU12_p, cry.AU12_p), "AU12_mean_laughing": float(laugh.AU12_p.mean()),
            "AU12_mean_crying": float(cry.AU12_p.mean()), "crying_happy": float((cry.expression == "happy").mean()),
            "laughing_happy": float((laugh.expression == "happy").mean())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clip", type=Path, default=ROOT.parent / "shared/data/pexels_clip/WolfgangLanger_Pexels.mp4")
    ap.add_argument("--strategies", default=None, help="comma-separated (default: the default strategy)")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--out", type=Path, default=ROOT / "runs/clip_adapt_check")
    ap.add_argument("--write-results", action="store_true")
    ap.add_argument("--section", default="clip_adapt")
    a = ap.parse_args(argv)
    if not a.clip.is_file():
        print(f"error: {a.clip}: no such clip; pass --clip", file=sys.stderr)
        return 2

    from fewshot.adaptation import AdaptConfig, adapt_person, load_base
    from fewshot.analysis import Analyzer
    from fewshot.io import FrameSource

    strategies = a.strategies.split(",") if a.strategies else [AdaptConfig().strategy.name]
    seeds = [int(s) for s in a.seeds.split(",")]
    a.out.mkdir(parents=True, exist_ok=True)
    result = Analyzer(embed=False).analyze(a.clip, progress=False)
    faces = [f for f in result.faces if f.face_id == 0]
    frames = {fr.index: fr.image for fr in FrameSource(a.clip)}
    base, _, _ = load_base(None)
    base_tab = frame_table(base, frames, faces)
    base_tab.to_csv(a.out / "base.csv", index=False)
    rows = [{"strategy": "base model", "seed": "", **figures(base_tab)}]
    print("base", rows[0], flush=True)
    for name in strategies:
        for seed in seeds:
            config = AdaptConfig().override({"strategy.name": name, "seed": seed})
            t = time.perf_counter()
            res = adapt_person(a.clip, config=config, progress=False)
            seconds = time.perf_counter() - t
            tab = frame_table(res.model, frames, faces)
            tab.to_csv(a.out / f"{name}_seed{seed}.csv", index=False)
            r = res.report
            refs = r.references
            rows.append({"strategy": name, "seed": seed, **figures(tab), "seconds": seconds,
                         "base_f1_drop": r.rigidity.get("drop", float("nan")), "references": refs.get("frames"),
                         "expression_score": refs.get("expression_score"), "near_neutral": refs.get("near_neutral"),
                         "neutralized": refs.get("neutralized"), "kept": r.to_dict().get("guard", {}).get("kept", True)})
            print(name, seed, {k: v for k, v in rows[-1].items() if k not in ("strategy", "seed")}, flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(a.out / "summary.csv", index=False)
    (a.out / "summary.json").write_text(json.dumps(rows, indent=1, default=str))
    if a.write_results:
        from experiments.results_doc import invocation, markdown_table, update_section

        def f(v, d=3):
            return "" if v is None or (isinstance(v, float) and not np.isfinite(v)) else (f"{v:.{d}f}" if isinstance(v, float) else str(v))

        md_rows = [[r["strategy"], str(r["seed"]), f(r["AU12_auc"]), f(r["AU12_mean_laughing"]), f(r["AU12_mean_crying"]),
                    f(r["crying_happy"]), f(r["laughing_happy"]), f(r.get("base_f1_drop")), f(r.get("seconds"), 1),
                    " ".join(str(x) for x in r.get("references") or []),
                    ", ".join(f"{k} {v:.1f}" for k, v in (r.get("neutralized") or {}).items())] for r in rows]
        md = (f"Clip `{a.clip.name}`: every frame predicted by the base model and by the model `fewshot adapt --clip` wrote "
              f"(defaults but the strategy/seed named). Labels (never seen by adaptation): crying {CRYING[0]}-{CRYING[1]}, "
              f"laughing {LAUGHING[0]}-{LAUGHING[1]}.\n\n"
              + markdown_table(["strategy", "seed", "AU12 AUC laughing vs crying", "mean P(AU12) laughing", "mean P(AU12) crying",
                                "crying called happy", "laughing called happy", "base val F1 drop", "adapt s", "references", "neutralized"], md_rows))
        update_section(a.section, md, command=invocation())
    return 0


if __name__ == "__main__":
    sys.exit(main())
