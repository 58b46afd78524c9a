"""The London real check of stage 5: adapt from each held-out identity's neutral photo only, then
score that person's two real photos (neutral, smiling) with its own adapted model.

    python scripts/london_check.py [--london ../shared/data/frl_london] [--strategies ...] [--out runs/london_check]
                                   [--generator mesh --motion generators/data/ict_motion.npz] [--section NAME]

Identities: the base model's held-out test identities (recorded in its provenance; the shipped base
model never saw their synthetic grids or photos). For every strategy it reports the pooled AUC of
P(AU12) (and P(AU06)) over smiling-vs-neutral photos, next to the base model's on the same photos.
Per-identity rows go to ``<out>/rows.csv`` (resumable: finished identity x strategy rows are kept),
the summary to ``<out>/summary.csv`` and ``.md``. ``--generator`` / ``--motion``: the synthesis of every
adaptation (default: the config's). A generator that draws a learned expression texture (``mesh``)
gets one learned on the London pairs of the *other* identities (``<out>/texture.npz``), never the
shipped one, which has seen these people's smiles.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def score_photos(model, photos: list[Path], analyzer) -> pd.DataFrame:
    from au_models.predict import predict

    rows = [predict(model, p, analyzer=analyzer, progress=False).iloc[0] for p in photos]
    return pd.DataFrame(rows).reset_index(drop=True)


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    from au_models.metrics import roc_auc

    return roc_auc(np.r_[np.ones(len(pos), int), np.zeros(len(neg), int)], np.r_[pos, neg])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--london", type=Path, default=ROOT.parent / "shared/data/frl_london")
    ap.add_argument("--base", type=Path, default=None)
    ap.add_argument("--strategies", nargs="+", default=["naive", "head", "ewc", "si", "lwf", "replay", "joint", "calibration"])
    ap.add_argument("--plasticity", type=float, default=0.5)
    ap.add_argument("--ids", nargs="*", default=None, help="identities (default: the base model's test identities)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs/london_check")
    ap.add_argument("--generator", default=None, help="synthesis generator (default: the adapt config's)")
    ap.add_argument("--motion", type=Path, default=None, help="AU motion model .npz for the synthesis (default: the config's)")
    ap.add_argument("--write-results", action="store_true", help="replace the --section block of docs/results.md with this run")
    ap.add_argument("--section", default="london_check", help="the docs/results.md block --write-results replaces")
    a = ap.parse_args(argv)

    from fewshot.adaptation import AdaptConfig, adapt_person, load_base
    from fewshot.analysis import Analyzer
    from fewshot.io import write_table

    base, meta, base_path = load_base(a.base)
    ids = a.ids or meta.get("provenance", {}).get("test_subjects")
    if not ids:
        print("error: the base model records no held-out identities; pass --ids", file=sys.stderr)
        return 2
    an = Analyzer(embed=False)
    a.out.mkdir(parents=True, exist_ok=True)
    synthesis = {}
    if a.generator:
        synthesis["synthesis.generator"] = a.generator
    if a.motion:
        synthesis["synthesis.motion"] = str(a.motion)
    from generators.render import GENERATORS

    generator = a.generator or AdaptConfig().synthesis.generator
    if "texture" in GENERATORS.get(generator).options:
        from generators import checks

        texture_path = a.out / "texture.npz"
        if not texture_path.exists():
            others = [i for i in checks.ids(a.london) if i not in set(ids)]
            lmc = checks.london_landmarks(others, an, a.london)
            checks.london_texture(others, lmc, london=a.london).save(texture_path)
            print(f"{texture_path}: expression texture learned on the {len(others)} other London identities", flush=True)
        synthesis["synthesis.texture"] = str(texture_path)
    rows_path = a.out / "rows.csv"
    rows = pd.read_csv(rows_path, dtype={"identity": str}) if rows_path.exists() else pd.DataFrame()
    done = set(zip(rows.get("identity", []), rows.get("strategy", [])))
    for i in ids:
        photos = [a.london / "neutral_front" / f"{i}_03.jpg", a.london / "smiling_front" / f"{i}_08.jpg"]
        todo = [s for s in ["base", *a.strategies] if (i, s) not in done]
        for s in todo:
            t = time.perf_counter()
            if s == "base":
                model = base
            else:
                cfg = AdaptConfig().override({"strategy.name": s, "strategy.plasticity": a.plasticity, **synthesis})
                model = adapt_person(str(photos[0]), base=base_path, config=cfg, progress=False).model
            sc = score_photos(model, photos, an)
            new = pd.DataFrame({"identity": i, "strategy": s, "photo": ["neutral", "smiling"],
                                "AU12_p": sc["AU12_p"].to_numpy(), "AU06_p": sc["AU06_p"].to_numpy(),
                                "seconds": time.perf_counter() - t})
            rows = pd.concat([rows, new], ignore_index=True)
            write_table(rows, rows_path)
            print(f"{i} {s:12s} AU12 neutral {new.AU12_p[0]:.3f} smiling {new.AU12_p[1]:.3f} ({new.seconds[0]:.0f} s)", flush=True)
    summ = []
    for s, g in rows.groupby("strategy", sort=False):
        pos, neg = g[g.photo == "smiling"], g[g.photo == "neutral"]
        summ.append({"strategy": s, "identities": g.identity.nunique(), "AU12_AUC": auc(pos.AU12_p.values, neg.AU12_p.values),
                     "AU06_AUC": auc(pos.AU06_p.values, neg.AU06_p.values),
                     "AU12_p_smiling": pos.AU12_p.mean(), "AU12_p_neutral": neg.AU12_p.mean(),
                     "seconds_per_adapt": g.seconds.mean() if s != "base" else 0.0})
    summ = pd.DataFrame(summ)
    write_table(summ, a.out / "summary.csv")
    md = ["| " + " | ".join(summ.columns) + " |", "|" + "---|" * len(summ.columns)]
    md += ["| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r) + " |" for r in summ.itertuples(index=False)]
    (a.out / "summary.md").write_text("\n".join(md) + "\n")
    print(summ.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if a.write_results:
        from experiments.results_doc import invocation, markdown_table, update_section

        names = {"base": "base model (no adaptation)", "si": "**si** (default)"}
        rows_md = [[names.get(r.strategy, r.strategy), f"{r.AU12_AUC:.3f}", f"{r.AU06_AUC:.3f}", f"{r.AU12_p_smiling:.3f}",
                    f"{r.AU12_p_neutral:.3f}", "-" if r.strategy == "base" else f"{r.seconds_per_adapt:.1f}"] for r in summ.itertuples(index=False)]
        headers = ["strategy", "AU12 AUC", "AU06 AUC", "mean P(AU12) smiling", "mean P(AU12) neutral", "s per adaptation"]
        note = (f"{summ.identities.max()} identities, plasticity {a.plasticity}, seed 0, generator `{generator}`"
                f"{f', motion `{a.motion.name}`' if a.motion else ''}{', expression texture learned on the other London identities' if 'synthesis.texture' in synthesis else ''}; "
                "seconds include concurrent load on the machine.")
        update_section(a.section, markdown_table(headers, rows_md) + "\n\n" + note, command=invocation())
    return 0


if __name__ == "__main__":
    sys.exit(main())
