"""Semantic AU channels: soft skin regions, built from 68 target landmarks, where an AU changes the
skin's appearance rather than (only) moving landmarks. The step-3 generator renders wrinkles, bulges
and furrows inside them, scaled by the grid's ``sem_AUxx`` strengths.

- AU06 cheek raiser: infraorbital bulge below the lower lid, crow's feet beyond the outer eye corner,
  raised cheek down to the nasolabial furrow (both sides).
- AU17 chin raiser: the chin boss between the lower lip and the chin (wrinkled, "orange peel").
- AU04 brow lowerer: the glabella between the inner brows (vertical furrows).
- AU09 nose wrinkler: the sides of the nose bridge and the root of the nose (oblique wrinkles).
- AU10 upper lip raiser: the upper lip and the upper nasolabial furrows beside the alae.
"""

from __future__ import annotations

import cv2
import numpy as np

from fewshot.landmarks import interocular

SEMANTIC_AUS = ("AU06", "AU17", "AU04", "AU09", "AU10")


def _lerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    return a + t * (b - a)


def semantic_polygons(lm: np.ndarray) -> dict[str, list[np.ndarray]]:
    """The region polygons (px) of each semantic AU for one (68, 2) landmark set."""
    lm = np.asarray(lm, float)
    iod = float(interocular(lm))
    eye_axis = lm[45] - lm[36]
    ex = eye_axis / max(np.linalg.norm(eye_axis), 1e-6)  # image-right along the eye line
    ey = np.array([-ex[1], ex[0]])  # face "down"
    up = -ey
    polys: dict[str, list[np.ndarray]] = {}

    cheeks = []
    # subject's right (image left) side: outward = -ex; left side: outward = +ex
    for outer, lower, inner, ala, corner, jaw, out in (
        (36, (41, 40), 39, 31, 48, 2, -ex),
        (45, (46, 47), 42, 35, 54, 14, ex),
    ):
        crow = lm[outer] + 0.22 * iod * out + 0.04 * iod * up
        crow_lo = lm[outer] + 0.20 * iod * out + 0.12 * iod * ey
        cheek_lo = _lerp(lm[corner], lm[jaw], 0.45) + 0.05 * iod * up
        nasolabial = _lerp(lm[ala], lm[corner], 0.5) + 0.05 * iod * out
        below_inner = lm[inner] + 0.12 * iod * ey
        cheeks.append(np.array([crow, lm[outer], lm[lower[0]], lm[lower[1]], lm[inner], below_inner, nasolabial,
                                cheek_lo, crow_lo]))
    polys["AU06"] = cheeks

    lip = lm[[59, 58, 57, 56, 55]] + 0.03 * iod * ey
    chin = np.array([_lerp(lm[10], lm[55], 0.25), _lerp(lm[9], lm[56], 0.2), _lerp(lm[8], lm[57], 0.15),
                     _lerp(lm[7], lm[58], 0.2), _lerp(lm[6], lm[59], 0.25)])
    polys["AU17"] = [np.vstack([lip, chin])]

    glabella = np.array([lm[21] + 0.18 * iod * up, lm[22] + 0.18 * iod * up, lm[22], _lerp(lm[22], lm[42], 0.5),
                         lm[28], _lerp(lm[21], lm[39], 0.5), lm[21]])
    polys["AU04"] = [glabella]

    half = 0.5
    nose = np.array([_lerp(lm[27], lm[39], half), _lerp(lm[27], lm[42], half), lm[35] + 0.10 * iod * ex + 0.04 * iod * up,
                     lm[35], lm[33], lm[31], lm[31] - 0.10 * iod * ex + 0.04 * iod * up])
    polys["AU09"] = [nose]

    upper_lip = np.array([lm[31] - 0.06 * iod * ex, lm[31], lm[33], lm[35], lm[35] + 0.06 * iod * ex,
                          lm[54] + 0.05 * iod * ex + 0.03 * iod * up, lm[53], lm[52], lm[51], lm[50], lm[49],
                          lm[48] - 0.05 * iod * ex + 0.03 * iod * up])
    polys["AU10"] = [upper_lip]
    return polys


def semantic_masks(landmarks68: np.ndarray, height: int, width: int, softness: float = 0.06) -> dict[str, np.ndarray]:
    """Soft masks of the semantic AU regions: {'AU06': float32 (H, W) in 0..1, ...}.

    landmarks68: (68, 2) px in an image of ``height`` x ``width``. ``softness``: Gaussian blur sigma
    as a fraction of the inter-ocular distance (feathered edges for blending).
    """
    iod = float(interocular(np.asarray(landmarks68, float)))
    sigma = max(softness * iod, 0.5)
    k = int(2 * np.ceil(3 * sigma) + 1)
    out: dict[str, np.ndarray] = {}
    for au, polys in semantic_polygons(landmarks68).items():
        m = np.zeros((height, width), np.uint8)
        cv2.fillPoly(m, [np.round(p * 16).astype(np.int32) for p in polys], 255, cv2.LINE_AA, shift=4)
        soft = cv2.GaussianBlur(m, (k, k), sigma).astype(np.float32) / 255.0
        out[au] = soft
    return out
