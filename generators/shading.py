"""'warp+shading': the warp generator's crops relit by the shading change of the 3D face's expression.

    from generators import generate
    batch = generate(profile, grid, size=256, generator="warp+shading")   # GeneratedBatch, uint8 RGB

Instead of painting an AU's skin change (the procedural strokes and blotches of
:mod:`generators.appearance`), the light and shadow of bulges and folds come from geometry: the
ICT-FaceKit face model (:mod:`generators.facemodel`) fitted to the person, deformed by the row's AUs,
lit by the photo's own light.

Per profile (:class:`FaceShading`, cached by the generator like the warp's renderer):

* the ICT identity and the source's own expression are fitted to the source landmarks
  (:func:`generators.facemodel.fit_landmarks`, all shapes but ``mouthClose``): the person's mesh as
  photographed, its pose, the photo's camera; a profile of a clip or folder fits the identity on its
  other faces too (:func:`generators.facemodel.fit_views`: averaged, each face with its own pose and
  expression);
* the light: a 2nd-order spherical-harmonic irradiance (9 coefficients, on luminance, Ramamoorthi &
  Hanrahan's Lambertian band factors) fitted by Huber-reweighted least squares of the photo's
  **linear** luminance (sRGB as a 2.2 power; lightly smoothed) at the visible skin vertices against
  their camera-frame normals, with a ridge towards the best ambient + one distant light (a frontal
  photo sees too narrow a cone of normals to tell the constant term from the depth term; the free
  fit invents negative light behind the head, see :func:`fit_sh`). Visible: front-facing (the normal
  within ``acos(MIN_FACING)`` of the view ray) and nearest in a z-buffer splatted from the projected
  vertices. Skin: outside the eyes, brows, lips
  and nostrils, inside the jaw contour and a forehead band (polygons of the 68 landmarks). **Albedo
  is constant**: the ratio of two shadings under one light does not depend on the albedo, so the
  albedo only biases the light estimate, where the smoothed luminance as albedo would cancel the very
  shading that is fitted. Brows, lips and nostrils are left out for that reason; the robust weights
  take care of moles, beard and stray hair. Grey, not per channel: the ratio multiplies all three.

Per row: the expressive mesh (identity, the source's expression plus the row's AUs through
:meth:`FaceModel.expression_weights_for_aus`, whose map covers the AUs the ICT table lacks through
:data:`generators.facemodel.EXTRA_AUS`)
and the source's mesh, both at the row's head pose (the ratio is the expression's change of shading
only; a head turn is not relit); per vertex the ratio ``(shading(expressive normal) + u) /
(shading(source normal) + u)``, where ``u`` is the light fit's robust residual scale (the light the
fit does not explain, added to both, so two dark grazing shadings do not make a wild ratio),
clipped to :data:`RATIO_RANGE`, faded to 1 over :data:`FEATHER_MM` of the mesh border (the outline,
the mouth opening and the eye openings are the face part's borders) and towards the silhouette
(:data:`MIN_FACING`, :data:`SILHOUETTE_FADE`). The vertices are projected into the crop (the warp's crop transform), put on
the warp's face by a similarity of their 68 landmarks onto the rendered landmarks plus the landmark
residuals interpolated with Gaussian weights (so a fold lands where the warp moved the feature, not
where the ICT shape would), z-buffered (depth splatted with ``np.minimum.at``, eroded one cell so
sparse occluders cover their neighbours), splatted and filled by normalized convolution at a cell of
``1 / CELLS_PER_IOD`` of the inter-ocular distance, faded out where no vertex lands, inside the
rendered eye and inner-mouth polygons and outside the rendered face outline (:func:`face_outline`:
ears, neck and hair are the warp's, moved rigidly), and upsampled. The crop is multiplied by ``ratio ** (1 / 2.2)``
(the ratio scales linear light; the crop is sRGB-ish), kept uint8 RGB. A row whose AUs change no
shape (no AU, or only AUs without a shape) is the warp's crop unchanged.

The warp's own geometry is unchanged (landmarks, its inner-point displacements for AU6 / AU17, mouth
interior, eyelids, background); only its semantic skin gain is switched off (:class:`GeometryOnly`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import scipy.sparse

from fewshot.landmarks import (INNER_LIPS, LEFT_BROW, LEFT_EYE, OUTER_LIPS, RIGHT_BROW, RIGHT_EYE, apply_affine, interocular,
                               similarity_transform)
from fewshot.pose import camera_to_pixels

from .appearance import AppearanceModel
from .facemodel import IDENTITY_VIEWS, FaceModel, fit_profile_views, load_face_model  # noqa: F401  (IDENTITY_VIEWS: its old home)
from .grid import Grid, as_grid
from .render import GENERATORS, GeneratedBatch, Generator, WarpGenerator
from .warp import rotation_of

GAMMA = 2.2  # sRGB as a power law: linear light = (value / 255) ** GAMMA
RATIO_RANGE = (0.6, 1.4)  # a fold or bulge under one light: a shadow to 60%, a highlight to 140%
FEATHER_MM = 8.0  # the ratio fades to 1 over this distance (mm, on the mesh) from the mesh border
CELLS_PER_IOD = 24  # splat cell: 1/24 of the inter-ocular distance (~2.6 mm; the mesh's edges are ~2.8 mm)
FILL_SIGMA_CELLS = 1.0  # normalized-convolution Gaussian (cells)
DEPTH_TOLERANCE_MM = 4.0  # a vertex within this of the z-buffer's nearest depth is visible
MIN_FACING = 0.2  # cosine between normal and view ray below which a vertex counts as a silhouette
SILHOUETTE_FADE = 0.3  # ... and the ratio reaches its full strength at MIN_FACING + this
OUTLINE_FADE_CELLS = 1.5  # the ratio fades out across the rendered face outline over this (cells)
FOREHEAD_IOD = 0.6  # the outline's forehead: this far above the brows (inter-ocular distances)
RESIDUAL_SIGMA_IOD = 0.3  # width of the landmark-residual interpolation (inter-ocular distances)
# Light fit: ridge per SH band towards the best ambient + one-light fit (see fit_sh), per sample; the
# basis values are O(1), so 0.05 lets a band leave the one-light prior where ~5% of a sample's
# squared residual per coefficient says so.
SH_RIDGE = (0.05, 0.05, 0.05)
HUBER_K = 1.345  # Huber threshold (robust standard deviations)


# -- spherical harmonics ---------------------------------------------------------------------------

_BAND = np.array([0, 1, 1, 1, 2, 2, 2, 2, 2])
_BAND_FACTOR = np.array([np.pi, 2 * np.pi / 3, np.pi / 4])[_BAND]  # Lambertian irradiance (Ramamoorthi-Hanrahan)


def sh_basis(normals: np.ndarray) -> np.ndarray:
    """(n, 9) irradiance basis of unit normals (n, 3): real SH up to order 2 times the Lambertian band
    factors, so ``basis @ coefficients`` is the shading of a unit-albedo surface."""
    x, y, z = normals[:, 0], normals[:, 1], normals[:, 2]
    return np.stack([
        np.full_like(x, 0.282095), 0.488603 * y, 0.488603 * z, 0.488603 * x,
        1.092548 * x * y, 1.092548 * y * z, 0.315392 * (3 * z * z - 1), 1.092548 * x * z, 0.546274 * (x * x - y * y),
    ], axis=1) * _BAND_FACTOR


def _irradiance(normals: np.ndarray, light: np.ndarray) -> np.ndarray:
    """(n,) ``sh_basis(normals) @ light`` as a quadratic in the normals (n, 3), without the (n, 9) basis."""
    k = np.asarray(light, float) * _BAND_FACTOR
    x, y, z = normals[:, 0], normals[:, 1], normals[:, 2]
    return ((0.282095 * k[0] - 0.315392 * k[6]) + x * (0.488603 * k[3] + 1.092548 * k[4] * y + 1.092548 * k[7] * z + 0.546274 * k[8] * x)
            + y * (0.488603 * k[1] + 1.092548 * k[5] * z - 0.546274 * k[8] * y) + z * (0.488603 * k[2] + 3 * 0.315392 * k[6] * z))


def _triangle_normals(x: np.ndarray, y: np.ndarray, z: np.ndarray, triangles_t: np.ndarray) -> np.ndarray:
    """(F, 3) ``(b - a) x (c - a)`` per triangle (length 2 x area) of vertex coordinates x, y, z (V,)
    and triangles as rows a, b, c (3, F)."""
    a, b, c = triangles_t
    ax, ay, az = x[a], y[a], z[a]
    ux, uy, uz = x[b] - ax, y[b] - ay, z[b] - az
    wx, wy, wz = x[c] - ax, y[c] - ay, z[c] - az
    fn = np.empty((len(a), 3))
    fn[:, 0] = uy * wz - uz * wy
    fn[:, 1] = uz * wx - ux * wz
    fn[:, 2] = ux * wy - uy * wx
    return fn


def _unit_rows(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.sqrt(np.einsum("ij,ij->i", v, v)), 1e-12)[:, None]


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(V, 3) unit area-weighted vertex normals of a mesh (vertices (V, 3), triangles (F, 3) with
    ``(b - a) x (c - a)`` pointing out of the surface)."""
    tt = np.ascontiguousarray(np.asarray(triangles).T, dtype=np.intp)
    fn = _triangle_normals(*np.ascontiguousarray(np.asarray(vertices, float).T), tt)  # length = 2 x area: area weighting
    n = len(vertices)
    idx = tt.ravel()
    out = np.empty((n, 3))
    for k in range(3):
        out[:, k] = np.bincount(idx, np.tile(fn[:, k], 3), minlength=n)
    return _unit_rows(out)


def _light_directions(step_deg: float = 3.0) -> np.ndarray:
    """(n, 3) unit directions towards the light over the camera-facing hemisphere (z < 0: towards
    the camera) and a little beyond it (up to 100 degrees from the view axis)."""
    out = [np.array([0.0, 0.0, -1.0])]
    for th in np.radians(np.arange(step_deg, 100.0 + 1e-9, step_deg)):
        k = max(int(round(2 * np.pi * np.sin(th) / np.radians(step_deg))), 6)
        ph = np.arange(k) * 2 * np.pi / k
        out.append(np.c_[np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.full(k, -np.cos(th))])
    return np.vstack(out)


def one_light_sh(normals: np.ndarray, values: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """(9,) SH radiance coefficients of the best non-negative ambient + one distant light (weighted
    least squares of ``values`` on the irradiance of normals (n, 3)), the direction searched on a
    3-degree grid of :func:`_light_directions`. A light that exists: irradiance >= 0 everywhere."""
    w = np.ones(len(values)) if weights is None else weights
    B = sh_basis(normals)
    dirs = _light_directions()
    D = (sh_basis(dirs) / _BAND_FACTOR).T  # (9, m): radiance coefficients of a unit delta light
    ambient = np.zeros(9)
    ambient[0] = 0.282095 * 4 * np.pi  # unit radiance from every direction (irradiance pi)
    a = B @ ambient  # (n,)
    d = B @ D  # (n, m)
    # 2x2 weighted normal equations of [a, d_j] per direction j
    saa, sad, sdd = (w * a * a).sum(), (w * a) @ d, w @ (d * d)
    say, sdy = (w * a * values).sum(), (w * values) @ d
    det = saa * sdd - sad * sad
    amb = np.where(det > 1e-12, (sdd * say - sad * sdy) / np.maximum(det, 1e-12), 0.0)
    inten = np.where(det > 1e-12, (saa * sdy - sad * say) / np.maximum(det, 1e-12), 0.0)
    # where the pair leaves the non-negative quadrant, the best light on its edge (no ambient)
    edge = (amb < 0) | (inten < 0)
    inten = np.where(edge, np.maximum(sdy / np.maximum(sdd, 1e-12), 0.0), inten)
    amb = np.where(edge, 0.0, amb)
    cost = (w * values * values).sum() - 2 * (amb * say + inten * sdy) + amb * amb * saa + 2 * amb * inten * sad + inten * inten * sdd
    j = int(np.argmin(cost))
    return amb[j] * ambient + inten[j] * D[:, j]


def fit_sh(normals: np.ndarray, values: np.ndarray, ridge: tuple[float, float, float] = SH_RIDGE,
           iterations: int = 5) -> tuple[np.ndarray, float]:
    """(9,) irradiance coefficients (radiance SH; :func:`sh_basis` gives the shading) and the robust
    residual scale (linear luminance, what the light does not explain): least squares
    of ``values`` (n,) (linear luminance, constant albedo) on the basis of ``normals`` (n, 3), with a
    ridge per band towards :func:`one_light_sh` and Huber reweighting.

    A frontal photo sees normals within ~70 degrees of the view axis only, where the constant term and
    the depth term are nearly collinear: the free fit trades them and invents light from behind. The
    ridge pulls every coefficient the data leave loose towards a light that exists (ambient + one
    distant light), and keeps the nine terms where the data ask for them."""
    B = sh_basis(normals)
    w = np.ones(len(values))
    lam = np.asarray(ridge, float)[_BAND] * len(values)
    c = np.zeros(9)
    for _ in range(iterations):
        prior = one_light_sh(normals, values, w)
        Bw = B * w[:, None]
        c = np.linalg.solve(B.T @ Bw + np.diag(lam), Bw.T @ values + lam * prior)
        r = values - B @ c
        s = 1.4826 * float(np.median(np.abs(r - np.median(r)))) + 1e-9
        a = np.abs(r) / (HUBER_K * s)
        w = np.where(a <= 1, 1.0, 1.0 / np.maximum(a, 1e-12))
    r = values - B @ c
    return c, 1.4826 * float(np.median(np.abs(r - np.median(r))))


# -- splatting -------------------------------------------------------------------------------------

def zbuffer_visible(cells: np.ndarray, depth: np.ndarray, grid: tuple[int, int], tolerance: float = DEPTH_TOLERANCE_MM) -> np.ndarray:
    """(n,) bool: points (integer cells (n, 2) x, y inside ``grid`` (h, w)) within ``tolerance`` of the
    nearest depth splatted into their cell or a neighbouring one (the z-buffer is eroded by one cell
    so that a sparse occluder still covers the cells between its points)."""
    h, w = grid
    flat = cells[:, 1] * w + cells[:, 0]
    zbuf = np.full(h * w, np.inf, np.float32)
    np.minimum.at(zbuf, flat, depth.astype(np.float32))
    zbuf = cv2.erode(zbuf.reshape(h, w), np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=np.inf)
    return depth <= zbuf.ravel()[flat] + tolerance


def splat_fill(cells: np.ndarray, values: np.ndarray, weights: np.ndarray, grid: tuple[int, int],
               sigma: float = FILL_SIGMA_CELLS) -> tuple[np.ndarray, np.ndarray]:
    """Normalized convolution of weighted point values on a (h, w) grid: (filled values, coverage).
    ``blur(value * weight) / blur(weight)``; coverage is ``blur(weight)`` over the blur of one point per
    cell (about 1 inside a densely sampled area, 0 far from any point). Values (n,) fill (h, w); values
    (n, C) fill (h, w, C) in one blur."""
    h, w = grid
    v = np.asarray(values, float)
    filled, den = _fill(cells[:, 1] * w + cells[:, 0], v.reshape(len(v), -1), weights, grid, sigma)
    return (filled[..., 0] if v.ndim == 1 else filled), den


def _fill(flat: np.ndarray, values: np.ndarray, weights: np.ndarray | None, grid: tuple[int, int],
          sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`splat_fill` of flat cell indices (n,) and values (n, C) (weights None: ones): ((h, w, C), (h, w))."""
    h, w = grid
    C = values.shape[1]
    acc = np.empty((h, w, C + 1), np.float32)  # C weighted sums and the weight: blurred together
    for k in range(C):
        acc[..., k] = np.bincount(flat, values[:, k] if weights is None else values[:, k] * weights, minlength=h * w).reshape(h, w)
    acc[..., C] = np.bincount(flat, weights, minlength=h * w).reshape(h, w)
    acc = cv2.GaussianBlur(acc, (0, 0), sigma).reshape(h, w, C + 1)
    den = np.ascontiguousarray(acc[..., C])
    return acc[..., :C] / np.maximum(den, 1e-6)[..., None], den


def _polygon_mask(grid: tuple[int, int], polygons: list[np.ndarray]) -> np.ndarray:
    m = np.zeros(grid, np.uint8)
    cv2.fillPoly(m, [np.round(p * 16).astype(np.int32) for p in polygons], 1, cv2.LINE_AA, shift=4)
    return m.astype(bool)


def face_outline(landmarks: np.ndarray) -> np.ndarray:
    """(27, 2) polygon of a face (68 landmarks): the jaw contour, closed over the forehead
    ``FOREHEAD_IOD`` above the brows. The warp renders ears, neck and hair from the photo, moved
    rigidly or by the outline extras: the ratio stays inside the face the landmarks describe."""
    lm = np.asarray(landmarks, float)
    up = lm[27] - lm[8]
    up /= max(np.linalg.norm(up), 1e-6)
    return np.vstack([lm[0:17], (lm[17:27] + FOREHEAD_IOD * float(interocular(lm)) * up)[::-1]])


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def linear_luminance(rgb: np.ndarray) -> np.ndarray:
    """(H, W) float32 linear luminance in 0..1 of a uint8 RGB image (BT.601 grey, sRGB as a power)."""
    lut = ((np.arange(256) / 255.0) ** GAMMA).astype(np.float32)
    return lut[cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)]


def skin_mask(landmarks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: skin of a face (68 landmarks, px) for the light fit: inside the jaw contour and a
    forehead band of 0.35 inter-ocular distances above the brows, outside the eyes, brows, lips and
    nostrils (each grown by a margin)."""
    lm = np.asarray(landmarks, float)
    iod = float(interocular(lm))
    up = lm[27] - lm[8]
    up /= max(np.linalg.norm(up), 1e-6)
    brows = lm[17:27]
    face = np.vstack([lm[0:17], (brows + 0.35 * iod * up)[::-1]])
    keep = _polygon_mask(shape, [face])
    cut = np.zeros(shape, np.uint8)
    m = max(int(round(0.06 * iod)), 1)
    for ring in (lm[RIGHT_EYE], lm[LEFT_EYE], lm[OUTER_LIPS]):
        cv2.fillPoly(cut, [np.round(ring).astype(np.int32)], 1)
    for brow in (lm[RIGHT_BROW], lm[LEFT_BROW]):
        cv2.polylines(cut, [np.round(brow).astype(np.int32)], False, 1, max(int(round(0.12 * iod)), 1))
    nostrils = np.vstack([lm[31:36], lm[[35, 33, 31]] + 0.08 * iod * (-up)])
    cv2.fillPoly(cut, [np.round(cv2.convexHull(nostrils.astype(np.float32))[:, 0]).astype(np.int32)], 1)
    cut = cv2.dilate(cut, np.ones((2 * m + 1, 2 * m + 1), np.uint8))
    return keep & ~cut.astype(bool)


def _sample(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    mx = points[:, 0].astype(np.float32).reshape(-1, 1)
    my = points[:, 1].astype(np.float32).reshape(-1, 1)
    return cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)[:, 0]


# -- per person --------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class FaceShading:
    """One person's lit face model (see the module doc), ready to compute per-row shading ratios.

    vertices: (V, 3) mm, head frame: the fitted identity with the source's expression (face part);
    expression_basis: (E, V, 3) mm, the model's shapes on those vertices; base_expression: (E,);
    normals: (V, 3) of ``vertices``; feather: (V,) 0 at the mesh border .. 1 beyond ``FEATHER_MM``;
    light: (9,) :func:`sh_basis` coefficients in the camera frame (linear luminance);
    to_profile: (3, 3) rotation from the model's head frame to the profile's (row poses are the
    profile's); translation: (3,) mm; camera: 3x3; landmark_index: (68,) into ``vertices``;
    residual_weights: (V, 68) rows summing to 1; unexplained: the light fit's robust residual scale
    (linear luminance), added to both shadings of a ratio; fit_error_px: mean landmark reprojection error;
    light_samples: vertices the light was fitted on; source_px: (V, 2) where each vertex lies in the
    source photo (px; the fitted mesh at the photo's pose, put on the detected landmarks as rows are on
    the rendered ones); source_visible: (V,) whether the photo shows it (facing, nearest in a z-buffer);
    neutral_expression: (E,) where rows start from when the profile was neutralized (None: the source's).
    """

    model: FaceModel
    vertices: np.ndarray
    expression_basis: np.ndarray
    base_expression: np.ndarray
    triangles: np.ndarray
    normals: np.ndarray
    feather: np.ndarray
    light: np.ndarray
    to_profile: np.ndarray
    translation: np.ndarray
    camera: np.ndarray
    landmark_index: np.ndarray
    residual_weights: np.ndarray
    unexplained: float
    fit_error_px: float
    light_samples: int
    source_px: np.ndarray | None = None
    source_visible: np.ndarray | None = None
    identity: np.ndarray | None = None
    neutral_expression: np.ndarray | None = None

    def expression_weights(self, aus: dict[str, float]) -> np.ndarray:
        """(E,) the source's expression plus the row's AUs (FACS 0..5), each shape within 0..1.
        The shapes are :attr:`FaceModel.au_shapes` (the README's table plus
        :data:`generators.facemodel.EXTRA_AUS`); AUs without shapes are ignored. A neutralized profile's
        rows start from :attr:`neutral_expression` (the source's expression without the AUs the profile
        took out, :func:`generators.neutral.neutralize_profile`), so a row's AUs are absolute."""
        model = self.model
        w = model.expression_weights_for_aus({au: v for au, v in aus.items() if au in model.au_shapes})
        start = self.base_expression if self.neutral_expression is None else self.neutral_expression
        return np.clip(start + w, 0.0, 1.0)

    @cached_property
    def _per_row(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Any, np.ndarray]:
        """What every row reuses (filled on first use): ``vertices`` and ``normals`` as (3, V) rows, the
        expression basis as (E, 3 V) float32 (x, y, z rows per shape), the triangles as (3, F) intp rows, the
        (V, F) sparse vertex-triangle incidence (sums the triangle normals per vertex) and
        ``residual_weights`` in float32 (the landmark residuals are a few px: float32 keeps 1e-6 px
        and halves the largest read of a row)."""
        tt = np.ascontiguousarray(self.triangles.T, dtype=np.intp)  # intp: no index conversion per gather
        n_v, n_f = len(self.vertices), len(self.triangles)
        incidence = scipy.sparse.csr_matrix((np.ones(3 * n_f), (tt.ravel(), np.tile(np.arange(n_f), 3))), shape=(n_v, n_f))
        basis = np.ascontiguousarray(self.expression_basis.transpose(0, 2, 1), dtype=np.float32).reshape(len(self.expression_basis), -1)
        return (np.ascontiguousarray(self.vertices.T, dtype=np.float64), np.ascontiguousarray(self.normals.T, dtype=np.float64),
                basis, tt, incidence, self.residual_weights.astype(np.float32))

    def _deformed(self, dw: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        """Vertices and unit normals as (3, V) rows of the mesh moved by expression weights ``dw``
        (E,) relative to the source's, and whether any shape moved (else the source's own)."""
        v0, n0, basis, tt, incidence, _ = self._per_row
        active = np.flatnonzero(np.abs(dw) > 1e-6)
        if not len(active):
            return v0, n0, False
        vt = v0 + (dw[active].astype(np.float32) @ basis[active]).reshape(3, -1)
        return vt, _unit_rows(incidence @ _triangle_normals(*vt, tt)).T, True

    def row_geometry(self, aus: dict[str, float], pose_deg: np.ndarray, to_crop: np.ndarray,
                     crop_landmarks: np.ndarray, reference_aus: dict[str, float] | None = None) -> "RowGeometry":
        """The row's expressive mesh in its output image: ``pose_deg`` (yaw, pitch, roll) degrees;
        ``to_crop`` 2x3 from source-image px to the output's px; ``crop_landmarks`` (68, 2) the rendered
        landmarks there. Vertices are projected through the profile's camera, mapped by ``to_crop`` and put
        on the rendered landmarks (a similarity of their 68 landmark vertices plus the landmark residuals
        interpolated with :attr:`residual_weights`). ``reference_aus``: AUs whose shading the ratio's
        reference carries too (``neutral_normals``: the source's expression with these AUs' shapes at
        the row's weights; e.g. AUs whose skin change is drawn otherwise, so the ratio leaves them out),
        default none (the keys matter, not the values)."""
        weights = self._per_row[5]
        target = self.expression_weights(aus)
        dw = target - self.base_expression
        vt, nt, changed = self._deformed(dw)  # (3, V) rows: x, y, z
        n_ref = self._per_row[1]
        if reference_aus:  # the source's expression with the reference AUs' shapes as the row has them
            model = self.model
            ref = self.base_expression.copy()
            shapes = [model.expression_names.index(n) for au in reference_aus if au in model.au_shapes for n, _ in model.au_shapes[au]]
            ref[shapes] = target[shapes]
            n_ref = self._deformed(ref - self.base_expression)[1]
        R = rotation_of(*pose_deg) @ self.to_profile
        cam = R @ vt + self.translation[:, None]
        n_e = R @ nt
        facing = -(n_e * cam).sum(0) / np.sqrt((cam * cam).sum(0))  # cosine of normal and view ray
        K = self.camera
        src = cam[:2] / cam[2] * np.array([[K[0, 0]], [K[1, 1]]]) + K[:2, 2:3]  # camera_to_pixels, (2, V)
        lm = apply_affine(to_crop, src[:, self.landmark_index].T)
        S = similarity_transform(lm, crop_landmarks)
        residual = crop_landmarks - apply_affine(S, lm)
        to_output = apply_affine_compose(S, to_crop)
        px = (to_output[:, :2] @ src + to_output[:, 2:]).T + _spread(weights, residual)
        return RowGeometry(px=px, depth=cam[2], facing=facing, normals=n_e.T, neutral_normals=(R @ n_ref).T,
                           changed=changed, cell=float(interocular(crop_landmarks)) / CELLS_PER_IOD,
                           expression_delta=dw, rotation=R, to_output=to_output, residual=residual)

    def ratio(self, aus: dict[str, float], pose_deg: np.ndarray, to_crop: np.ndarray, crop_landmarks: np.ndarray,
              out_shape: tuple[int, int]) -> np.ndarray | None:
        """(h, w) float32 shading ratio of one row in its output image, or None where the row changes
        no shape (ratio 1 everywhere). Arguments as :meth:`row_geometry`."""
        return self.ratio_of(self.row_geometry(aus, pose_deg, to_crop, crop_landmarks), crop_landmarks, out_shape)

    def ratio_of(self, g: "RowGeometry", crop_landmarks: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray | None:
        """:meth:`ratio` of a row whose :meth:`row_geometry` the caller has already."""
        if not g.changed:
            return None
        # what the fitted light does not explain (interreflection, subsurface, model error) is light
        # too: added to both shadings, it keeps a ratio of two dark grazing shadings from exploding
        s_e = np.maximum(_irradiance(g.normals, self.light), 0.0) + self.unexplained
        s_0 = np.maximum(_irradiance(g.neutral_normals, self.light), 0.0) + self.unexplained
        ratio = np.clip(s_e / np.maximum(s_0, 1e-6), *RATIO_RANGE)
        # towards the silhouette the ratio fades to 1: the warp's outline is the detector's contour,
        # not the model's, and a grazing surface's projection is the least certain
        delta = (ratio - 1.0) * self.feather * _smoothstep((g.facing - MIN_FACING) / SILHOUETTE_FADE)
        up = splat_field(g, delta[:, None], crop_landmarks, out_shape)
        return None if up is None else np.clip(1.0 + up[..., 0], *RATIO_RANGE).astype(np.float32)


@dataclass(frozen=True, eq=False)
class RowGeometry:
    """One row's expressive face mesh in its output image (:meth:`FaceShading.row_geometry`).

    px: (V, 2) output px; depth: (V,) mm from the camera; facing: (V,) cosine of normal and view ray;
    normals / neutral_normals: (V, 3) camera-frame normals of the expressive / the source's mesh at
    the row's pose; changed: whether the row's AUs move any shape; cell: the splat cell (output px);
    expression_delta: (E,) the row's expression weights minus the source's; rotation: (3, 3) model head
    frame -> camera; to_output: 2x3 source-image px -> output px (``to_crop`` then the alignment on the
    rendered landmarks); residual: (68, 2) what that alignment leaves at the landmarks.
    """

    px: np.ndarray
    depth: np.ndarray
    facing: np.ndarray
    normals: np.ndarray
    neutral_normals: np.ndarray
    changed: bool
    cell: float
    expression_delta: np.ndarray
    rotation: np.ndarray
    to_output: np.ndarray
    residual: np.ndarray

    def place(self, camera: np.ndarray, translation: np.ndarray, vertices: np.ndarray, residual_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Other vertices of the model (head frame, (n, 3) mm, already deformed by the row's
        expression) in the output image as the face's are: (px (n, 2), camera-frame positions (n, 3) mm).
        ``residual_weights`` (n, 68) spread the landmark residuals (float32 ones in float32)."""
        cam = vertices @ self.rotation.T + translation
        return apply_affine(self.to_output, camera_to_pixels(cam, camera)) + _spread(residual_weights, self.residual), cam


def _spread(weights: np.ndarray, residual: np.ndarray, block: int = 1024) -> np.ndarray:
    """``weights @ residual`` ((n, 68) @ (68, 2); float32 weights: in float32, without an upcast copy)
    in blocks of rows: each block's product is small enough that OpenBLAS runs it on the calling
    thread (one (9.4k, 68) product goes to its thread pool, which costs milliseconds per row when the
    cores are busy)."""
    r = np.asarray(residual).astype(np.result_type(weights.dtype, np.float32))
    out = np.empty((len(weights), r.shape[1]), r.dtype)
    for i in range(0, len(weights), block):
        np.matmul(weights[i:i + block], r, out=out[i:i + block])
    return out


def apply_affine_compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The 2x3 affine ``a`` after ``b``."""
    return (np.vstack([a, [0, 0, 1]]) @ np.vstack([b, [0, 0, 1]]))[:2]


def splat_field(g: RowGeometry, values: np.ndarray, crop_landmarks: np.ndarray, out_shape: tuple[int, int],
                keep: np.ndarray | None = None) -> np.ndarray | None:
    """(h, w, C) float32: per-vertex values (V, C) of a row's mesh spread over its output image, 0
    where no visible vertex lands. Visible: facing the camera (:data:`MIN_FACING`), inside the image,
    nearest in a z-buffer of ``g.cell`` cells (and ``keep`` where given). The splat is filled by
    normalized convolution, faded out where no vertex lands, inside the rendered eye and inner-mouth
    polygons and outside the rendered face outline (:func:`face_outline`), and upsampled bilinearly.
    None when no vertex is visible. The visible vertices and the openings' fade are kept on ``g`` for
    the row's next field."""
    h, w = out_shape
    cell = g.cell
    grid, idx, flat = _visible_cells(g, (h, w))
    if keep is not None:
        k = keep[idx]
        idx, flat = idx[k], flat[k]
    if not len(idx):
        return None
    filled, den = _fill(flat, np.asarray(values, float)[idx], None, grid, FILL_SIGMA_CELLS)
    # fade out where no vertex lands (beyond the mesh, holes) and inside the rendered openings
    coverage = _smoothstep(den / (0.5 * _point_blur(FILL_SIGMA_CELLS)))
    openings, outline = _openings_fade(g, crop_landmarks, grid)
    small = filled * (coverage * openings * outline)[..., None]
    # cell (i, j) is centred on output pixel (j * cell, i * cell)
    A = np.array([[1.0 / cell, 0, 0], [0, 1.0 / cell, 0]], np.float32)
    up = cv2.warpAffine(small, A, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                        borderValue=0)
    return up.reshape(h, w, -1).astype(np.float32, copy=False)


def _row_cache(g: RowGeometry) -> dict:
    # RowGeometry is frozen: its cache lives in the instance dict, beside the fields (gone with the row)
    return g.__dict__.setdefault("_splat_cache", {})


def _visible_cells(g: RowGeometry, out_shape: tuple[int, int]) -> tuple[tuple[int, int], np.ndarray, np.ndarray]:
    """:func:`splat_field`'s grid (gh, gw) of ``g.cell`` cells over ``out_shape``, the vertices (n,) that
    face the camera, land inside it and pass its z-buffer, and their flat cells (n,); once per row."""
    cache = _row_cache(g)
    key = ("cells", out_shape)
    if key not in cache:
        h, w = out_shape
        cell = g.cell
        grid = (int(np.ceil(h / cell)) + 1, int(np.ceil(w / cell)) + 1)
        c = np.floor(g.px / cell + 0.5).astype(np.int64)
        inside = (c[:, 0] >= 0) & (c[:, 0] < grid[1]) & (c[:, 1] >= 0) & (c[:, 1] < grid[0])
        idx = np.flatnonzero(inside & (g.facing > MIN_FACING))
        c = c[idx]
        visible = zbuffer_visible(c, g.depth[idx], grid)
        c = c[visible]
        cache[key] = (grid, idx[visible], c[:, 1] * grid[1] + c[:, 0])
    return cache[key]


def _openings_fade(g: RowGeometry, crop_landmarks: np.ndarray, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(gh, gw) float32 pair on :func:`splat_field`'s grid: 0 inside the rendered eye and inner-mouth
    polygons (blurred, doubled), and the blurred face outline; once per row and landmarks."""
    cache = _row_cache(g)
    key = ("fade", grid, np.asarray(crop_landmarks, float).tobytes())
    if key not in cache:
        q = crop_landmarks / g.cell
        holes = cv2.GaussianBlur(_polygon_mask(grid, [q[RIGHT_EYE], q[LEFT_EYE], q[INNER_LIPS]]).astype(np.float32), (0, 0),
                                 FILL_SIGMA_CELLS)
        outline = cv2.GaussianBlur(_polygon_mask(grid, [face_outline(q)]).astype(np.float32), (0, 0), OUTLINE_FADE_CELLS)
        cache[key] = (1.0 - np.clip(2.0 * holes, 0.0, 1.0), outline)
    return cache[key]


@lru_cache(maxsize=None)
def _point_blur(sigma: float) -> float:
    """The peak of one unit point blurred with ``sigma`` (cells): a cell's coverage when only it holds a point."""
    return float(cv2.GaussianBlur(np.pad(np.ones((1, 1), np.float32), 8), (0, 0), sigma)[8, 8])


def residual_weights(points: np.ndarray, landmarks: np.ndarray, iod: float) -> np.ndarray:
    """(n, 68) float64 weights spreading landmark residuals onto points (n, 2): Gaussian in the
    distance to each of the 68 landmarks (same units; width :data:`RESIDUAL_SIGMA_IOD` x ``iod``), rows
    summing to 1. Float64: they multiply float64 residuals every row."""
    d2 = ((points[:, None, :] - landmarks[None]) ** 2).sum(-1)
    g = np.exp(-d2 / (2 * (RESIDUAL_SIGMA_IOD * iod) ** 2)) + 1e-12
    return g / g.sum(1, keepdims=True)


def _border_distance(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(V,) Euclidean distance (mm) of each vertex to the nearest vertex of the mesh's border (edges of
    one triangle only)."""
    e = np.sort(np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]]), axis=1)
    edges, count = np.unique(e, axis=0, return_counts=True)
    border = vertices[np.unique(edges[count == 1])]
    out = np.empty(len(vertices))
    for i in range(0, len(vertices), 2048):
        d = ((vertices[i:i + 2048, None, :] - border[None]) ** 2).sum(-1)
        out[i:i + 2048] = np.sqrt(d.min(1))
    return out


def fit_face_shading(profile: Any, model: FaceModel | None = None) -> FaceShading:
    """The lit face model of a profile (``.image`` uint8 RGB, ``.landmarks`` (68, 2) px, ``.pose``,
    ``.camera``, optional ``.views``): ICT fit (the identity averaged over the reference and up to
    :data:`IDENTITY_VIEWS` of the profile's other views, :func:`generators.facemodel.fit_profile_views`), light
    fit, feathering and residual weights (module doc)."""
    model = load_face_model() if model is None else model
    image = np.asarray(profile.image)
    lm = np.asarray(profile.landmarks, float)
    size = (image.shape[1], image.shape[0])
    K = np.asarray(profile.camera, float)
    fit = fit_profile_views(profile, model)
    taken_out = tuple(getattr(profile, "source_expression", None) or ())
    face = model.parts["face"]
    tri = np.ascontiguousarray(model.triangles[face.triangles])
    vertices = model.shape(fit.identity, fit.expression)[face.vertices].astype(np.float64)
    basis = np.ascontiguousarray(model.expression_basis[:, face.vertices])
    normals = vertex_normals(vertices, tri)

    # light: visible skin vertices at the fitted pose against the photo's smoothed linear luminance
    R, t = fit.pose.matrix, fit.pose.translation
    cam = vertices @ R.T + t
    n_cam = normals @ R.T
    src_px = camera_to_pixels(cam, K)
    iod = float(interocular(lm))
    cell = iod / CELLS_PER_IOD
    grid = (int(np.ceil(size[1] / cell)) + 1, int(np.ceil(size[0] / cell)) + 1)
    c = np.floor(src_px / cell + 0.5).astype(np.int64)
    inside = (c[:, 0] >= 0) & (c[:, 0] < grid[1]) & (c[:, 1] >= 0) & (c[:, 1] < grid[0])
    facing = (n_cam * cam).sum(1) < -MIN_FACING * np.linalg.norm(cam, axis=1)
    cand = np.flatnonzero(inside & facing)
    seen = cand[zbuffer_visible(c[cand], cam[cand, 2], grid)]
    px = np.round(src_px[seen]).astype(int)
    mask = skin_mask(lm, (size[1], size[0]))
    on_skin = (px[:, 0] >= 0) & (px[:, 0] < size[0]) & (px[:, 1] >= 0) & (px[:, 1] < size[1])
    on_skin[on_skin] = mask[px[on_skin, 1], px[on_skin, 0]]
    vis = seen[on_skin]
    lum = cv2.GaussianBlur(linear_luminance(image), (0, 0), max(0.02 * iod, 0.5))
    light, unexplained = fit_sh(n_cam[vis], _sample(lum, src_px[vis]).astype(np.float64))

    feather = _smoothstep(_border_distance(vertices, tri) / FEATHER_MM)
    # residual interpolation weights: Gaussian in the source projection
    lm_px = src_px[model.landmark_index]
    weights = residual_weights(src_px, lm_px, iod)
    source_visible = np.zeros(len(vertices), bool)
    source_visible[seen] = True
    return FaceShading(
        model=model, vertices=vertices, expression_basis=basis, base_expression=np.asarray(fit.expression, float),
        triangles=tri, normals=normals, feather=feather, light=light,
        to_profile=np.asarray(profile.pose.matrix).T @ R, translation=np.asarray(t, float), camera=K,
        landmark_index=np.asarray(model.landmark_index), residual_weights=weights,
        unexplained=unexplained, fit_error_px=fit.mean_error_px, light_samples=len(vis),
        source_px=src_px + weights @ (lm - lm_px), source_visible=source_visible, identity=np.asarray(fit.identity, float),
        neutral_expression=model.without_aus(fit.expression, taken_out) if taken_out else None,
    )


# -- the generator -----------------------------------------------------------------------------------

class GeometryOnly(AppearanceModel):
    """The warp's appearance model without its skin: the inner-point displacements (AU6 cheeks, AU17
    chin boss) stay, the procedural / learned gain fields are off (the shading ratio replaces them)."""

    def gain(self, sem: dict[str, float], seed: int) -> None:
        return None

    def how(self, au: str) -> str:
        return "ict-shading"


def apply_ratio(image: np.ndarray, ratio: np.ndarray) -> np.ndarray:
    """uint8 RGB (h, w, 3) times a linear-light ratio (h, w): the sRGB-ish values scale by ratio ** (1/2.2)."""
    g = cv2.pow(np.asarray(ratio, np.float32), 1.0 / GAMMA)
    return cv2.multiply(image, cv2.merge([g, g, g]), dtype=cv2.CV_8U)  # rounded and saturated


@GENERATORS.register("warp+shading", "the warp generator without painted skin, relit by the ICT face model's "
                                     "expression shading under the photo's fitted light (CPU)")
class ShadingGenerator(Generator):
    """'warp+shading': see the module doc."""

    name = "warp+shading"
    options = ("face_model",)

    def __init__(self, face_model: str | Path | None = None) -> None:
        self.model = load_face_model(face_model)
        self.warp = WarpGenerator(GeometryOnly(source="ict-shading"))
        self.warp.name = self.name
        self._cache: tuple[Any, FaceShading] | None = None

    def shading(self, profile: Any) -> FaceShading:
        """The profile's :class:`FaceShading` (the last one is kept, as the warp keeps its renderer)."""
        if self._cache is None or self._cache[0] is not profile:
            self._cache = (profile, fit_face_shading(profile, self.model))
        return self._cache[1]

    def ratios(self, profile: Any, rows: Grid | pd.DataFrame, batch: GeneratedBatch) -> list[np.ndarray | None]:
        """Per row of a rendered batch its shading ratio in the crop (None: 1 everywhere)."""
        t = as_grid(rows)
        fs = self.shading(profile)
        size = batch.images.shape[1:3]
        return [fs.ratio(t.row_aus(i), t.pose[i], batch.crop_transforms[i].astype(float), batch.landmarks[i].astype(float), size)
                for i in range(len(t))]

    def render(self, profile: Any, rows: Grid | pd.DataFrame, size: int = 256, full_frame: bool = False) -> GeneratedBatch:
        t = as_grid(rows)
        b = self.warp.render(profile, t, size, full_frame)
        fs = self.shading(profile)
        for i, ratio in enumerate(self.ratios(profile, t, b)):
            rec = b.records[i]
            rec["shading"] = {"model": "ict", "light_samples": fs.light_samples}
            if ratio is None:
                rec["shading"]["range"] = [1.0, 1.0]
                continue
            b.images[i] = apply_ratio(b.images[i], ratio)
            rec["shading"]["range"] = [round(float(ratio.min()), 3), round(float(ratio.max()), 3)]
            if b.frames is not None:
                fh, fw = b.frames.shape[1:3]
                h, w = np.asarray(profile.image).shape[:2]
                f = min(1.0, self.warp.full_frame_max_side / max(h, w))  # the warp's own full-frame scale
                Mf = np.array([[f, 0, 0], [0, f, 0]], float)
                rf = fs.ratio(t.row_aus(i), t.pose[i], Mf, t.targets[i] * f, (fh, fw))
                if rf is not None:
                    b.frames[i] = apply_ratio(b.frames[i], rf)
        return b
