"""Face alignment shared by training and inference: 68 landmarks -> a canonical uint8 RGB crop.

    from au_models.align import AlignConfig, align_faces
    crops, lm = align_faces(images, landmarks, AlignConfig(crop_size=112))

A least-squares similarity transform (rotation, uniform scale, translation; no shear) maps the face's
*stable* points (nose, eye corners, jaw ends: :data:`fewshot.landmarks.STABLE`) onto the same points of
a canonical template, the shipped 3D mean face's frontal projection scaled into the crop. Expression
moves the brows, lids, mouth and jaw, so leaving them out of the fit keeps an AU visible as a change
inside a fixed frame rather than a shift of the whole crop. NaN points (a data set's scheme that lacks
them) are ignored; when fewer than 3 stable points remain, every finite point is used.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Sequence

import cv2
import numpy as np

from fewshot.crop import warp_crop
from fewshot.landmarks import N_POINTS, STABLE
from fewshot.pose import mean_face_3d

MIN_POINTS = 3


@dataclass(frozen=True)
class AlignConfig:
    """Geometry of the canonical crop.

    crop_size: side of the square crop (pixels). face_width: width of the 68-point template as a fraction
    of the crop. center_y: vertical position of the template's box centre as a fraction of the crop
    (> 0.5 leaves room for the forehead, where AU01/AU02 wrinkle the skin).
    """

    crop_size: int = 112
    face_width: float = 0.78
    center_y: float = 0.55

    def to_dict(self) -> dict:
        return asdict(self)


def canonical_template(config: AlignConfig = AlignConfig()) -> np.ndarray:
    """(68, 2) float64 template in crop pixels: the mean face's frontal (x, y) scaled into the crop."""
    pts = mean_face_3d()[:, :2]
    lo, hi = pts.min(0), pts.max(0)
    s = config.face_width * config.crop_size / (hi[0] - lo[0])
    centre = (lo + hi) / 2.0
    return (pts - centre) * s + np.array([config.crop_size / 2.0, config.center_y * config.crop_size])


def template_hash(template: np.ndarray) -> str:
    """Short hash identifying a template (recorded in caches and checkpoints)."""
    return hashlib.sha1(np.round(np.asarray(template, np.float64), 4).tobytes()).hexdigest()[:12]


def similarity_matrices(landmarks: np.ndarray, template: np.ndarray, points: np.ndarray = STABLE) -> np.ndarray:
    """Vectorised weighted least-squares similarity transforms, landmarks -> template.

    landmarks: (N, 68, 2) pixels, NaN where missing. Returns (N, 2, 3) float64 matrices; rows whose face
    has fewer than 3 usable points are NaN.
    """
    lm = np.asarray(landmarks, np.float64).reshape(-1, N_POINTS, 2)
    finite = np.isfinite(lm).all(-1)  # (N, 68)
    use = np.zeros_like(finite)
    use[:, points] = finite[:, points]
    few = use.sum(1) < MIN_POINTS
    use[few] = finite[few]  # fall back to every available point
    w = use.astype(np.float64)
    src = np.where(use[..., None], lm, 0.0)
    dst = np.broadcast_to(template, lm.shape)
    wsum = np.maximum(w.sum(1, keepdims=True), 1e-12)  # (N, 1)
    mu_s = (w[..., None] * src).sum(1) / wsum
    mu_d = (w[..., None] * dst).sum(1) / wsum
    s = (src - mu_s[:, None]) * w[..., None]
    d = dst - mu_d[:, None]
    var = (s * s).sum((1, 2))
    a = (s * d).sum((1, 2)) / np.maximum(var, 1e-12)
    b = (s[..., 0] * d[..., 1] - s[..., 1] * d[..., 0]).sum(1) / np.maximum(var, 1e-12)
    m = np.empty((len(lm), 2, 3))
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = a, -b, b, a
    m[:, :, 2] = mu_d - np.einsum("nij,nj->ni", m[:, :, :2], mu_s)
    bad = (use.sum(1) < MIN_POINTS) | (var < 1e-6)
    m[bad] = np.nan
    return m


def transform_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply (N, 2, 3) matrices to (N, K, 2) points (NaN stays NaN)."""
    return np.einsum("nij,nkj->nki", m[:, :, :2], pts) + m[:, None, :, 2]


def align_faces(
    images: np.ndarray | Sequence[np.ndarray],
    landmarks: np.ndarray,
    config: AlignConfig = AlignConfig(),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Align faces to the canonical crop.

    images: one uint8 (H, W, 3) RGB image per face (a sequence, or an (N, H, W, 3) array);
    landmarks: (N, 68, 2) pixels in those images, NaN where missing.
    Returns (crops (N, S, S, 3) uint8 RGB, landmarks in crop pixels (N, 68, 2) float32, ok (N,) bool);
    a face with fewer than 3 usable points gets a black crop, NaN landmarks and ok=False.
    """
    lm = np.asarray(landmarks, np.float64).reshape(-1, N_POINTS, 2)
    if len(images) != len(lm):
        raise ValueError(f"{len(images)} images but {len(lm)} landmark sets")
    S = config.crop_size
    mats = similarity_matrices(lm, canonical_template(config))
    ok = np.isfinite(mats).all((1, 2))
    crops = np.zeros((len(lm), S, S, 3), np.uint8)
    for i in np.flatnonzero(ok):
        # area-filtered like the generator's crops: a photo's face is often several times the crop size
        crops[i] = warp_crop(np.ascontiguousarray(images[i]), mats[i], S, cv2.BORDER_REPLICATE)
    out_lm = np.full(lm.shape, np.nan, np.float32)
    out_lm[ok] = transform_points(mats[ok], lm[ok])
    return crops, out_lm, ok


def align_face(image: np.ndarray, landmarks: np.ndarray, config: AlignConfig = AlignConfig()) -> tuple[np.ndarray, np.ndarray]:
    """One face: (crop (S, S, 3) uint8 RGB, landmarks (68, 2) in crop pixels). ValueError if unusable."""
    crops, lm, ok = align_faces([image], landmarks[None], config)
    if not ok[0]:
        raise ValueError("fewer than 3 finite landmarks; cannot align the face")
    return crops[0], lm[0]
