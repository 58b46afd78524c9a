"""Depth-aware piecewise-affine warping of a face onto target landmarks, rendered straight into an
aligned crop.

The mesh has four kinds of vertices, always in this order (``N_MESH`` in all):

* the 68 iBUG landmarks;
* ``EXTRA_3D``: forehead points and a head-outline ring (beyond the face contour, around the ears and
  the top of the neck) defined on the 3D mean face (mm), placed in an image by a weak-perspective fit
  of the rotated mean face to the 68 landmarks, so they turn with the head; the renderer then sets
  the ring from the contour with :func:`unfold_outline`;
* ``INNER``: points inside the face (cheek apices, chin boss, infraorbital points) defined as fixed
  blends of landmarks, so semantic AU appearance can move skin where no landmark lives;
* ``N_BORDER`` points around the crop, a quarter of its side outside it, which carry the background
  (the renderer moves them rigidly with the head, never with its expression).

One triangulation (Delaunay on the frontal template, eye and mouth openings kept as their own
triangles) serves every sample. A sample is rendered by rasterising triangle ids once (far triangles
first, so near ones occlude them), building a dense sampling map from per-triangle affine arrays with
numpy fancy indexing and calling ``cv2.remap`` once. Coordinates are pixels (x, y), y down.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from fewshot.crop import transform_scale
from fewshot.landmarks import INNER_LIPS, LEFT_EYE, RIGHT_EYE, STABLE, apply_affine, similarity_transform
from fewshot.pose import euler_to_matrix, mean_face_3d

N_LANDMARKS = 68

_MEAN = mean_face_3d()
FOREHEAD_3D = np.array(  # two rows above the brows (mm; x right, y down, z away from the camera)
    [[-62, -78, 48], [-32, -86, 22], [0, -88, 16], [32, -86, 22], [62, -78, 48],
     [-50, -112, 50], [-18, -122, 34], [18, -122, 34], [50, -112, 50]], dtype=np.float64)
# The head outline: a ring of points beyond the face contour (landmarks 0-16), far enough out to
# enclose the ears and the top of the neck, plus the two temples. They sit on the side of the head,
# receding behind the contour (the ears lie well behind the cheeks): a turn widens the near side's ear
# and tucks the far side's behind the cheek (see :func:`unfold_outline`). Every triangle that leaves
# the contour meets one of them before the crop border, so nothing beyond the contour is stretched
# from the contour straight to the border.
OUTLINE_ANCHOR = np.r_[0:17, 0, 16]
RING_OUT = np.r_[[34.0] * 5, [26.0] * 7, [34.0] * 5]  # mm beyond each contour landmark (ears; neck)
RING_BACK = np.r_[[1.0] * 5, [0.6] * 7, [1.0] * 5]  # mm of depth per mm outwards
# how far each outline extra follows its anchor's expression movement; the rest follows the head
# rigidly: the neck stays where it is when the jaw drops or the chin is raised
RING_FOLLOW = np.r_[[1.0] * 5, [0.0] * 7, [1.0] * 5, 1.0, 1.0]


def _outline_3d() -> np.ndarray:
    c = _MEAN[:17]
    tangent = np.gradient(c[:, :2], axis=0)
    normal = np.c_[tangent[:, 1], -tangent[:, 0]]
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    normal *= np.sign(((c[:, :2] - c[:, :2].mean(0)) * normal).sum(1, keepdims=True))  # outwards
    ring = np.c_[c[:, :2] + RING_OUT[:, None] * normal, c[:, 2] + RING_BACK * RING_OUT]
    temples = np.array([[-98.0, -70.0, c[0, 2] + 25], [98.0, -70.0, c[16, 2] + 25]])
    return np.concatenate([ring, temples])


EXTRA_3D = np.concatenate([FOREHEAD_3D, _outline_3d()])
N_EXTRA = len(EXTRA_3D)
OUTLINE = np.arange(N_LANDMARKS + len(FOREHEAD_3D), N_LANDMARKS + N_EXTRA)  # mesh ids of the outline extras
OUTLINE_MIN, OUTLINE_MAX = 0.1, 1.6  # bounds of an outline extra's distance from its anchor / the source's


def unfold_outline(face: np.ndarray, src_face: np.ndarray, to_src: np.ndarray, rotation: np.ndarray,
                   src_rotation: np.ndarray) -> np.ndarray:
    """Place the head-outline extras of target face points (N_FACE, 2) from their anchor landmarks.

    Each extra keeps the source's offset from its anchor on the face contour (its direction and the
    content between them: ear, hair, neck), carried into the target by the rotation and scale of
    ``to_src`` (the 2x3 similarity from target to source px), and widened or narrowed as the side of
    the head foreshortens: the 3D offset (EXTRA_3D recedes behind the contour) projected under
    ``rotation`` over its projection under the source's ``src_rotation``, within ``OUTLINE_MIN`` and
    ``OUTLINE_MAX``.
    A turn widens the near side's ear and squeezes the far side's into a sliver behind the cheek
    instead of stretching it over the face or folding the mesh. The neck's extras follow the head but not
    the jaw's expression movement (``RING_FOLLOW``)."""
    out = face.copy()
    scale = transform_scale(to_src)
    rot = to_src[:, :2] / scale
    v_src = src_face[OUTLINE] - src_face[OUTLINE_ANCHOR]
    off3 = EXTRA_3D[OUTLINE - N_LANDMARKS] - _MEAN[OUTLINE_ANCHOR]
    dir2 = off3[:, :2] / np.linalg.norm(off3[:, :2], axis=1, keepdims=True)

    def width(R):
        return ((off3 @ R.T)[:, :2] * (dir2 @ R[:2, :2].T)).sum(1)

    c = np.clip(width(rotation) / np.maximum(width(src_rotation), 1e-6), OUTLINE_MIN, OUTLINE_MAX)
    placed = out[OUTLINE_ANCHOR] + c[:, None] * ((v_src / scale) @ rot)
    # where the anchor would be if it only moved with the head: the source anchor through to_src^-1
    rigid_anchor = apply_affine(invert_affine(to_src), src_face[OUTLINE_ANCHOR])
    f = RING_FOLLOW[:, None]
    out[OUTLINE] = placed - (1 - f) * (out[OUTLINE_ANCHOR] - rigid_anchor)
    return out


def _blend(pairs: list[tuple[int, float]]) -> np.ndarray:
    w = np.zeros(N_LANDMARKS)
    for i, v in pairs:
        w[i] += v
    return w / w.sum()


EXTRA_MARGIN = 0.01  # extras are kept this fraction of the output inside the mesh border (no fold with it)
BORDER_PAD = 0.25  # the mesh border lies this fraction of the output's side outside each edge


def clamp_extras(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Keep the extras of face points (output px) inside the mesh border of an (h, w) output."""
    h, w = shape
    out = points.copy()
    ex = slice(N_LANDMARKS, N_LANDMARKS + N_EXTRA)
    m = EXTRA_MARGIN * max(h, w)
    out[ex, 0] = np.clip(out[ex, 0], m - BORDER_PAD * w, (1 + BORDER_PAD) * w - 1 - m)
    out[ex, 1] = np.clip(out[ex, 1], m - BORDER_PAD * h, (1 + BORDER_PAD) * h - 1 - m)
    return out


# Inner points as landmark blends (rows sum to 1). Names are used by the semantic appearance.
INNER_NAMES = ["cheek_r", "cheek_l", "chin_boss", "infraorb_r", "infraorb_l", "glabella", "nasolabial_r", "nasolabial_l"]
INNER_WEIGHTS = np.stack(
    [
        _blend([(41, 1), (40, 1), (31, 1), (2, 1), (1, 0.5)]),  # subject's right cheek apex
        _blend([(46, 1), (47, 1), (35, 1), (14, 1), (15, 0.5)]),
        _blend([(57, 1), (8, 1.3)]),  # chin boss, between lower lip and chin
        _blend([(41, 2), (40, 2), (31, 0.6), (1, 0.6)]),  # just below the lower lid
        _blend([(46, 2), (47, 2), (35, 0.6), (15, 0.6)]),
        _blend([(21, 1), (22, 1), (27, 1)]),
        _blend([(31, 1), (48, 1), (3, 0.35)]),
        _blend([(35, 1), (54, 1), (13, 0.35)]),
    ]
)
N_INNER = len(INNER_NAMES)
N_BORDER = 16
N_FACE = N_LANDMARKS + N_EXTRA + N_INNER  # vertices that move with the face
N_MESH = N_FACE + N_BORDER

# Frontal template of the aligned crop, in units of the crop side: the mean face's x-y, scaled so the
# jaw spans 0.6 of the crop, centred at (0.5, 0.56).
_span = _MEAN[:, 0].max() - _MEAN[:, 0].min()
_TEMPLATE_SCALE = 0.6 / _span
_centre = (_MEAN[:, :2].max(0) + _MEAN[:, :2].min(0)) / 2
TEMPLATE_68 = (_MEAN[:, :2] - _centre) * _TEMPLATE_SCALE + np.array([0.5, 0.56])
ALIGN_POINTS = STABLE  # points that barely move with expression fix the crop


def border_points(size: int | tuple[int, int]) -> np.ndarray:
    """(N_BORDER, 2) points around a size x size (or (h, w)) image, ``BORDER_PAD`` of its side outside
    each edge: corners, 3 per side. Outside, so that the background between the head outline and the
    border is wide enough in the source to fill what a turn uncovers without smearing hair across it."""
    h, w = (size, size) if np.isscalar(size) else size
    x0, y0 = -BORDER_PAD * w, -BORDER_PAD * h
    ex, ey = (1 + 2 * BORDER_PAD) * w - 1.0, (1 + 2 * BORDER_PAD) * h - 1.0
    t = np.array([0.0, 0.25, 0.5, 0.75])
    top = np.c_[t * ex, np.zeros(4)]
    right = np.c_[np.full(4, ex), t * ey]
    bottom = np.c_[ex - t * ex, np.full(4, ey)]
    left = np.c_[np.zeros(4), ey - t * ey]
    return np.concatenate([top, right, bottom, left]) + [x0, y0]


def weak_perspective(model: np.ndarray, rotation: np.ndarray, landmarks: np.ndarray) -> tuple[float, np.ndarray]:
    """Scale and 2D offset placing ``model @ R.T`` (mm) onto ``landmarks`` (px) in least squares,
    using the rigid points (brows, eyes, nose, upper jaw)."""
    idx = np.r_[0:5, 12:17, 17:48]
    x = (model @ rotation.T)[idx, :2]
    y = landmarks[idx]
    xc, yc = x - x.mean(0), y - y.mean(0)
    s = float((xc * yc).sum() / max((xc * xc).sum(), 1e-9))
    return s, y.mean(0) - s * x.mean(0)


def face_points(landmarks: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """(N_FACE, 2) mesh vertices that move with the face: landmarks, extras, inner points (px)."""
    s, t = weak_perspective(_MEAN, rotation, landmarks)
    extra = s * (EXTRA_3D @ rotation.T)[:, :2] + t
    inner = INNER_WEIGHTS @ landmarks
    return np.concatenate([landmarks, extra, inner])


def face_depths(rotation: np.ndarray, shape3d: np.ndarray | None = None) -> np.ndarray:
    """(N_FACE,) camera depth (mm, larger = farther) of the face vertices under a rotation."""
    model = _MEAN if shape3d is None else np.asarray(shape3d, float)
    z_lm = (model @ rotation.T)[:, 2]
    z_ex = (EXTRA_3D @ rotation.T)[:, 2]
    return np.concatenate([z_lm, z_ex, INNER_WEIGHTS @ z_lm])


def rotation_of(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rotation matrix of a head pose given in degrees (OpenFace convention, see fewshot.pose)."""
    return euler_to_matrix(np.radians(pitch), np.radians(yaw), np.radians(roll))


# -- triangulation ---------------------------------------------------------------------------------

EYE_TRIS = {
    "eye_r": np.array([[36, 37, 41], [37, 38, 40], [37, 40, 41], [38, 39, 40]]),
    "eye_l": np.array([[42, 43, 47], [43, 44, 46], [43, 46, 47], [44, 45, 46]]),
}
MOUTH_TRIS = np.array([[60, 61, 67], [61, 62, 66], [61, 66, 67], [62, 63, 65], [62, 65, 66], [63, 64, 65]])


def template_points(size: int) -> np.ndarray:
    """(N_MESH, 2) vertices of the frontal template in a size x size crop."""
    lm = TEMPLATE_68 * size
    pts = clamp_extras(face_points(lm, np.eye(3)), (size, size))
    return np.concatenate([pts, border_points(size)])


@dataclass(frozen=True)
class Mesh:
    """Triangles (T, 3) of vertex ids, and each triangle's kind: 0 skin, 1 right eye, 2 left eye, 3 mouth."""

    triangles: np.ndarray
    kind: np.ndarray


@lru_cache(maxsize=1)
def mesh() -> Mesh:
    from scipy.spatial import Delaunay

    lm = TEMPLATE_68 * 1000
    # Open the eyes and the mouth in the layout so Delaunay keeps their contours as edges.
    for eye in (RIGHT_EYE, LEFT_EYE):
        c = lm[eye].mean(0)
        lm[eye, 1] = c[1] + (lm[eye, 1] - c[1]) * 2.0
    c = lm[INNER_LIPS].mean(0)
    lm[INNER_LIPS, 0] = c[0] + (lm[INNER_LIPS, 0] - c[0]) * 0.8
    lm[INNER_LIPS, 1] = c[1] + (lm[INNER_LIPS, 1] - c[1]) * 3.0 + np.select(
        [np.isin(INNER_LIPS, [65, 66, 67]), np.isin(INNER_LIPS, [61, 62, 63])], [12.0, -12.0], 0.0)
    pts = np.concatenate([clamp_extras(face_points(lm, np.eye(3)), (1000, 1000)), border_points(1000)])
    tri = _force_edges(Delaunay(pts).simplices, [(e[i], e[(i + 1) % len(e)]) for e in (RIGHT_EYE, LEFT_EYE, INNER_LIPS) for i in range(len(e))])
    holes = [set(RIGHT_EYE), set(LEFT_EYE), set(INNER_LIPS)]
    keep = [t for t in tri if not any(set(t) <= h for h in holes)]
    tris = [np.array(keep)] + [EYE_TRIS["eye_r"], EYE_TRIS["eye_l"], MOUTH_TRIS]
    kinds = [np.zeros(len(keep), int), np.full(4, 1), np.full(4, 2), np.full(6, 3)]
    triangles = np.concatenate(tris).astype(np.int32)
    # Orient every triangle counter-clockwise in the template so a flip in a target means back-facing.
    a = _signed_area(pts[triangles])
    triangles[a < 0] = triangles[a < 0][:, [0, 2, 1]]
    return Mesh(triangles, np.concatenate(kinds))


def _force_edges(tri: np.ndarray, edges: list[tuple[int, int]]) -> np.ndarray:
    """Flip diagonals so each (a, b) in ``edges`` is an edge of the triangulation (one crossing edge
    per missing contour edge is enough on the face layout; anything else is a bug)."""
    tri = [tuple(t) for t in tri]
    for a, b in edges:
        if any(a in t and b in t for t in tri):
            continue
        ta = [t for t in tri if a in t]
        tb = [t for t in tri if b in t]
        pair = next(((x, y) for x in ta for y in tb if len(set(x) & set(y)) == 2), None)
        if pair is None:
            raise RuntimeError(f"cannot force mesh edge {a}-{b}")
        c, d = set(pair[0]) & set(pair[1])
        tri = [t for t in tri if t not in pair] + [(a, b, c), (a, b, d)]
    return np.array(tri)


def _signed_area(tri_pts: np.ndarray) -> np.ndarray:
    p0, p1, p2 = tri_pts[:, 0], tri_pts[:, 1], tri_pts[:, 2]
    return 0.5 * ((p1[:, 0] - p0[:, 0]) * (p2[:, 1] - p0[:, 1]) - (p2[:, 0] - p0[:, 0]) * (p1[:, 1] - p0[:, 1]))


def triangle_affines(dst: np.ndarray, src: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(T, 6) affine maps [a, b, c, d, e, f] sending each dst triangle onto its src triangle
    (x_src = a x + b y + c, y_src = d x + e y + f). Degenerate dst triangles get a constant map."""
    D = np.concatenate([dst[triangles], np.ones((len(triangles), 3, 1))], axis=2)  # (T,3,3)
    S = src[triangles]  # (T,3,2)
    det = np.linalg.det(D)
    ok = np.abs(det) > 1e-6
    A = np.zeros((len(triangles), 3, 2))
    A[ok] = np.linalg.solve(D[ok], S[ok])
    A[~ok, 2] = S[~ok].mean(1)
    return A.transpose(0, 2, 1).reshape(-1, 6)


def rasterise(dst: np.ndarray, triangles: np.ndarray, order: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """(h, w) int32 triangle-id image of a size x size (or (h, w)) output: triangles drawn in
    ``order`` (later ones on top), -1 where none falls (the border points close the mesh)."""
    ids = np.full((size, size) if np.isscalar(size) else tuple(size), -1, np.int32)
    pts = np.round(dst * 16).astype(np.int32)  # 4 bits of sub-pixel precision
    tri_pts = pts[triangles]
    for t in order:
        cv2.fillConvexPoly(ids, tri_pts[t], int(t), lineType=cv2.LINE_8, shift=4)
    return ids


def dense_map(ids: np.ndarray, affines: np.ndarray, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel sampling coordinates (map_x, map_y float32) from a triangle-id image and (T, 6) affines.

    ``stride`` s > 1: the map at 1/s resolution (ids sampled every s pixels), evaluated at the centres
    of the s x s blocks, so ``cv2.resize(..., INTER_LINEAR)`` back to full size is exact inside each
    triangle (for smooth fields such as the appearance gain)."""
    if stride > 1:
        ids = ids[stride // 2::stride, stride // 2::stride]
    h, w = ids.shape
    A = np.concatenate([affines, np.zeros((1, 6))]).astype(np.float32)  # id -1 -> last row
    c = np.take(A, ids, axis=0)  # (h, w, 6); id -1 wraps to the zero row
    ys, xs = _grid(h, w)
    if stride > 1:
        ys, xs = ys * stride + (stride - 1) / 2, xs * stride + (stride - 1) / 2
    map_x = c[..., 0] * xs + c[..., 1] * ys + c[..., 2]
    map_y = c[..., 3] * xs + c[..., 4] * ys + c[..., 5]
    return map_x, map_y


@lru_cache(maxsize=8)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return ys, xs


def crop_transform(landmarks: np.ndarray, size: int) -> np.ndarray:
    """2x3 similarity taking image pixels to the aligned size x size crop (fit on stable points)."""
    return similarity_transform(landmarks[ALIGN_POINTS], TEMPLATE_68[ALIGN_POINTS] * size)


def invert_affine(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(m.astype(np.float64))


def to_prescaled(points: np.ndarray, f: float) -> np.ndarray:
    """Pixel coordinates of an image mapped into its copy resized by ``f`` (pixel centres line up)."""
    return points if f == 1.0 else (np.asarray(points, float) + 0.5) * f - 0.5
