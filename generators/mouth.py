"""What the source photo cannot show: the mouth's interior when the lips part, and closed eyelids.

Both paint into an aligned crop (uint8 RGB, modified in place) with colours taken from the person's
own face: teeth from the whites of their eyes (brighter and a little warmer, as measured on the London
smiles), the cavity from their lip colour, the closed lid from the skin just above the lid in the crop itself.
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
        """Teeth under the same light as the eyes: 1.25x the sclera sample's brightness, slightly warm.
        Both constants are the medians over the 20 London smiles that show teeth (inner-lip opening
        > 0.1): 90th-percentile teeth colour / sclera brightness 1.25 (quartiles 1.21-1.36, the same
        in either half of the identities), RGB ratios 1.03 : 1.00 : 0.97."""
        lum = min(max(1.25 * float(self.sclera.mean()), 90.0), 245.0)
        return np.array([1.033, 0.997, 0.969]) * lum


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


def inner_mouth_mask(lm: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean (h, w) mask of the mouth opening: inside the inner-lip curve of ``lm`` (68, 2) px, less
    one pixel all round (the lip edge itself is neither teeth nor cavity)."""
    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [np.round(lm[INNER_LIPS]).astype(np.int32)], 1)
    return cv2.erode(m, np.ones((3, 3), np.uint8)).astype(bool)


def opening(lm: np.ndarray, upper: list[int], lower: list[int], corners: tuple[int, int]) -> float:
    """Mean upper-lower distance over the corner-to-corner width (0 = closed)."""
    width = np.linalg.norm(lm[corners[1]] - lm[corners[0]])
    return float(np.mean(np.linalg.norm(lm[upper] - lm[lower], axis=1)) / max(width, 1e-6))


def mouth_opening(lm: np.ndarray) -> float:
    return opening(lm, [61, 62, 63], [67, 66, 65], (60, 64))


def eye_openings(lm: np.ndarray) -> tuple[float, float]:
    return opening(lm, [37, 38], [41, 40], (36, 39)), opening(lm, [43, 44], [47, 46], (42, 45))


# Upper dentition, centre outwards (mm, mesiodistal): central and lateral incisor, canine, premolars.
_TOOTH_MM = np.array([8.5, 6.5, 7.5, 7.0, 6.5])
_ARCH_R_MM = 25.0  # radius of the front of the dental arch
_HALF_MOUTH_MM = 24.0  # half the width between the inner lip corners in a smile


def tooth_edges(seed: int = 0) -> np.ndarray:
    """Boundaries between upper teeth as seen from the front, as |x| / half the inner-mouth width:
    equal arc lengths on a circular arch project closer together towards the corners. A seed varies
    the tooth widths by a few percent."""
    w = _TOOTH_MM * (1.0 + 0.05 * np.random.default_rng(seed).uniform(-1, 1, len(_TOOTH_MM)))
    s = np.cumsum(w)
    return _ARCH_R_MM * np.sin(np.minimum(s / _ARCH_R_MM, np.pi / 2)) / _HALF_MOUTH_MM


def paint_mouth(crop: np.ndarray, lm: np.ndarray, colours: FaceColours, alpha: float, seed: int = 0) -> None:
    """Paint the mouth's interior inside smooth curves through the inner-lip landmarks of ``lm`` (crop
    px), blended by ``alpha`` in [0, 1]: upper teeth from the upper lip down to an incisal arc ~0.19
    of the mouth width below it, lower teeth up to ~0.12 above the lower lip (covered by the upper ones
    where the gap is narrow), a dark cavity between them and in the corners (buccal corridors), the
    tongue low in a wide-open mouth. Teeth are shaded darker
    under the upper lip, towards the corners and along the soft gaps between teeth, which follow the
    arch (:func:`tooth_edges`)."""
    if alpha <= 0:
        return
    size = crop.shape[0]
    upper, lower = _arc(lm[[60, 61, 62, 63, 64]]), _arc(lm[[64, 65, 66, 67, 60]])
    poly = np.concatenate([upper, lower[1:-1]])  # smooth lips, cusps at the corners
    x0, y0 = np.floor(poly.min(0)).astype(int) - 2
    x1, y1 = np.ceil(poly.max(0)).astype(int) + 3
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, size), min(y1, size)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    width = max(float(np.linalg.norm(lm[64] - lm[60])), 1.0)
    m = _mask((y1 - y0, x1 - x0), poly - [x0, y0], blur=max(0.5, width * 0.012))  # only the mouth's box
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    # the mouth's own frame: along the corner-to-corner line (roll-proof), across it downwards
    c0 = (lm[60] + lm[64]) / 2
    e = (lm[64] - lm[60]) / width
    n = np.array([-e[1], e[0]])
    along, down = (xs - c0[0]) * e[0] + (ys - c0[1]) * e[1], (xs - c0[0]) * n[0] + (ys - c0[1]) * n[1]

    def to_frame(pts: np.ndarray) -> np.ndarray:
        return np.stack([(pts - c0) @ e, (pts - c0) @ n], 1)

    up_line, lo_line = _sorted(to_frame(upper)), _sorted(to_frame(lower))
    top, bot = np.interp(along, *up_line), np.interp(along, *lo_line)  # lip edges above / below each pixel
    top_c, bot_c = float(np.interp(0.0, *up_line)), float(np.interp(0.0, *lo_line))
    u = np.abs(along) / (width / 2)  # 0 centre, 1 corners
    soft = max(0.6, 0.015 * width)  # px: edges of painted shapes
    # tooth gaps: distance (px) to the nearest boundary between teeth, the midline included
    edges = np.concatenate([[0.0], tooth_edges(seed)])
    d_gap = np.min(np.abs(u[..., None] - edges), axis=-1) * width / 2
    # rounded incisal corners of the front teeth
    embrasure = 0.015 * width * np.exp(-((d_gap / (0.025 * width)) ** 2)) * np.clip(1.6 - 2 * u, 0, 1)
    # incisal edges are fixed to the jaw, not to the lips: a gentle arc rising towards the corners
    # (the upper teeth hang ~0.19 of the mouth width below the upper lip's middle, the lower teeth show
    # ~0.12 above the lower lip's middle); at the sides of a wide-open mouth the lips cover them
    inc_up = top_c + 0.19 * width - 0.06 * width * u**2 - embrasure
    inc_lo = bot_c - 0.12 * width + 0.05 * width * u**2
    in_up = np.clip((inc_up - down) / soft, 0, 1)
    in_lo = np.clip((down - inc_lo) / soft, 0, 1) * (1 - in_up)  # the upper teeth overlap the lower
    teeth = colours.teeth
    gaps = 1.0 - 0.22 * np.exp(-((d_gap / max(0.012 * width, 0.5)) ** 2)) * np.clip(1.2 - u, 0, 1)
    corridor = np.clip(1.0 - 0.75 * np.clip((u - 0.55) / 0.45, 0, 1) ** 1.5, 0.2, 1.0)  # darker towards the corners
    lip_shadow = 1.0 - 0.2 * np.exp(-np.maximum(down - top, 0) / max(0.03 * width, 0.5))  # under the upper lip
    incisal = 1.0 - 0.1 * np.clip(1 - (inc_up - down) / max(0.03 * width, 0.5), 0, 1)  # translucent edge
    shade_up = (gaps * corridor * lip_shadow * incisal)[..., None]
    shade_lo = (0.78 * gaps * corridor)[..., None]
    gap_v = np.maximum(bot - top, 1e-3)
    depth = np.clip((down - top) / gap_v, 0, 1)[..., None]
    cavity = colours.lips * (0.30 - 0.12 * depth) + 6.0  # dark red-brown, darker deeper down
    # the tongue shows low in a wide-open mouth, lit in its middle
    wide = np.clip((gap_v / width - 0.35) / 0.2, 0, 1)[..., None]
    tongue = np.clip((depth - 0.55) / 0.15, 0, 1) * wide * np.clip(1 - u, 0, 1)[..., None] ** 0.5
    cavity = cavity * (1 - tongue) + colours.lips * 0.7 * tongue
    col = cavity * (1 - in_up[..., None] - in_lo[..., None]) + teeth * (shade_up * in_up[..., None] + shade_lo * in_lo[..., None])
    col = cv2.GaussianBlur(col.astype(np.float32), (0, 0), soft * 0.6)
    a = (m * alpha)[..., None]
    region = crop[y0:y1, x0:x1].astype(np.float32)
    crop[y0:y1, x0:x1] = np.clip(region * (1 - a) + col * a, 0, 255).astype(np.uint8)


def _arc(pts: np.ndarray, per_segment: int = 6) -> np.ndarray:
    """A Catmull-Rom curve through ``pts`` (k, 2), ends included: the lip line between its landmarks."""
    p = np.concatenate([2 * pts[:1] - pts[1:2], pts, 2 * pts[-1:] - pts[-2:-1]])
    t = np.linspace(0, 1, per_segment, endpoint=False)[:, None]
    out = []
    for i in range(1, len(p) - 2):
        a, b, c, d = p[i - 1], p[i], p[i + 1], p[i + 2]
        out.append(0.5 * (2 * b + (c - a) * t + (2 * a - 5 * b + 4 * c - d) * t**2 + (3 * b - a - 3 * c + d) * t**3))
    return np.concatenate(out + [pts[-1:]])


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
