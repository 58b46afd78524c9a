"""Stage-3 checks on the 40 FRL London identities (results quoted in the README).

    python scripts/stage3_checks.py identity --n 200          # identity + landmark fidelity, 40 x n images
    python scripts/stage3_checks.py smile                     # generated smile vs real smile, 2-fold
    python scripts/stage3_checks.py sheet --out docs/stage3_au_intensities.png

``smile``: identities split in two folds (sorted ids, alternate); on the training fold we learn the
AU6 appearance (fit_appearance on its neutral/smiling pairs) and refit stage 2's motion model on its
neutral -> smiling landmarks (the posed smiles labelled AU06=C, AU12=D, AU25=B: nominal, the set has no
FACS codes); on the test fold, each neutral photo is rendered smiling and compared with the same
person's real smiling photo, in aligned 256 px crops:
landmarks (re-detected, / inter-ocular) and pixels (grey levels in the cheek and eye regions, mean
absolute difference after matching the region's mean). Baseline: the neutral photo itself.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
LONDON = ROOT.parent / "shared" / "data" / "frl_london"
SIZE = 256


def ids() -> list[str]:
    return sorted(p.stem.split("_")[0] for p in (LONDON / "neutral_front").glob("*_03.jpg"))


def landmarks_cache() -> dict[str, np.ndarray]:
    from fewshot.analysis import Analyzer
    from fewshot.io import read_image

    cache = Path("/tmp/fewshot_london_lm.npz")
    if cache.exists():
        d = np.load(cache)
        return {k: d[k] for k in d.files}
    a = Analyzer(embed=False)
    out = {}
    for i in ids():
        for kind, sub in (("03", "neutral_front"), ("08", "smiling_front")):
            p = LONDON / sub / f"{i}_{kind}.jpg"
            out[str(p)] = a.analyze_image(read_image(p), str(p))[0].landmarks
    np.savez(cache, **out)
    return out


def smile_row(profile, a6: float, a12: float, a25: float = 0.0) -> pd.DataFrame:
    from generators.aus import intensity_level

    yaw, pitch, roll = profile.pose_degrees
    aus = {"AU06": a6, "AU12": a12, "AU25": a25}
    lm = profile.landmarks_for(yaw, pitch, roll, aus)
    row = {"sample_id": 0, "seed": 0, "yaw": yaw, "pitch": pitch, "roll": roll, **aus, "expression": "happiness"}
    row.update({f"tx_{k}": lm[k, 0] for k in range(68)})
    row.update({f"ty_{k}": lm[k, 1] for k in range(68)})
    row.update({"sem_AU06": float(max(intensity_level(a6), 0.3 * intensity_level(a12))), "sem_AU17": 0.0, "sem_AU04": 0.0, "sem_AU09": 0.0, "sem_AU10": 0.0})
    return pd.DataFrame([row])


SMILE = {"AU06": 3.0, "AU12": 4.0, "AU25": 2.0}  # nominal AUs of the London posed smiles (no FACS codes exist)


def smile_motion(train_ids, lmc):
    """Stage 2's motion model refitted on the training identities' neutral/smiling landmark pairs."""
    from generators.motion import fit_motion

    subjects = []
    for i in train_ids:
        neu = lmc[str(LONDON / "neutral_front" / f"{i}_03.jpg")]
        smi = lmc[str(LONDON / "smiling_front" / f"{i}_08.jpg")]
        subjects.append((neu, np.stack([neu, smi]), np.array([[0.0] * len(SMILE), list(SMILE.values())])))
    return fit_motion(subjects, list(SMILE), ridge=1.0, source="london-smiles")


def aligned(img: np.ndarray, lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from fewshot.landmarks import apply_affine
    from generators.warp import crop_transform

    M = crop_transform(lm, SIZE)
    return cv2.warpAffine(img, M, (SIZE, SIZE), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT), apply_affine(M, lm)


def region_mask() -> np.ndarray:
    from generators.appearance import region_masks

    m = region_masks()
    return (np.maximum.reduce([m["cheeks"], m["infraorbital"], m["crows_feet"], m["eyes"]]) > 0.3).astype(np.float32)


def pixel_distance(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute grey-level difference inside ``mask`` of two aligned crops, low-passed (sigma 2 px
    at 256) so that shading and shape count, not the exact position of pores and wrinkles, and
    after matching the region's mean (exposure)."""
    ga = cv2.GaussianBlur(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float32), (0, 0), 2.0)
    gb = cv2.GaussianBlur(cv2.cvtColor(b, cv2.COLOR_RGB2GRAY).astype(np.float32), (0, 0), 2.0)
    w = mask / mask.sum()
    ga -= (ga * w).sum()
    gb -= (gb * w).sum()
    return float((np.abs(ga - gb) * w).sum())


def cmd_smile(args) -> None:
    from fewshot.analysis import Analyzer
    from fewshot.io import read_image
    from fewshot.landmarks import normalized_error
    from generators import fit_profile
    from generators.appearance import fit_appearance_from_folders
    from generators.render import WarpGenerator

    lmc = landmarks_cache()
    all_ids = ids()
    folds = [all_ids[0::2], all_ids[1::2]]
    mask = region_mask()
    det = Analyzer(embed=False)
    rows = []
    for k in range(2):
        train, test = folds[k], folds[1 - k]
        t0 = time.time()
        app = fit_appearance_from_folders(LONDON / "neutral_front", LONDON / "smiling_front", "AU06", 3.0, train, lmc)
        # smile motion learned on the training fold (stage 2's fit_motion over neutral -> smiling
        # landmark pairs labelled with the posed smile's nominal AUs), intensities fixed
        motion = smile_motion(train, lmc)
        a6, a12, a25 = SMILE["AU06"], SMILE["AU12"], SMILE["AU25"]
        print(f"fold {k}: appearance and smile motion learned on {len(train)} ids ({time.time() - t0:.0f}s)", flush=True)
        gens = {"warp+learned": WarpGenerator(app), "warp+procedural": WarpGenerator(), "warp-landmarks-only": WarpGenerator()}
        for i in test:
            p_neu = LONDON / "neutral_front" / f"{i}_03.jpg"
            p_smi = LONDON / "smiling_front" / f"{i}_08.jpg"
            prof = fit_profile(read_image(p_neu), motion=motion)
            real, real_lm = aligned(read_image(p_smi), lmc[str(p_smi)])
            neu, neu_lm = aligned(prof.image, prof.landmarks)
            row = {"id": i, "fold": 1 - k, "AU06": a6, "AU12": a12, "AU25": a25,
                   "lm_neutral": float(normalized_error(neu_lm, real_lm)),
                   "px_neutral": pixel_distance(neu, real, mask)}
            for name, g in gens.items():
                grid = smile_row(prof, a6, a12, a25)
                if name == "warp-landmarks-only":
                    grid["sem_AU06"] = 0.0
                b = g.render(prof, grid, size=SIZE)
                faces = det.analyze_image(b.images[0])
                gl = faces[0].landmarks if faces else b.landmarks[0]
                row[f"lm_{name}"] = float(normalized_error(gl, real_lm))
                row[f"px_{name}"] = pixel_distance(b.images[0], real, mask)
                if args.save and name == "warp+learned":
                    Path(args.save).mkdir(parents=True, exist_ok=True)
                    cv2.imwrite(str(Path(args.save) / f"{i}.jpg"), cv2.cvtColor(np.concatenate([neu, b.images[0], real], 1), cv2.COLOR_RGB2BGR))
            rows.append(row)
            print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
        if k == 0 and args.appearance_out:
            app.save(args.appearance_out)
    df = pd.DataFrame(rows)
    df.to_csv(args.out, index=False)
    print(f"\n{len(df)} identities")
    for name in ["warp+learned", "warp+procedural", "warp-landmarks-only"]:
        print(f"{name:22s} landmarks closer than neutral: {(df[f'lm_{name}'] < df.lm_neutral).mean():.1%} "
              f"(mean {df[f'lm_{name}'].mean():.4f} vs {df.lm_neutral.mean():.4f}); "
              f"pixels closer: {(df[f'px_{name}'] < df.px_neutral).mean():.1%} (mean {df[f'px_{name}'].mean():.2f} vs {df.px_neutral.mean():.2f})")


def cmd_identity(args) -> None:
    from generators import design_grid, fit_profile
    from generators.quality import DlibFeatures, score_images
    from generators.render import generate

    feats = DlibFeatures()
    out = []
    t0 = time.time()
    for i in ids()[args.skip: args.skip + args.ids]:
        prof = fit_profile(str(LONDON / "neutral_front" / f"{i}_03.jpg"))
        grid = design_grid(prof, n=args.n, strategy="balanced", seed=0)
        b = generate(prof, grid, size=SIZE)
        emb = feats.embed(prof.image, feats.detect(prof.image))
        per, _ = score_images(b.images, b.landmarks, emb, feats)
        per["id"], per["yaw"], per["pitch"] = i, grid.yaw.to_numpy(), grid.pitch.to_numpy()
        out.append(per)
        print(f"{i}: identity ok {per.identity_ok.mean():.1%}, distance {per.identity_distance.mean():.3f}, landmark error {per.landmark_error.mean():.4f}, detected {per.detected.mean():.1%}", flush=True)
    df = pd.concat(out)
    df.to_csv(args.out, index=False)
    print(f"\n{len(df)} images of {df.id.nunique()} identities in {time.time() - t0:.0f}s")
    print(f"identity distance < 0.6: {df.identity_ok.mean():.2%}; identities with >= 95%: {(df.groupby('id').identity_ok.mean() >= 0.95).mean():.1%}")
    print(f"landmark error: mean {df.landmark_error.mean():.4f}, median {df.landmark_error.median():.4f}; face re-detected {df.detected.mean():.1%}")
    df["yaw_bin"] = (df.yaw / 15).round().astype(int) * 15
    print(df.groupby("yaw_bin")[["identity_ok", "identity_distance", "landmark_error", "detected"]].mean().round(4).to_string())


def cmd_sheet(args) -> None:
    from fewshot.io import read_image, write_image
    from generators import fit_profile
    from generators.aus import intensity_level
    from generators.render import generate
    from generators.store import contact_sheet_image

    tiles, labels = [], []
    for i in args.ids.split(","):
        prof = fit_profile(read_image(LONDON / "neutral_front" / f"{i}_03.jpg"))
        yaw, pitch, roll = prof.pose_degrees
        for au, extra in (("AU06", {"AU12": 0.0}), ("AU17", {})):
            rows = []
            for letter, inten in (("0", 0), ("A", 1), ("C", 3), ("E", 5)):
                aus = {au: float(inten), **extra}
                lm = prof.landmarks_for(yaw, pitch, roll, aus)
                row = {"seed": 7, "yaw": yaw, "pitch": pitch, "roll": roll, **aus}
                row.update({f"tx_{k}": lm[k, 0] for k in range(68)})
                row.update({f"ty_{k}": lm[k, 1] for k in range(68)})
                row[f"sem_{au}"] = float(intensity_level(inten))
                rows.append(row)
                labels.append(f"{i} {au} {letter}")
            b = generate(prof, pd.DataFrame(rows).fillna(0.0), size=SIZE)
            tiles += list(b.images)
    sheet = contact_sheet_image(np.stack(tiles), cols=8, tile=args.tile, labels=labels)
    write_image(args.out, sheet)
    print(f"{args.out}: {Path(args.out).stat().st_size / 1e3:.0f} kB")


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("smile")
    s.add_argument("--out", default="/tmp/stage3_smile.csv")
    s.add_argument("--save", default=None, help="folder for neutral | generated | real triptychs")
    s.add_argument("--appearance-out", default=None, help="save fold 0's learned appearance (.npz)")
    s = sub.add_parser("identity")
    s.add_argument("--n", type=int, default=200)
    s.add_argument("--ids", type=int, default=40)
    s.add_argument("--skip", type=int, default=0, help="start after this many identities (sorted)")
    s.add_argument("--out", default="/tmp/stage3_identity.csv")
    s = sub.add_parser("sheet")
    s.add_argument("--ids", default="001,012,024")
    s.add_argument("--tile", type=int, default=160)
    s.add_argument("--out", default=str(ROOT / "docs" / "stage3_au_intensities.png"))
    a = ap.parse_args()
    {"smile": cmd_smile, "identity": cmd_identity, "sheet": cmd_sheet}[a.cmd](a)


if __name__ == "__main__":
    main()
