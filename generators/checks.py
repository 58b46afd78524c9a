"""Stage-3 checks on the 40 FRL London identities: the computations behind ``scripts/stage3_checks.py``
(which writes their tables to ``docs/``) and the tests that run them on a few identities.

    from generators import checks
    lmc = checks.london_landmarks(ids, Analyzer(embed=False))
    profiles, codes = checks.code_smiles(ids, lmc)
    rows = checks.smile_fold(train, test, lmc, profiles, codes, det)   # one dict per test identity

``smile``: each real smile's head pose is measured from its landmarks with the person's own 3D shape
(:meth:`PersonProfile.pose_of`; the two photos of a pair differ by up to 9 degrees) and its expression
coded at that pose with FACS intensities (AU6, AU12 A..E, AU25 0..E: :func:`generators.code_expression`,
the combination whose motion-model landmarks lie closest; the London set has no FACS codes); the
generator renders that pose and those codes (``match_pose=False``: the neutral photo's own pose).
Identities are split in two folds (sorted ids, alternate); on the training fold the AU6 shading is
learned (fit_appearance on its neutral/smiling pairs at their coded AU6 intensities); on the test fold
each neutral photo is rendered with its coded smile and compared with the same person's real smiling
photo, all three in area-filtered aligned 256 px crops: landmarks (detected on each crop, the mean over
9 half-pixel shifts, similarity-aligned on the stable points as in stage 2, / inter-ocular) and pixels
(grey levels in the cheek and eye regions inside the face, low-passed, region mean matched). Baseline:
the neutral photo itself. Generators: learned AU6 shading, the default procedural AU6 appearance,
landmarks only (no semantic appearance), and "reenacted": the learned one driven by the real smile's own
landmarks instead of the motion model (the generator alone, without the coding step).

``reenactment``: the smile check's "reenacted" path measured as a realism check, for any registered
generator: each neutral photo driven by its own real smile's landmarks, compared with that smile inside
the face (PSNR, SSIM; the untouched neutral photo as the baseline), by the FER-2013 judge (P(happy)) and
by a two-sample test (HOG + logistic regression, identity-grouped 5-fold, ROC AUC: 0.5 when renders
cannot be told from real smiles).

    faces = {}
    df = checks.reenactment_rows(ids, lmc, "warp", faces=faces)   # one row per identity
    checks.realism_summary(df, faces)                              # means, ratio, two-sample AUCs

The London set is read from ``$FEWSHOT_SHARED/data/frl_london`` (default: ``../shared`` beside the
repository), or the folder passed as ``london=``. Images are uint8 RGB throughout. Importing this module
loads numpy, pandas, OpenCV and scikit-learn only (no torch).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fewshot.analysis import Analyzer
from fewshot.errors import ConfigError
from fewshot.crop import warp_crop
from fewshot.io import read_image
from fewshot.landmarks import INNER_LIPS, STABLE, aligned_error, apply_affine, similarity_transform

from .appearance import ExpressionTexture, fit_appearance_from_folders, fit_expression_texture, region_masks
from .aus import intensity_level
from .expression_judge import FER_LABELS, ExpressionJudge, face_box_transform
from .grid import design_grid
from .motion import MotionModel
from .mouth import inner_mouth_mask
from .profile import code_expression, fit_profile
from .quality import DlibFeatures, score_images
from .render import GENERATORS, Generator, WarpGenerator, generate, generator_options
from .store import contact_sheet_image
from .warp import crop_transform

ROOT = Path(__file__).resolve().parents[1]
LONDON = Path(os.environ.get("FEWSHOT_SHARED", ROOT.parent / "shared")) / "data" / "frl_london"
SIZE = 256
LANDMARKS_CACHE = Path("/tmp/fewshot_london_lm.npz")
SMILE_AUS = ("AU06", "AU12", "AU25")  # coded on every real smile; AU6 and AU12 at least A
SMILE_GENERATORS = ("learned", "procedural", "landmarks_only", "reenacted")


def _root(london: str | os.PathLike | None) -> Path:
    return LONDON if london is None else Path(london)


def ids(london: str | os.PathLike | None = None) -> list[str]:
    """Sorted identity codes ('001', ...) of the London set's neutral frontal photos."""
    return sorted(p.stem.split("_")[0] for p in (_root(london) / "neutral_front").glob("*_03.jpg"))


def london_landmarks(identities, analyzer, london: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """{photo path: (68, 2) landmarks, px} of the neutral and smiling photos of ``identities``."""
    root, out = _root(london), {}
    for i in identities:
        for kind, sub in (("03", "neutral_front"), ("08", "smiling_front")):
            p = root / sub / f"{i}_{kind}.jpg"
            out[str(p)] = analyzer.analyze_image(read_image(p), str(p))[0].landmarks
    return out


def landmarks_cache(cache: str | os.PathLike = LANDMARKS_CACHE, london: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """:func:`london_landmarks` of all identities, kept in ``cache`` (.npz) after the first call."""
    cache = Path(cache)
    if cache.exists():
        d = np.load(cache)
        return {k: d[k] for k in d.files}
    out = london_landmarks(ids(london), Analyzer(embed=False), london)
    np.savez(cache, **out)
    return out


def smile_row(profile, aus: dict[str, float], sem_au06: float, landmarks: np.ndarray | None = None,
              pose: tuple[float, float, float] | None = None) -> pd.DataFrame:
    """One grid row: ``pose`` (yaw, pitch, roll, degrees; default the profile's own) with FACS
    intensities ``aus`` and AU6 appearance level; target landmarks from the motion model, or
    ``landmarks`` (68, 2) in the profile photo's px."""
    yaw, pitch, roll = profile.pose_degrees if pose is None else pose
    lm = profile.landmarks_for(yaw, pitch, roll, aus) if landmarks is None else np.asarray(landmarks, float)
    row = {"sample_id": 0, "seed": 0, "yaw": yaw, "pitch": pitch, "roll": roll, **aus, "expression": "happiness"}
    row.update({f"tx_{k}": lm[k, 0] for k in range(68)})
    row.update({f"ty_{k}": lm[k, 1] for k in range(68)})
    row.update({"sem_AU06": float(sem_au06), "sem_AU17": 0.0, "sem_AU04": 0.0, "sem_AU09": 0.0, "sem_AU10": 0.0})
    return pd.DataFrame([row])


def pair_crops(prof, root: Path, identity: str, lmc: dict):
    """(smiling photo path, its aligned crop and landmarks, the neutral photo's) of one London pair."""
    p_smi = root / "smiling_front" / f"{identity}_08.jpg"
    return p_smi, aligned(read_image(p_smi), lmc[str(p_smi)]), aligned(prof.image, prof.landmarks)


def aligned(img: np.ndarray, lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The aligned SIZE crop of a photo (area-filtered, as the generator renders) and its landmarks."""
    M = crop_transform(lm, SIZE)
    return warp_crop(img, M, SIZE), apply_affine(M, lm)


def in_neutral_frame(profile, landmarks: np.ndarray) -> np.ndarray:
    """Another photo's landmarks moved into the profile photo's frame (similarity on the stable points):
    targets that reenact that photo's expression from the neutral one."""
    return apply_affine(similarity_transform(landmarks[STABLE], profile.landmarks[STABLE]), landmarks)


# Sub-pixel shifts (px at 256) over which landmarks are detected and averaged: dlib's 68 points on the
# same 256 px crop moved by a quarter pixel differ by 0.011 IOD on average (its box snaps to a grid), as
# much as a mild smile moves them; means over 9 shifts a quarter pixel apart differ by 0.004.
JITTER = [(dx, dy) for dy in (-0.5, 0.0, 0.5) for dx in (-0.5, 0.0, 0.5)]
NO_JITTER = [(0.0, 0.0)]


def steady_landmarks(det, img: np.ndarray, fallback: np.ndarray, shifts=JITTER) -> np.ndarray:
    """(68, 2) landmarks of an aligned crop: the mean of those detected on ``img`` shifted by each of
    ``shifts`` (px; shifted back), or ``fallback`` where no face is found at all."""
    found = []
    for dx, dy in shifts:
        moved = img if dx == dy == 0 else cv2.warpAffine(img, np.float32([[1, 0, dx], [0, 1, dy]]), img.shape[1::-1],
                                                         flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        faces = det.analyze_image(moved)
        if faces:
            found.append(faces[0].landmarks - [dx, dy])
    return np.mean(found, axis=0) if found else fallback


def region_mask() -> np.ndarray:
    m = region_masks()
    return (np.maximum.reduce([m["cheeks"], m["infraorbital"], m["crows_feet"], m["eyes"]]) > 0.3).astype(np.float32)


def face_region(lm_crop: np.ndarray) -> np.ndarray:
    """Cheek and eye regions of the aligned crop, inside the face (the hull of jaw and brows, minus
    3 px): background, hair and ears next to a narrow face are not skin the smile changes."""
    hull = np.zeros((SIZE, SIZE), np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.round(lm_crop[:27]).astype(np.int32)), 1)
    return region_mask() * cv2.erode(hull, np.ones((7, 7), np.uint8)).astype(np.float32)


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


# -- smile check --------------------------------------------------------------------------------------

def code_smiles(identities, lmc, step: float = 1.0, au6: float | None = None, tolerance: float = 0.0,
                match_pose: bool = True, london: str | os.PathLike | None = None) -> tuple[dict, dict]:
    """Profiles of the neutral photos and the codes of the real smiles ({id: (aus, error, pose)}: FACS
    intensities, landmark error, head pose (yaw, pitch, roll) or None for the profile's own);
    ``au6``: hold AU6 at this intensity and code only AU12 and AU25; ``tolerance``: code the least
    intense combination within this landmark error (IOD) of the best one (see ``code_expression``);
    ``match_pose``: code (and later render) at the real smile's measured head pose."""
    root = _root(london)
    profiles, codes = {}, {}
    for i in identities:
        profiles[i] = fit_profile(read_image(root / "neutral_front" / f"{i}_03.jpg"))
        real = lmc[str(root / "smiling_front" / f"{i}_08.jpg")]
        pose = profiles[i].pose_of(real) if match_pose else None
        if au6 is None:
            aus, err = code_expression(profiles[i], real, SMILE_AUS, required=("AU06", "AU12"), step=step, tolerance=tolerance, pose=pose)
        else:
            aus, err = code_expression(profiles[i], real, SMILE_AUS[1:], required=("AU12",), step=step, fixed={"AU06": au6},
                                       tolerance=tolerance, pose=pose)
        codes[i] = (aus, err, pose)
    return profiles, codes


def smile_fold(train, test, lmc, profiles, codes, det, save: str | None = None, appearance_out: str | None = None,
               shifts=JITTER, london: str | os.PathLike | None = None) -> list[dict]:
    """Learn the AU6 shading on ``train``, render each ``test`` identity's coded smile; one row each.
    Landmarks are compared with stage 2's measure (similarity-aligned on the stable points, / IOD);
    ``save``: a folder for neutral | generated | real triptychs."""
    root = _root(london)

    def redetect(img, fallback):
        return steady_landmarks(det, img, fallback, shifts)

    app = fit_appearance_from_folders(root / "neutral_front", root / "smiling_front", "AU06",
                                      {i: codes[i][0]["AU06"] for i in train}, train, lmc)
    if appearance_out:
        app.save(appearance_out)
    gens = {"learned": WarpGenerator(app), "procedural": WarpGenerator(), "landmarks_only": WarpGenerator()}
    rows = []
    for i in test:
        prof, (aus, fit_err, pose) = profiles[i], codes[i]
        p_smi, (real, real_lm), (neu, neu_lm) = pair_crops(prof, root, i, lmc)
        # all three faces' landmarks detected the same way: on their 256 px crops
        real_lm, neu_lm = redetect(real, real_lm), redetect(neu, neu_lm)
        mask = face_region(real_lm)
        row = {"id": i, **aus, "code_error": fit_err, **dict(zip(("yaw", "pitch", "roll"), pose or prof.pose_degrees)),
               "lm_neutral": aligned_error(neu_lm, real_lm), "px_neutral": pixel_distance(neu, real, mask)}
        # "reenacted": the generator alone, driven by the real smile's own landmarks (moved into the
        # neutral photo's frame on the stable points) instead of the motion model at the coded AUs
        reenact = in_neutral_frame(prof, lmc[str(p_smi)])
        for name, g in {**gens, "reenacted": gens["learned"]}.items():
            level = 0.0 if name == "landmarks_only" else float(intensity_level(aus["AU06"]))
            b = g.render(prof, smile_row(prof, aus, level, reenact if name == "reenacted" else None, pose), size=SIZE)
            row[f"lm_{name}"] = aligned_error(redetect(b.images[0], b.landmarks[0]), real_lm)
            row[f"px_{name}"] = pixel_distance(b.images[0], real, mask)
            if save and name == "learned":
                Path(save).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(Path(save) / f"{i}.jpg"), cv2.cvtColor(np.concatenate([neu, b.images[0], real], 1), cv2.COLOR_RGB2BGR))
        rows.append(row)
    return rows


def smile_check(lmc, det, step: float = 1.0, au6: float | None = None, tolerance: float = 0.0, match_pose: bool = True,
                jitter: bool = True, save: str | None = None, appearance_out: str | None = None,
                on_row: Callable[[dict], None] | None = None, london: str | os.PathLike | None = None) -> pd.DataFrame:
    """The whole smile check: all identities coded, then an identity-exclusive 2-fold (sorted ids,
    alternate); one row per identity (sorted), with its ``fold`` (the fold it was tested in).
    ``appearance_out`` saves the appearance learned on the first training fold."""
    all_ids = ids(london)
    profiles, codes = code_smiles(all_ids, lmc, step, au6, tolerance, match_pose, london)
    folds = [all_ids[0::2], all_ids[1::2]]
    rows = []
    for k in range(2):
        fold_rows = smile_fold(folds[k], folds[1 - k], lmc, profiles, codes, det, save, appearance_out if k == 0 else None,
                               JITTER if jitter else NO_JITTER, london)
        for row in fold_rows:
            row["fold"] = 1 - k
            if on_row:
                on_row(row)
        rows += fold_rows
    return pd.DataFrame(rows).sort_values("id")


def smile_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per generator: share of identities whose render is closer to the real smile than the neutral
    photo (landmarks, pixels, both), the mean distances, and the identities not closer on both."""
    rows = []
    for name in SMILE_GENERATORS:
        lm_ok, px_ok = df[f"lm_{name}"] < df.lm_neutral, df[f"px_{name}"] < df.px_neutral
        rows.append({"generator": name, "identities": len(df),
                     "landmarks_closer": int(lm_ok.sum()), "lm_mean": df[f"lm_{name}"].mean(), "lm_neutral": df.lm_neutral.mean(),
                     "pixels_closer": int(px_ok.sum()), "px_mean": df[f"px_{name}"].mean(), "px_neutral": df.px_neutral.mean(),
                     "both_closer": int((lm_ok & px_ok).sum()), "not_closer": ", ".join(df.id[~(lm_ok & px_ok)])})
    return pd.DataFrame(rows)


# -- identity and landmark fidelity -----------------------------------------------------------------

def identity_rows(identities, n: int = 200, on_identity: Callable[[str, pd.DataFrame], None] | None = None,
                  london: str | os.PathLike | None = None, motion: MotionModel | None = None,
                  generator: str | Generator = "warp", textures: dict | None = None) -> pd.DataFrame:
    """Per generated image of a balanced ``n``-sample grid of each identity: dlib identity distance to
    the source photo (``identity_ok`` = below 0.6), landmarks re-detected vs rendered targets (/ IOD),
    ``detected``; with ``id``, ``yaw``, ``pitch`` (degrees). ``motion``: the profiles' AU motion model
    (default: the FACS fields); ``generator``: a registered name or an instance; ``textures``: as
    :func:`reenactment_rows`'."""
    gen = make_generator(generator)
    root = _root(london)
    feats = DlibFeatures()
    out = []
    for i in identities:
        prof = fit_profile(str(root / "neutral_front" / f"{i}_03.jpg"), motion=motion)
        grid = design_grid(prof, n=n, strategy="balanced", seed=0)
        if textures is not None:
            with_texture(gen, textures[i])
        b = generate(prof, grid, size=SIZE, generator=gen)
        emb = feats.embed(prof.image, feats.detect(prof.image))
        per, _ = score_images(b.images, b.landmarks, emb, feats)
        per["id"], per["yaw"], per["pitch"] = i, grid.yaw.to_numpy(), grid.pitch.to_numpy()
        out.append(per)
        if on_identity:
            on_identity(i, per)
    return pd.concat(out)


def identity_per_id(df: pd.DataFrame) -> pd.DataFrame:
    """One row per identity of :func:`identity_rows` (the table in docs/stage3_identity.csv)."""
    return df.groupby("id").agg(images=("identity_ok", "size"), identity_ok=("identity_ok", "mean"),
                                identity_distance=("identity_distance", "mean"), landmark_error=("landmark_error", "mean"),
                                detected=("detected", "mean"), max_abs_yaw=("yaw", lambda v: v.abs().max()))


def identity_by_yaw(df: pd.DataFrame) -> pd.DataFrame:
    """Means per 15-degree yaw bin of :func:`identity_rows`."""
    df = df.assign(yaw_bin=(df.yaw / 15).round().astype(int) * 15)
    return df.groupby("yaw_bin")[["identity_ok", "identity_distance", "landmark_error", "detected"]].mean()


# -- AU intensity contact sheet ------------------------------------------------------------------------

def au_intensity_sheet(identities=("001", "012", "024"), tile: int = 160, london: str | os.PathLike | None = None,
                       generator: str | Generator = "warp", motion: MotionModel | None = None,
                       textures: dict | None = None) -> np.ndarray:
    """AU6 and AU17 at 0, A, C, E for each identity at its own pose: one uint8 RGB contact sheet
    (``generator``: a registered name or an instance; ``motion``: the profiles' AU motion model;
    ``textures``: as :func:`reenactment_rows`')."""
    root = _root(london)
    gen = make_generator(generator)
    tiles, labels = [], []
    for i in identities:
        if textures is not None:
            with_texture(gen, textures[i])
        prof = fit_profile(read_image(root / "neutral_front" / f"{i}_03.jpg"), motion=motion)
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
            b = generate(prof, pd.DataFrame(rows).fillna(0.0), size=SIZE, generator=gen)
            tiles += list(b.images)
    return contact_sheet_image(np.stack(tiles), cols=8, tile=tile, labels=labels)


# -- mouth interiors --------------------------------------------------------------------------------------

def mouth_rows(identities, lmc, tiles: list | None = None, london: str | os.PathLike | None = None) -> list[dict]:
    """Each real smile's inner mouth vs the generator's, driven by the same (real) landmarks from the
    neutral photo: mean |RGB| difference inside the inner-lip curve, and the brightness of each
    (90th percentile and mean of the grey level: teeth and cavity). Smiles whose lips barely part
    (fewer than 30 px inside at 256) are skipped. ``tiles`` collects real | generated mouth crops."""
    root = _root(london)
    g = WarpGenerator()
    rows = []
    for i in identities:
        prof = fit_profile(read_image(root / "neutral_front" / f"{i}_03.jpg"))
        p = root / "smiling_front" / f"{i}_08.jpg"
        real, _ = aligned(read_image(p), lmc[str(p)])
        target = in_neutral_frame(prof, lmc[str(p)])
        b = g.render(prof, smile_row(prof, {"AU12": 3.0}, 0.0, target), size=SIZE)
        img, lm = b.images[0], b.landmarks[0]
        m = inner_mouth_mask(lm, (SIZE, SIZE))
        if m.sum() < 30:
            continue
        gr, gg = (cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[m].astype(float) for x in (real, img))
        rows.append({"id": i, "pixels": int(m.sum()), "rgb_diff": float(np.abs(real[m].astype(float) - img[m]).mean()),
                     "real_p90": float(np.percentile(gr, 90)), "generated_p90": float(np.percentile(gg, 90)),
                     "real_mean": float(gr.mean()), "generated_mean": float(gg.mean())})
        if tiles is not None:
            x0, y0 = np.floor(lm[INNER_LIPS].min(0)).astype(int) - [14, 14]
            x0, y0 = int(np.clip(x0, 0, SIZE - 104)), int(np.clip(y0, 0, SIZE - 52))
            tiles.append(np.concatenate([real[y0:y0 + 52, x0:x0 + 104], img[y0:y0 + 52, x0:x0 + 104]], 1))
    return rows


def mouth_sheet(tiles: list, cols: int = 4) -> np.ndarray:
    """The real | generated mouth tiles of :func:`mouth_rows` in rows of ``cols``, uint8 RGB."""
    tiles = tiles + [np.zeros_like(tiles[0])] * (-len(tiles) % cols)
    return np.concatenate([np.concatenate(tiles[k:k + cols], 1) for k in range(0, len(tiles), cols)], 0)


# -- self-reenactment realism ------------------------------------------------------------------------

REALISM_BOX = 128  # px: side of the grey face box the two-sample classifier sees (cut as the FER judge cuts its own)
REALISM_FOLDS = 5
REALISM_C = 1.0  # the classifier is a judge: its settings are fixed here, never tuned on its verdict
REALISM_SEEDS = (0, 1, 2, 3, 4)  # shuffled fold assignments, for the AUC's range


def face_mask(lm_crop: np.ndarray, size: int = SIZE) -> np.ndarray:
    """(size, size) bool: inside the convex hull of the 68 landmarks (px in the crop): jaw and brows."""
    m = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(m, cv2.convexHull(np.round(lm_crop).astype(np.int32)), 1)
    return m.astype(bool)


def masked_psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """PSNR (dB, peak 255) of two uint8 RGB images over the three channels of the pixels in ``mask``;
    inf where they are identical there."""
    d = a[mask].astype(np.float64) - b[mask].astype(np.float64)
    mse = float(np.mean(d * d))
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def ssim_map(a: np.ndarray, b: np.ndarray, sigma: float = 1.5, data_range: float = 255.0) -> np.ndarray:
    """Per-pixel SSIM (Wang et al. 2004: Gaussian window of ``sigma`` px truncated at 3.5 sigma, K1 0.01,
    K2 0.03, population covariances, borders reflected) of two uint8 RGB images, on their grey levels;
    (H, W) float64, 1 where the images agree."""
    ga, gb = (cv2.cvtColor(x.astype(np.float32), cv2.COLOR_RGB2GRAY).astype(np.float64) for x in (a, b))
    k = 2 * int(3.5 * sigma + 0.5) + 1

    def blur(x):
        return cv2.GaussianBlur(x, (k, k), sigma, borderType=cv2.BORDER_REFLECT)

    mu_a, mu_b = blur(ga), blur(gb)
    var_a, var_b, cov = blur(ga * ga) - mu_a ** 2, blur(gb * gb) - mu_b ** 2, blur(ga * gb) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))


def masked_ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Mean of :func:`ssim_map` over ``mask`` (the window still sees the pixels around it)."""
    return float(ssim_map(a, b)[mask].mean())


def face_box(img: np.ndarray, lm: np.ndarray, size: int = REALISM_BOX) -> np.ndarray:
    """(size, size) uint8 grey face box of a uint8 RGB image, cut from its (68, 2) landmarks (px) by the
    FER judge's rule (:func:`generators.expression_judge.face_box_transform`)."""
    return warp_crop(cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY), face_box_transform(lm, size), size)


def hog_features(boxes, cell: int = 8, block: int = 2, bins: int = 9) -> np.ndarray:
    """(N, D) HOG descriptors (Dalal and Triggs) of N equally sized uint8 grey boxes: central-difference
    gradients (0 on the border rows and columns), unsigned orientations in ``bins`` hard bins, the
    magnitude summed per ``cell`` x ``cell`` px cell / cell area, ``block`` x ``block``-cell blocks a cell
    apart, each L2-Hys normalised (clip 0.2). The same numbers as ``skimage.feature.hog`` with those
    settings (OpenCV 5 dropped its HOGDescriptor); 8100 values for a 128 px box."""
    g = np.asarray(boxes, np.float64)
    n, h, w = g.shape
    gr, gc = np.zeros_like(g), np.zeros_like(g)
    gr[:, 1:-1] = g[:, 2:] - g[:, :-2]
    gc[:, :, 1:-1] = g[:, :, 2:] - g[:, :, :-2]
    mag = np.hypot(gc, gr)
    k = np.minimum((np.rad2deg(np.arctan2(gr, gc)) % 180 // (180 / bins)).astype(int), bins - 1)
    ch, cw = h // cell, w // cell
    mag, k = mag[:, :ch * cell, :cw * cell], k[:, :ch * cell, :cw * cell]
    onehot = (k[..., None] == np.arange(bins)) * mag[..., None]  # (n, H, W, bins)
    hist = onehot.reshape(n, ch, cell, cw, cell, bins).sum(axis=(2, 4)) / (cell * cell)
    nb_r, nb_c = ch - block + 1, cw - block + 1
    blocks = np.stack([hist[:, r:r + nb_r, c:c + nb_c] for r in range(block) for c in range(block)], axis=3)
    blocks = blocks.reshape(n, nb_r, nb_c, block, block, bins)
    eps = 1e-5
    norm = lambda x: x / np.sqrt((x * x).sum(axis=(3, 4, 5), keepdims=True) + eps * eps)  # noqa: E731
    return norm(np.minimum(norm(blocks), 0.2)).reshape(n, -1)


def two_sample_auc(a: np.ndarray, b: np.ndarray, groups_a, groups_b, folds: int = REALISM_FOLDS, C: float = REALISM_C,
                   seed: int | None = None) -> float:
    """How well a classifier tells sample ``a`` (N, D) from sample ``b`` (M, D): the ROC AUC of the
    out-of-fold scores of a standardised L2 logistic regression (``C``), group-exclusive ``folds``-fold
    cross-validation (GroupKFold: every row of a group, e.g. both photos of one person, in one fold).
    0.5: indistinguishable; 1: always told apart (and below 0.5 only by chance). ``seed``: shuffle the
    groups' fold assignment with it (None: GroupKFold's own deterministic balancing)."""
    x = np.concatenate([np.asarray(a, np.float64), np.asarray(b, np.float64)])
    y = np.r_[np.ones(len(a), int), np.zeros(len(b), int)]
    groups = np.r_[np.asarray(groups_a), np.asarray(groups_b)]
    scores = np.empty(len(x))
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000))
    splitter = GroupKFold(n_splits=min(folds, len(set(groups))), shuffle=seed is not None, random_state=seed)
    for train, test in splitter.split(x, y, groups):
        scores[test] = model.fit(x[train], y[train]).decision_function(x[test])
    return float(roc_auc_score(y, scores))


def parse_options(items: list[str]) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` (the scripts' repeatable ``--option``) as a dict; ConfigError otherwise."""
    bad = [o for o in items if "=" not in o]
    if bad:
        raise ConfigError(f"--option takes KEY=VALUE, got {', '.join(bad)}")
    return dict(o.split("=", 1) for o in items)


def make_generator(generator="warp", options: dict | None = None) -> Generator:
    """A generator instance: a name registered in :data:`generators.render.GENERATORS` with its
    constructor ``options`` (checked by :func:`generator_options`), or an instance as it is."""
    if isinstance(generator, Generator):
        return generator
    return GENERATORS.create(generator, **generator_options(generator, **(options or {})))


def london_texture(identities, lmc, codes: dict | None = None, london: str | os.PathLike | None = None) -> ExpressionTexture:
    """The expression texture (:func:`generators.appearance.fit_expression_texture`) of the London
    neutral / smiling pairs of ``identities``, each smile at its FACS codes (``codes`` as
    :func:`code_smiles` returns them; coded here when not given)."""
    root = _root(london)
    if codes is None:
        codes = code_smiles(identities, lmc, london=london)[1]
    pairs = []
    for i in identities:
        p0, p1 = root / "neutral_front" / f"{i}_03.jpg", root / "smiling_front" / f"{i}_08.jpg"
        pairs.append((read_image(p0), lmc[str(p0)], read_image(p1), lmc[str(p1)]))
    return fit_expression_texture(pairs, [codes[i][0] for i in identities], names=list(identities), source="frl_london")


def texture_folds(identities, lmc, codes: dict | None = None, folds: int = 2, london: str | os.PathLike | None = None,
                  pool=None) -> dict[str, ExpressionTexture]:
    """{identity: the expression texture learned on the London pairs of the other folds} (the sorted
    ``pool``, default every London identity, dealt into ``folds`` folds in turn; ``identities`` must be
    in it): a check on a London identity never renders it with skin learned from its own photos."""
    everyone = sorted(pool) if pool is not None else ids(london)
    if codes is None:
        codes = code_smiles(everyone, lmc, london=london)[1]
    fold_of = {i: k % folds for k, i in enumerate(everyone)}
    learned = {k: london_texture([i for i in everyone if fold_of[i] != k], lmc, codes, london) for k in range(folds)}
    return {i: learned[fold_of[i]] for i in identities}


def fold_textures(gen: Generator, identities, folds: int = 2, options: dict | None = None, lmc: dict | None = None,
                  london: str | os.PathLike | None = None) -> dict[str, ExpressionTexture] | None:
    """:func:`texture_folds` for a generator that draws a learned expression texture (``mesh``) and
    was not given one in ``options``; None otherwise, or when ``folds`` is 0 (it keeps its own)."""
    if not folds or not hasattr(gen, "texture") or "texture" in (options or {}):
        return None
    return texture_folds(identities, landmarks_cache(london=london) if lmc is None else lmc, folds=folds, london=london)


def with_texture(gen: Generator, texture: ExpressionTexture | None) -> bool:
    """Give a generator that draws a learned expression texture (``mesh``) this one; False when the
    generator has none to replace (then it renders as it is)."""
    if not hasattr(gen, "texture"):
        return False
    gen.texture = texture
    return True


def reenactment_rows(identities, lmc, generator="warp", options: dict | None = None, judge=None,
                     faces: dict | None = None, on_row: Callable[[dict], None] | None = None,
                     london: str | os.PathLike | None = None, textures: dict | None = None) -> pd.DataFrame:
    """Self-reenactment: each neutral photo driven by the landmarks of the same person's real smile (the
    smile check's "reenacted" variant: those landmarks moved into the neutral photo's frame, rendered at
    the smile's measured head pose with its FACS codes and AU6 level), compared with that real smile in
    the same aligned SIZE px crop (the render's crop geometry equals the real one's: same landmarks up to
    a similarity). One row per identity: ``psnr_rendered`` / ``psnr_neutral`` (dB, RGB) and
    ``ssim_rendered`` / ``ssim_neutral`` (grey, Gaussian window) inside the hull of the real smile's
    landmarks, rendered vs real and the untouched neutral photo vs real; ``happy_rendered``,
    ``happy_real``, ``happy_neutral``: FER-2013 P(happy) of each (:class:`ExpressionJudge`, face box from
    each crop's own landmarks); ``face_px``; ``geometry_px``: the mean distance (px) of the render's
    landmarks from the real smile's in the crop (~0: the same geometry); the codes and pose (degrees).

    generator: a registered name (with ``options``) or an instance. ``faces``: a dict that receives, per
    kind ('real', 'rendered', 'neutral'), the list of grey :func:`face_box` crops in row order, for
    :func:`realism_summary`'s two-sample test. ``textures``: {identity: expression texture} to render
    each identity with (:func:`texture_folds`: learned on the other identities), for a generator that
    draws one."""
    gen = make_generator(generator, options)
    judge = judge or ExpressionJudge()
    happy = FER_LABELS.index("happy")
    root = _root(london)
    profiles, codes = code_smiles(identities, lmc, london=london)
    rows = []
    for i in identities:
        prof, (aus, fit_err, pose) = profiles[i], codes[i]
        p_smi, (real, real_lm), (neu, neu_lm) = pair_crops(prof, root, i, lmc)
        target = in_neutral_frame(prof, lmc[str(p_smi)])
        if textures is not None:
            with_texture(gen, textures[i])
        b = gen.render(prof, smile_row(prof, aus, float(intensity_level(aus["AU06"])), target, pose), size=SIZE)
        rend, rend_lm = b.images[0], b.landmarks[0]
        mask = face_mask(real_lm)
        p = judge.probabilities(np.stack([rend, real, neu]), np.stack([rend_lm, real_lm, neu_lm]))[:, happy]
        row = {"id": i, "generator": gen.name, **aus, "code_error": fit_err, **dict(zip(("yaw", "pitch", "roll"), pose)),
               "face_px": int(mask.sum()), "geometry_px": float(np.linalg.norm(rend_lm - real_lm, axis=1).mean()),
               "psnr_rendered": masked_psnr(rend, real, mask), "psnr_neutral": masked_psnr(neu, real, mask),
               "ssim_rendered": masked_ssim(rend, real, mask), "ssim_neutral": masked_ssim(neu, real, mask),
               "happy_rendered": float(p[0]), "happy_real": float(p[1]), "happy_neutral": float(p[2])}
        if faces is not None:
            for kind, img, lm in (("real", real, real_lm), ("rendered", rend, rend_lm), ("neutral", neu, neu_lm)):
                faces.setdefault(kind, []).append(face_box(img, lm))
        rows.append(row)
        if on_row:
            on_row(row)
    return pd.DataFrame(rows)


def realism_summary(df: pd.DataFrame, faces: dict, folds: int = REALISM_FOLDS, C: float = REALISM_C,
                    seeds=REALISM_SEEDS) -> pd.DataFrame:
    """One row of :func:`reenactment_rows`' table and face boxes: the mean PSNR and SSIM (rendered and
    neutral photo vs the real smile) and how many identities' renders beat their neutral photo on each;
    mean P(happy) of renders, real smiles and neutral photos and ``happy_ratio`` (rendered / real);
    ``auc_rendered``: the two-sample AUC (:func:`two_sample_auc` on :func:`hog_features`) of real smiles
    vs renders, ``auc_neutral``: real smiles vs the neutral photos (the reference: a face that is plainly
    not the smile), identity-grouped; ``auc_*_lo`` / ``_hi``: their range over the fold assignments
    shuffled with each of ``seeds``."""
    ids_ = df.id.to_numpy()
    real, rend, neu = (hog_features(faces[k]) for k in ("real", "rendered", "neutral"))
    return pd.DataFrame([{
        "generator": df.generator.iloc[0], "identities": len(df),
        "psnr_rendered": df.psnr_rendered.mean(), "psnr_neutral": df.psnr_neutral.mean(),
        "psnr_better": int((df.psnr_rendered > df.psnr_neutral).sum()),
        "ssim_rendered": df.ssim_rendered.mean(), "ssim_neutral": df.ssim_neutral.mean(),
        "ssim_better": int((df.ssim_rendered > df.ssim_neutral).sum()),
        "happy_rendered": df.happy_rendered.mean(), "happy_real": df.happy_real.mean(), "happy_neutral": df.happy_neutral.mean(),
        "happy_ratio": df.happy_rendered.mean() / df.happy_real.mean(),
        "auc_rendered": two_sample_auc(real, rend, ids_, ids_, folds, C),
        "auc_neutral": two_sample_auc(real, neu, ids_, ids_, folds, C),
        **{f"auc_{name}_{end}": f([two_sample_auc(real, other, ids_, ids_, folds, C, s) for s in seeds])
           for name, other in (("rendered", rend), ("neutral", neu)) for end, f in (("lo", min), ("hi", max))},
        "folds": folds, "C": C, "seeds": len(seeds)}])
