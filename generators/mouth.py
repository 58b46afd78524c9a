"""What the source photo cannot show: the mouth's interior when the lips part, and closed eyelids.

Both paint into an aligned crop (uint8 RGB, modified in place) with colours taken from the person's
own face: teeth from the whites of their eyes (warmed, at least as bright as the skin), the cavity
from their lip colour, the closed lid from the skin just above the lid in the crop itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from fewshot.landmarks import INNER_LIPS, LEFT_EYE, OUTER_LIPS, RIGHT_EYE


@dataclass(frozen=True)
class FaceColours:
    """Mean RGB colours (float, 0..255) sampled once from the source face."""

    skin: np.ndarray
    lips: np.ndarray
    sclera: np.ndarray
    lashes: np.ndarray

    @property
    def teeth(self) -> np.ndarray:
        """Teeth: the sclera's hue warmed a little, as bright as the brighter of the sclera and 1.1x
        the skin (teeth catch the light; a small sclera sample at 256 px reads too dark)."""
        warm = np.array([1.04, 1.0, 0.9])
        hue = 0.5 * self.sclera / max(float(self.sclera.mean()), 1.0) + 0.5 * warm
        lum = min(max(float(self.sclera.mean()), 1.1 * float(self.skin.mean()), 120.0), 235.0)
        return np.clip(hue * lum, 0, 255)


def sample_colours(image: np.ndarray, landmarks: np.ndarray) -> FaceColours:
    """Colours of a face from a uint8 RGB image and its 68 landmarks (px)."""
    h, w = image.shape[:2]

    def poly_pixels(pts: np.ndarray) -> np.ndarray:
        m = np.zeros((h, w), np.uint8)
        cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1)
        px = image[m.astype(bool)].astype(np.float32)
        return px if len(px) else image.reshape(-1, 3)[:1].astype(np.float32)

    lm = landmarks
    cheek = np.array([lm[41], lm[40], (lm[31] + lm[2]) / 2, lm[2] * 0.6 + lm[41] * 0.4])
    skin = np.median(poly_pixels(cheek), 0)
    outer = poly_pixels(lm[OUTER_LIPS])
    lips = np.median(outer, 0)
    eyes = np.concatenate([poly_pixels(lm[RIGHT_EYE]), poly_pixels(lm[LEFT_EYE])])
    lum = eyes.mean(1)
    sat = eyes.max(1) - eyes.min(1)
    bright = eyes[(lum >= np.percentile(lum, 75)) & (sat <= np.percentile(sat, 60))]
    sclera = bright.mean(0) if len(bright) else np.array([215.0, 210.0, 200.0])
    lashes = np.percentile(eyes, 5, axis=0)
    return FaceColours(skin, lips, sclera, lashes)


def _mask(size: int | tuple[int, int], pts: np.ndarray, blur: float) -> np.ndarray:
    """Soft polygon mask on a size x size (or (h, w)) canvas; zero outside it (no reflected border)."""
    m = np.zeros((size, size) if np.isscalar(size) else tuple(size), np.float32)
    cv2.fillPoly(m, [np.round(pts * 16).astype(np.int32)], 1.0, cv2.LINE_AA, shift=4)
    if blur > 0:
        k = int(2 * round(2 * blur) + 1)
        m = cv2.GaussianBlur(m, (k, k), blur, borderType=cv2.BORDER_CONSTANT)
    return m


def opening(lm: np.ndarray, upper: list[int], lower: list[int], corners: tuple[int, int]) -> float:
    """Mean upper-lower distance over the corner-to-corner width (0 = closed)."""
    width = np.linalg.norm(lm[corners[1]] - lm[corners[0]])
    return float(np.mean(np.linalg.norm(lm[upper] - lm[lower], axis=1)) / max(width, 1e-6))


def mouth_opening(lm: np.ndarray) -> float:
    return opening(lm, [61, 62, 63], [67, 66, 65], (60, 64))


def eye_openings(lm: np.ndarray) -> tuple[float, float]:
    return opening(lm, [37, 38], [41, 40], (36, 39)), opening(lm, [43, 44], [47, 46], (42, 45))


def paint_mouth(crop: np.ndarray, lm: np.ndarray, colours: FaceColours, alpha: float, seed: int = 0) -> None:
    """Dark cavity with an upper (and, when wide open, a lower) teeth band inside the inner-lip
    polygon of ``lm`` (crop px), blended by ``alpha`` in [0, 1]."""
    if alpha <= 0:
        return
    size = crop.shape[0]
    poly = lm[INNER_LIPS]
    x0, y0 = np.floor(poly.min(0)).astype(int) - 2
    x1, y1 = np.ceil(poly.max(0)).astype(int) + 3
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, size), min(y1, size)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    width = np.linalg.norm(lm[64] - lm[60])
    m = _mask((y1 - y0, x1 - x0), poly - [x0, y0], blur=max(0.5, width * 0.012))  # only the mouth's box
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    # upper / lower lip edges at each column, interpolated along the inner contour
    top = np.interp(xs[0], *_sorted(poly[[0, 1, 2, 3, 4]]))
    bot = np.interp(xs[0], *_sorted(poly[[0, 7, 6, 5, 4]]))
    gap = np.maximum(bot - top, 1e-3)
    v = (ys - top) / gap  # 0 at the upper lip, 1 at the lower lip
    cx = (lm[60, 0] + lm[64, 0]) / 2
    u = np.abs(xs - cx) / max(width / 2, 1e-3)  # 0 centre, 1 corners
    cavity = colours.lips * 0.22 + 4.0
    col = np.broadcast_to(cavity, ys.shape + (3,)).astype(np.float32) * (1.0 - 0.35 * v[..., None])
    # upper teeth hang from the upper lip: most of a smile's narrow gap, up to ~a fifth of the width
    teeth_h = np.minimum(0.7 * gap, 0.2 * width) / gap  # band height as a fraction of the gap
    teeth = colours.teeth
    shade = np.clip(1.0 - 0.55 * u**2, 0.3, 1.0)[..., None]  # darker towards the corners
    t_up = np.clip((teeth_h - v) / 0.08, 0, 1)[..., None]
    col = col * (1 - t_up) + teeth * shade * t_up * (0.85 + 0.15 * np.clip(1 - v / np.maximum(teeth_h, 1e-3), 0, 1))[..., None]
    low_h = np.clip((gap / width - 0.3) * 0.6, 0, 0.2)  # lower teeth only when wide open
    if np.any(low_h > 0):
        t_lo = np.clip((v - (1 - low_h)) / 0.08, 0, 1)[..., None]
        col = col * (1 - t_lo) + teeth * shade * 0.75 * t_lo
    # thin tooth gaps so the band does not read as a white bar
    rng = np.random.default_rng(seed)
    period = width * (0.11 + 0.01 * rng.random())
    gaps = 1.0 - 0.18 * np.exp(-(((xs - cx) % period) / max(period * 0.08, 0.5)) ** 2)
    col = col * np.where(t_up > 0.5, gaps[..., None], 1.0)
    a = (m * alpha)[..., None]
    region = crop[y0:y1, x0:x1].astype(np.float32)
    crop[y0:y1, x0:x1] = np.clip(region * (1 - a) + col * a, 0, 255).astype(np.uint8)


def _sorted(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    o = np.argsort(pts[:, 0])
    return pts[o, 0], pts[o, 1]


def paint_closed_lid(crop: np.ndarray, lm: np.ndarray, eye: np.ndarray, brow: np.ndarray, colours: FaceColours, alpha: float) -> None:
    """Cover the eye opening of ``eye`` (6 landmark ids) with lid skin and draw the lash line, blended
    by ``alpha``; the lid colour is sampled in the crop between the upper lid and the brow."""
    if alpha <= 0:
        return
    size = crop.shape[0]
    pts = lm[eye]
    width = np.linalg.norm(pts[3] - pts[0])
    probe = pts[[1, 2]] * 0.7 + lm[brow[[1, 3]]] * 0.3
    r = max(1, int(width * 0.06))
    samples = []
    for x, y in np.round(probe).astype(int):
        if r <= x < size - r and r <= y < size - r:
            samples.append(crop[y - r : y + r + 1, x - r : x + r + 1].reshape(-1, 3))
    lid = np.median(np.concatenate(samples), 0).astype(np.float32) if samples else colours.skin.astype(np.float32)
    c = pts.mean(0)
    grown = c + (pts - c) * np.array([1.08, 1.6])  # cover the lid margin too
    m = _mask(size, grown, blur=max(0.6, width * 0.05)) * alpha
    lash_line = np.zeros((size, size), np.float32)
    closed = (pts[[0, 1, 2, 3]] + pts[[0, 5, 4, 3]]) / 2 * 0.4 + pts[[0, 5, 4, 3]] * 0.6
    cv2.polylines(lash_line, [np.round(closed * 16).astype(np.int32)], False, 1.0, max(1, int(round(width * 0.05))), cv2.LINE_AA, shift=4)
    lash_line = cv2.GaussianBlur(lash_line, (3, 3), 0.7) * alpha
    img = crop.astype(np.float32)
    # the lid is a little darker towards the lash line (it curves away from the light)
    img = img * (1 - m[..., None]) + (lid * 0.93) * m[..., None]
    lash = np.minimum(colours.lashes, lid * 0.35)
    img = img * (1 - 0.85 * lash_line[..., None]) + lash * 0.85 * lash_line[..., None]
    crop[:] = np.clip(img, 0, 255).astype(np.uint8)
