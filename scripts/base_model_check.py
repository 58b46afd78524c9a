"""What a base AU model is worth on real frames and on held-out renders (the checks of step 9).

    python scripts/base_model_check.py [--model au_models/data/base.pt] [--shared ../shared] [--out runs/base_model_check]
                                       [--write-results [--section base_model_check]]

1. **London held-out identities** (the model's provenance ``test_subjects``; real neutral and smiling
   photos): pooled AUC of P(AU12) and P(AU06), smiling vs neutral.
2. **Pexels clip** (crying frames 0-130, laughing frames 240-471): AUC of P(AU12) laughing vs crying,
   mean P(AU12) on each part, and the share of each part the expression head calls happy.
3. **Expression photos** (``data/expression_photos``, labelled by file name only): the expression the
   head names for each face (few and odd: reported, never tuned on).
4. **Rendered prototypes of the held-out identities** (frontal, each EMFACS prototype with its AUs at D,
   the profile's own generator as the model was built with, ``--generator`` / ``--motion``): how often
   the expression head names the intended expression, and how often the FER-2013 judge does on the same
   images.
5. **AU17 on held-out renders**: P(AU17) at rendered AU17 intensity 0, A, C, E (alone, frontal and at
   yaw +-15): the mean per level (does it rise?) and the AUC of >= C vs 0.

Per-row tables go to ``<out>/`` (CSV). The held-out identities never took part in training the model
(nor in the expression texture it was rendered with); nothing here feeds back into a model.
"""

from __future__ import annotations

import argparse
import json
import sys
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=None, help="checkpoint (default: the shipped base model)")
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--generator", default=None, help="generator for the rendered checks (default: the model's provenance, else mesh)")
    ap.add_argument("--motion", type=Path, default=None, help="motion model (default: the model's provenance)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs/base_model_check")
    ap.add_argument("--write-results", action="store_true")
    ap.add_argument("--section", default="base_model_check")
    a = ap.parse_args(argv)

    from au_models import base_model_path
    from au_models.checkpoint import load_checkpoint
    from au_models.predict import Predictor, predict
    from fewshot.analysis import Analyzer
    from fewshot.io import read_image, write_table
    from generators import EXPRESSIONS, checks, design_grid, fit_profile, generate, load_motion_model
    from generators.expression_judge import FER_LABELS, ExpressionJudge
    from generators.grid import CONTEMPT_MAX

    path = a.model or base_model_path()
    model, meta = load_checkpoint(path)[:2]
    prov = meta.get("provenance", {})
    london, data = a.shared / "data" / "frl_london", a.shared / "data"
    if not london.is_dir():
        print(f"error: {london}: no FRL London folder; pass --shared", file=sys.stderr)
        return 2
    test_ids = list(prov.get("test_subjects") or [])
    a.out.mkdir(parents=True, exist_ok=True)
    an = Analyzer(embed=False)
    res: dict = {"model": str(path), "aus": list(model.aus)}

    # 1. London held-out real photos
    rows = []
    for i in test_ids:
        for kind, p in (("neutral", london / "neutral_front" / f"{i}_03.jpg"), ("smiling", london / "smiling_front" / f"{i}_08.jpg")):
            r = predict(model, p, analyzer=an, progress=False).iloc[0]
            rows.append({"identity": i, "photo": kind, **{f"{au}_p": r.get(f"{au}_p", np.nan) for au in ("AU06", "AU12")},
                         "expression": r["expression"]})
    lon = pd.DataFrame(rows)
    write_table(lon, a.out / "london_heldout.csv")
    s, n = lon[lon.photo == "smiling"], lon[lon.photo == "neutral"]
    res["london"] = {"identities": len(test_ids), "AU12_auc": auc(s.AU12_p, n.AU12_p), "AU06_auc": auc(s.AU06_p, n.AU06_p),
                     "smiles_happy": float((s.expression == "happy").mean()), "neutral_neutral": float((n.expression == "neutral").mean())}
    print("london", res["london"], flush=True)

    # 2. Pexels clip
    clip = data / "pexels_clip" / "WolfgangLanger_Pexels.mp4"
    df = predict(model, clip, progress=False)
    df = df[df.success == 1]
    write_table(df[["frame", "AU12_p", "AU06_p", "expression"] + [c for c in df.columns if c.startswith("expr_")]], a.out / "pexels.csv")
    cry, laugh = df[df.frame.between(*CRYING)], df[df.frame.between(*LAUGHING)]
    res["pexels"] = {"AU12_auc": auc(laugh.AU12_p, cry.AU12_p), "AU12_mean_crying": float(cry.AU12_p.mean()),
                     "AU12_mean_laughing": float(laugh.AU12_p.mean()), "crying_called_happy": float((cry.expression == "happy").mean()),
                     "laughing_called_happy": float((laugh.expression == "happy").mean()),
                     "crying_called": cry.expression.value_counts(normalize=True).round(3).to_dict()}
    print("pexels", res["pexels"], flush=True)

    # 3. expression photos
    rows = []
    for p in sorted((data / "expression_photos").glob("*")):
        if p.suffix.lower() not in (".jpg", ".jpeg", ".png"):
            continue
        out = predict(model, p, analyzer=an, progress=False)
        for r in out[out.success == 1].itertuples():
            probs = {c[5:]: getattr(r, c) for c in out.columns if c.startswith("expr_")}
            rows.append({"photo": p.name, "face": int(r.face_id), "expression": r.expression,
                         "p": round(float(max(probs.values())), 3), "AU12_p": round(float(r.AU12_p), 3)})
    photos = pd.DataFrame(rows)
    write_table(photos, a.out / "expression_photos.csv")
    res["expression_photos"] = photos.to_dict("records")
    print(photos.to_string(index=False), flush=True)

    # 4-5. renders of the held-out identities
    generator = a.generator or prov.get("generator") or "mesh"
    motion_path = a.motion or (Path(prov["motion"]) if prov.get("motion") else None)
    motion = load_motion_model(motion_path) if motion_path and motion_path.is_file() else None
    gen = checks.make_generator(generator)
    # a texture-drawing generator renders each held-out person with skin learned on the other fold
    textures = checks.fold_textures(gen, test_ids, london=london)
    judge = ExpressionJudge()
    predictor = Predictor(model)
    names = {"happiness": "happy", "sadness": "sad", "surprise": "surprise", "fear": "fear", "anger": "anger",
             "disgust": "disgust", "contempt": "contempt"}
    fer_names = {"happy": "happy", "sad": "sad", "surprise": "surprise", "fear": "fear", "anger": "angry", "disgust": "disgust"}
    proto_rows, au17_rows = [], []
    for i in test_ids:
        prof = fit_profile(london / "neutral_front" / f"{i}_03.jpg", motion=motion)
        if textures is not None:
            checks.with_texture(gen, textures[i])
        protos = [("neutral", {})] + [(names[e], {au: min(4.0, CONTEMPT_MAX) if e == "contempt" else 4.0 for au in p})
                                      for e, p in EXPRESSIONS.items()]
        aus = sorted({au for _, p in protos for au in p})
        table = []
        for name, p in protos:
            lm = prof.landmarks_for(0.0, 0.0, 0.0, p)
            row = {"sample_id": len(table), "seed": 0, "yaw": 0.0, "pitch": 0.0, "roll": 0.0, **{au: p.get(au, 0.0) for au in aus}}
            row.update({f"tx_{k}": lm[k, 0] for k in range(68)})
            row.update({f"ty_{k}": lm[k, 1] for k in range(68)})
            table.append(row)
        b = generate(prof, pd.DataFrame(table), size=256, generator=gen)
        pr = predictor.table(*predictor.faces(list(b.images), b.landmarks))
        fer = judge.probabilities(b.images, b.landmarks)
        for (name, _), head, fp in zip(protos, pr["expression"], fer):
            proto_rows.append({"identity": i, "intended": name, "model": head, "fer": FER_LABELS[int(np.argmax(fp))]})
        # AU17 alone at 0, A, C, E, frontal and yaw +-15
        table = []
        for yaw in (-15.0, 0.0, 15.0):
            for lv in (0.0, 1.0, 3.0, 5.0):
                lm = prof.landmarks_for(yaw, 0.0, 0.0, {"AU17": lv})
                row = {"sample_id": len(table), "seed": 0, "yaw": yaw, "pitch": 0.0, "roll": 0.0, "AU17": lv, "sem_AU17": float(lv > 0) * lv / 5}
                row.update({f"tx_{k}": lm[k, 0] for k in range(68)})
                row.update({f"ty_{k}": lm[k, 1] for k in range(68)})
                table.append(row)
        t = pd.DataFrame(table)
        b = generate(prof, t, size=256, generator=gen)
        pr = predictor.table(*predictor.faces(list(b.images), b.landmarks))
        for r, p17 in zip(table, pr["AU17_p"] if "AU17_p" in pr else [np.nan] * len(table)):
            au17_rows.append({"identity": i, "yaw": r["yaw"], "AU17": r["AU17"], "AU17_p": float(p17)})
        print(f"rendered checks: {i}", flush=True)
    pt = pd.DataFrame(proto_rows)
    write_table(pt, a.out / "prototypes.csv")
    agree = pt[pt.intended != "neutral"]
    fer_ok = agree[agree.intended.isin(fer_names)]
    res["prototypes"] = {"n": len(agree), "head_agrees": float((agree.model == agree.intended).mean()),
                         "head_agrees_incl_neutral": float((pt.model == pt.intended).mean()),
                         "fer_agrees_six": float((fer_ok.fer == fer_ok.intended.map(fer_names)).mean()),
                         "head_per_expression": agree.assign(ok=agree.model == agree.intended).groupby("intended").ok.mean().round(3).to_dict()}
    a17 = pd.DataFrame(au17_rows)
    write_table(a17, a.out / "au17.csv")
    means = a17.groupby("AU17").AU17_p.mean()
    res["au17"] = {"mean_by_level": {str(k): round(float(v), 3) for k, v in means.items()},
                   "monotonic": bool(np.all(np.diff(means.to_numpy()) > 0)),
                   "auc_C_or_more_vs_0": auc(a17[a17.AU17 >= 3].AU17_p, a17[a17.AU17 == 0].AU17_p)}
    print("prototypes", res["prototypes"], "\nau17", res["au17"], flush=True)
    (a.out / "summary.json").write_text(json.dumps(res, indent=1, default=str))
    if a.write_results:
        from experiments.results_doc import invocation, markdown_table, update_section

        L, P, pr, a7 = res["london"], res["pexels"], res["prototypes"], res["au17"]
        body = [
            ["London held-out identities (real photos): AUC of P(AU12), of P(AU06)", f"**{L['AU12_auc']:.3f}**, **{L['AU06_auc']:.3f}** ({L['identities']} smiling vs {L['identities']} neutral)"],
            ["same: expression head right", f"{L['smiles_happy']:.0%} of smiles happy, {L['neutral_neutral']:.0%} of neutral faces neutral"],
            ["Pexels clip: AUC of P(AU12), laughing (240-471) vs crying (0-130) frames", f"**{P['AU12_auc']:.3f}** (mean P(AU12) {P['AU12_mean_laughing']:.2f} vs {P['AU12_mean_crying']:.2f})"],
            ["same: expression head calls happy", f"**{P['crying_called_happy']:.0%}** of crying frames, **{P['laughing_called_happy']:.0%}** of laughing frames"],
            ["rendered prototypes at D, held-out identities: expression head names the intended one", f"**{pr['head_agrees']:.0%}** of {pr['n']} ({', '.join(f'{k} {v:.0%}' for k, v in pr['head_per_expression'].items())})"],
            ["same images: FER-2013 judge names the intended one (six emotions)", f"{pr['fer_agrees_six']:.0%}"],
            ["rendered AU17 alone at 0 / A / C / E (yaw -15, 0, 15): mean P(AU17)", " / ".join(f"{v:.2f}" for v in a7["mean_by_level"].values()) + (" (rises)" if a7["monotonic"] else " (does not rise monotonically)")],
            ["same: AUC of P(AU17), C-E vs 0", f"**{a7['auc_C_or_more_vs_0']:.3f}**"],
        ]
        ph = "; ".join(f"{r['photo']}" + (f" #{r['face']}" if r['face'] else "") + f": {r['expression']} ({r['p']:.2f})" for r in res["expression_photos"])
        md = (f"Model `{Path(path).name}` ({len(model.aus)} AUs). " + markdown_table(["check", "result"], body).join(["\n\n", "\n\n"])
              + f"Expression photos (`data/expression_photos`, labelled by file name only; reported, not tuned on): {ph}. "
              f"Per-row tables: `{a.out.relative_to(ROOT) if a.out.is_relative_to(ROOT) else a.out}/`.")
        update_section(a.section, md, command=invocation())
    return 0


if __name__ == "__main__":
    sys.exit(main())
