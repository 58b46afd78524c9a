"""Build the shipped base AU model (au_models/data/base.pt) from the FRL London and Canada sets.

    python scripts/make_base_model.py [--london ../shared/data/frl_london] [--canada ../shared/data/canada]
                                      [--generator mesh] [--motion generators/data/ict_motion.npz] [--work build/base_model]

1. For each of the 40 London and 40 Canada identities: fit a person profile on the neutral photo (with
   ``--motion``), design a grid (stage 2, ``--strategy``, default the 'expressions' design over the
   default AU set) and render it (stage 3, ``--generator``, default ``mesh``) into
   ``<work>/synth/<id>.h5``. Labels are the grid's AU intensities, i.e. true by construction
   (occurrence present from B, a trace A unknown). The mesh's expression texture is learned on the
   London *training* identities' photo pairs only (``<work>/texture.npz``), so no held-out or
   validation person's smile is in any training image. Resumable (stage 3's store skips done chunks).
2. Align every synthetic sample and the real photos into ``<work>/cache`` (au_models.cache).
   Real photos are labelled only with what they show: neutral = every AU absent, intensity 0,
   expression neutral; smiling = AU12 present (other AUs unknown), expression happy.
3. Identity-exclusive split (seeded, over the London identities, which have real photos to test on):
   ``--test-ids`` identities are held out completely (their synthetic and real images), ``--val-ids``
   identities drive early stopping, the other London and every Canada identity train.
4. Train, evaluate on the held-out identities: per-AU metrics on their synthetic grids, and the
   real-photo check: AUC of P(AU12) and P(AU06) for smiling vs neutral photos.
5. Save the checkpoint (with provenance, metrics and a 128-sample replay buffer) and
   ``<work>/metrics.csv``, ``<work>/report.json``.
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


def synth_identity(photo: Path, out: Path, n: int, size: int, seed: int, generator: str = "mesh", options: dict | None = None,
                   motion=None, strategy: str = "expressions") -> Path:
    from generators import design_grid, fit_profile
    from generators.store import synthesize

    if out.is_file():
        import h5py

        with h5py.File(out, "r") as f:
            if bool(f.attrs.get("complete", False)):
                return out
    profile = fit_profile(photo, motion=motion)
    grid = design_grid(profile, n=n, strategy=strategy, seed=seed)
    synthesize(profile, grid, out, size=size, compression=None, source_path=photo, progress=False, contact_sheet=False,
               generator=generator, generator_options=options or {})
    return out


def synthetic_set(h5: Path, cache_dir: Path, identity: str, crop_size: int):
    from au_models.align import AlignConfig
    from au_models.cache import build_cache, load_aligned
    from experiments.datasets import load_dataset

    frames = load_dataset("synthetic", h5)
    cache = build_cache(frames, cache_dir / f"synth_{identity}.h5", AlignConfig(crop_size=crop_size), progress=False)
    data = load_aligned(cache)
    data.subjects[:] = identity
    # the grid names only full EMFACS prototypes; a sample with every AU at 0 is a neutral face
    inten = data.intensity
    neutral = np.isfinite(inten).all(1) & (inten == 0).all(1)
    data.expr[neutral & (data.expr < 0)] = 0
    return data


def real_set(london: Path, identities: list[str], crop_size: int):
    """Real neutral and smiling photos as an AlignedSet (subjects = identity ids)."""
    from au_models.align import AlignConfig, align_faces
    from au_models.cache import AlignedSet
    from au_models.heads import EXPRESSIONS
    from fewshot.analysis import Analyzer
    from fewshot.io import read_image

    analyzer = Analyzer(embed=False, track=False)
    imgs, lms, subj, kind = [], [], [], []
    for ident in identities:
        for k, path in (("neutral", london / "neutral_front" / f"{ident}_03.jpg"), ("smiling", london / "smiling_front" / f"{ident}_08.jpg")):
            if not path.is_file():
                continue
            img = read_image(path)
            found = analyzer.analyze_image(img, str(path))
            if not found:
                print(f"  no face in {path.name}; skipped", file=sys.stderr)
                continue
            imgs.append(img), lms.append(found[0].landmarks), subj.append(ident), kind.append(k)
    cfg = AlignConfig(crop_size=crop_size)
    crops, crop_lm, ok = align_faces(imgs, np.stack(lms), cfg)
    smiling = np.array(kind) == "smiling"
    aus = ["AU06", "AU12"]
    occ = np.where(smiling[:, None], np.array([-1, 1]), np.array([0, 0])).astype(np.int8)
    inten = np.where(smiling[:, None], np.nan, np.zeros((1, 2))).astype(np.float32)
    expr = np.where(smiling, EXPRESSIONS.index("happy"), EXPRESSIONS.index("neutral"))
    data = AlignedSet(crops[ok], crop_lm[ok], occ[ok], inten[ok], expr[ok], np.array(subj)[ok], aus, aus, align=cfg, source=f"london:{london}")
    return data, smiling[ok]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--london", type=Path, default=ROOT.parent / "shared/data/frl_london")
    ap.add_argument("--canada", type=Path, default=ROOT.parent / "shared/data/canada", help="more neutral identities ('' = none)")
    ap.add_argument("--generator", default="mesh")
    ap.add_argument("--motion", type=Path, default=ROOT / "generators/data/ict_motion.npz", help="AU motion model ('' = FACS fields)")
    ap.add_argument("--strategy", default="expressions", help="grid strategy")
    ap.add_argument("--work", type=Path, default=ROOT / "build/base_model")
    ap.add_argument("--out", type=Path, default=ROOT / "au_models/data/base.pt")
    ap.add_argument("--per-identity", type=int, default=200, help="synthetic samples per identity")
    ap.add_argument("--size", type=int, default=160, help="synthetic crop size (pixels)")
    ap.add_argument("--crop-size", type=int, default=112)
    ap.add_argument("--backbone", default="compact")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--test-ids", type=int, default=8)
    ap.add_argument("--val-ids", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--replay", type=int, default=128)
    ap.add_argument("--real-repeat", type=int, default=10, help="oversample the training identities' real photos")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    import torch

    from au_models.cache import concat_sets
    from au_models.checkpoint import save_checkpoint, versions
    from au_models.metrics import roc_auc, summarize
    from au_models.model import AUModel
    from au_models.train import TrainConfig, evaluate, predict_set, replay_buffer, train

    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    info = pd.read_csv(a.london / "london_info.csv", dtype={"face_id": str})
    identities = sorted(info.face_id.str.zfill(3))
    order = [identities[i] for i in np.random.default_rng(a.seed).permutation(len(identities))]
    test_ids, val_ids = sorted(order[: a.test_ids]), sorted(order[a.test_ids : a.test_ids + a.val_ids])
    train_ids = sorted(order[a.test_ids + a.val_ids :])
    print(f"{len(identities)} identities: train {len(train_ids)}, val {val_ids}, test {test_ids}", flush=True)

    canada = sorted(p.stem for p in Path(a.canada).glob("*.jpg")) if str(a.canada) else []
    train_ids = sorted(train_ids + canada)
    print(f"+ {len(canada)} Canada identities (training)", flush=True)
    from generators import load_motion_model
    from generators.render import GENERATORS

    motion = load_motion_model(a.motion) if str(a.motion) else None
    options: dict = {}
    if "texture" in GENERATORS.get(a.generator).options:
        from generators import checks

        texture = a.work / "texture.npz"
        london_train = [i for i in identities if i not in set(test_ids) | set(val_ids)]
        if not texture.exists():
            a.work.mkdir(parents=True, exist_ok=True)
            lmc = checks.london_landmarks(london_train, checks.Analyzer(embed=False), a.london)
            checks.london_texture(london_train, lmc, london=a.london).save(texture)
        options["texture"] = str(texture)
        print(f"{texture}: expression texture of the {len(london_train)} London training identities", flush=True)
    synth_dir, cache_dir = a.work / "synth", a.work / "cache"
    sets = []
    photos = [(ident, a.london / "neutral_front" / f"{ident}_03.jpg") for ident in identities] + [(c, Path(a.canada) / f"{c}.jpg") for c in canada]
    for i, (ident, photo) in enumerate(photos):
        h5 = synth_identity(photo, synth_dir / f"{ident}.h5", a.per_identity, a.size, a.seed * 1000 + i, a.generator, options, motion, a.strategy)
        sets.append(synthetic_set(h5, cache_dir, ident, a.crop_size))
        if (i + 1) % 10 == 0:
            print(f"  rendered {i + 1}/{len(photos)} identities ({time.perf_counter() - t0:.0f} s)", flush=True)
    synth = concat_sets(sets)
    print(f"synthetic: {len(synth)} aligned samples, AUs {synth.aus} ({time.perf_counter() - t0:.0f} s)", flush=True)
    real, smiling = real_set(a.london, identities, a.crop_size)
    print(f"real photos: {len(real)} ({int(smiling.sum())} smiling)", flush=True)

    data = concat_sets([synth, real])
    is_real = np.r_[np.zeros(len(synth), bool), np.ones(len(real), bool)]
    fit, val = data.by_subjects(train_ids), data.by_subjects(val_ids)
    real_fit = np.flatnonzero(np.isin(data.subjects, train_ids) & is_real)
    if a.real_repeat > 1 and len(real_fit):
        fit = concat_sets([fit] + [data.subset(real_fit)] * (a.real_repeat - 1))
    torch.manual_seed(a.seed)
    model = AUModel(a.backbone, synth.aus, synth.intensity_aus)
    cfg = TrainConfig(epochs=a.epochs, lr=a.lr, batch_size=a.batch_size, seed=a.seed, threads=a.threads, patience=4)
    res = train(model, fit, val, cfg, checkpoint_dir=a.work / "run")
    print(res.history.to_string(index=False), flush=True)

    test_mask = np.isin(data.subjects, test_ids)
    synth_test = data.subset(np.flatnonzero(test_mask & ~is_real))
    table = evaluate(model, synth_test)
    real_test = data.subset(np.flatnonzero(test_mask & is_real))
    pred = predict_set(model, real_test)
    is_smile = real_test.expr == 1
    real_auc = {au: roc_auc(is_smile.astype(int), pred["occ_prob"][:, model.aus.index(au)]) for au in ("AU12", "AU06")}
    real_acc = {
        "AU12_c_smiling": float((pred["occ_prob"][is_smile, model.aus.index("AU12")] >= 0.5).mean()),
        "AU12_c_neutral": float((pred["occ_prob"][~is_smile, model.aus.index("AU12")] >= 0.5).mean()),
        "expr_happy_acc_smiling": float((pred["expr_prob"][is_smile].argmax(1) == 1).mean()),
        "expr_neutral_acc_neutral": float((pred["expr_prob"][~is_smile].argmax(1) == 0).mean()),
    }
    summary = summarize(table)
    report = {
        "synthetic_test": summary, "real_test_auc": real_auc, "real_test_rates": real_acc,
        "n_real_test": int(len(real_test)), "n_synth_test": int(len(synth_test)),
        "train_ids": train_ids, "val_ids": val_ids, "test_ids": test_ids, "best_epoch": res.best_epoch,
        "minutes": (time.perf_counter() - t0) / 60,
    }  # fmt: skip
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(json.dumps({k: report[k] for k in ("synthetic_test", "real_test_auc", "real_test_rates")}, indent=1))
    prov = dict(
        dataset=(f"synthetic grids ({a.strategy}, {a.per_identity} per identity, generator {a.generator}, motion "
                 f"{Path(a.motion).name if str(a.motion) else 'FACS fields'}) of the FRL London Set (40 identities) and "
                 f"{len(canada)} Canada identities + real London neutral/smiling photos"),
        generator=a.generator, motion=str(a.motion), strategy=a.strategy, canada_subjects=canada,
        occurrence_threshold=2.0,
        command="python scripts/make_base_model.py " + " ".join(sys.argv[1:]), seed=a.seed, fold="identity-exclusive",
        train_subjects=train_ids, val_subjects=val_ids, test_subjects=test_ids, n_train=len(fit), n_val=len(val),
        per_identity=a.per_identity, synth_size=a.size, real_repeat=a.real_repeat, metrics={**summary, **{f"real_auc_{k}": v for k, v in real_auc.items()}, **real_acc},
        per_au=table.to_dict("list"), best_epoch=res.best_epoch, versions=versions(),
        licence="weights derived from the FRL London Set and the Young Adult White Faces (Canada) set (CC BY 4.0, DeBruine & Jones 2017)",
    )  # fmt: skip
    save_checkpoint(a.out, model, {"provenance": prov, "occurrence_threshold": 2.0}, replay=replay_buffer(fit, a.replay, a.seed),
                    validation=replay_buffer(val, a.replay, a.seed))
    a.work.mkdir(parents=True, exist_ok=True)
    table.to_csv(a.work / "metrics.csv", index=False)
    (a.work / "report.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {a.out} ({a.out.stat().st_size / 1e6:.1f} MB) in {(time.perf_counter() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
