"""The 68-point iBUG/Multi-PIE landmark scheme and geometry helpers.

Indices are 0-based throughout (OpenFace's ``x_0..x_67``). Coordinates are pixels, (x, y), y down.
"""

from __future__ import annotations

import numpy as np

N_POINTS = 68

JAW = np.arange(0, 17)
RIGHT_BROW = np.arange(17, 22)  # subject's right = image left
LEFT_BROW = np.arange(22, 27)
NOSE_BRIDGE = np.arange(27, 31)
NOSE_BOTTOM = np.arange(31, 36)
RIGHT_EYE = np.arange(36, 42)
LEFT_EYE = np.arange(42, 48)
OUTER_LIPS = np.arange(48, 60)
INNER_LIPS = np.arange(60, 68)

NOSE_TIP = 30
CHIN = 8
RIGHT_EYE_OUTER, RIGHT_EYE_INNER = 36, 39
LEFT_EYE_OUTER, LEFT_EYE_INNER = 45, 42
MOUTH_RIGHT, MOUTH_LEFT = 48, 54

REGIONS: dict[str, np.ndarray] = {
    "jaw": JAW,
    "right_brow": RIGHT_BROW,
    "left_brow": LEFT_BROW,
    "nose": np.concatenate([NOSE_BRIDGE, NOSE_BOTTOM]),
    "right_eye": RIGHT_EYE,
    "left_eye": LEFT_EYE,
    "outer_lips": OUTER_LIPS,
    "inner_lips": INNER_LIPS,
}

# Points that barely move with expression: used for rigid alignment.
STABLE = np.array([27, 28, 29, 30, 31, 33, 35, 36, 39, 42, 45, 0, 16])


def eye_centers(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres of the subject's right (image-left) and left eyes, each (..., 2)."""
    return lm[..., RIGHT_EYE, :].mean(axis=-2), lm[..., LEFT_EYE, :].mean(axis=-2)


def interocular(lm: np.ndarray) -> np.ndarray:
    """Distance between eye centres (pixels), the normalizer of landmark errors. Shape lm[..., 0, 0]."""
    r, l = eye_centers(lm)
    return np.linalg.norm(l - r, axis=-1)


def eye_line_roll(lm: np.ndarray) -> np.ndarray:
    """In-plane angle (radians) of the line from the image-left eye to the image-right eye; y down,
    so positive = the face is rotated clockwise in the image."""
    r, l = eye_centers(lm)
    d = l - r
    return np.arctan2(d[..., 1], d[..., 0])


def normalized_error(pred: np.ndarray, ref: np.ndarray, points: np.ndarray | None = None) -> np.ndarray:
    """Mean point-to-point distance divided by the reference's inter-ocular distance.

    pred, ref: (..., 68, 2). Returns shape (...).
    """
    idx = slice(None) if points is None else points
    d = np.linalg.norm(pred[..., idx, :] - ref[..., idx, :], axis=-1).mean(axis=-1)
    return d / interocular(ref)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama) mapping src (N,2) onto dst (N,2), as a 2x3 matrix."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    var = (s**2).sum() / len(src)
    scale = (sig * sign).sum() / var if var > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def apply_affine(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to points (..., 2)."""
    return pts @ m[:, :2].T + m[:, 2]


def aligned_error(pred: np.ndarray, ref: np.ndarray) -> float:
    """:func:`normalized_error` of ``pred`` after a similarity fit onto ``ref`` on the stable points that
    are finite in both (the head moves between two photos of one face)."""
    ok = np.isfinite(pred[STABLE]).all(1) & np.isfinite(ref[STABLE]).all(1)
    m = similarity_transform(pred[STABLE][ok], ref[STABLE][ok])
    return float(normalized_error(apply_affine(m, pred), ref))


def bbox_of(lm: np.ndarray) -> np.ndarray:
    """Axis-aligned box (x0, y0, x1, y1) of a landmark set."""
    return np.array([lm[:, 0].min(), lm[:, 1].min(), lm[:, 0].max(), lm[:, 1].max()], dtype=float)


def _mirror_index() -> np.ndarray:
    m = np.arange(N_POINTS)
    pairs = [(i, 16 - i) for i in range(8)]
    pairs += [(17 + i, 26 - i) for i in range(5)]
    pairs += [(31, 35), (32, 34), (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67)]
    for a, b in pairs:
        m[a], m[b] = b, a
    return m


# MIRROR[i] is the index of point i's left/right counterpart (itself on the midline).
MIRROR = _mirror_index()
