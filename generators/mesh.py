"""'mesh': the person's dense ICT-FaceKit mesh moves the skin; the warp keeps the background and openings.

    from generators import generate
    batch = generate(profile, grid, size=256, generator="mesh")   # GeneratedBatch, uint8 RGB

The warp (:mod:`generators.warp`) moves the photo along 68 landmarks and a few helper points: inside
each of its triangles the skin moves affinely, so a cheek that bulges under AU6 / AU12, a brow that
bunches under AU4, a chin boss pushed up by AU17 or a nose wrinkled by AU9 move only as far as the
nearest landmarks do. Here the face model fitted to the person (:func:`generators.shading.fit_face_shading`:
ICT-FaceKit identity, the photo's own expression, pose, camera and light) gives every one of its
~9,400 face vertices two places: where it lies in the photo (``source_px``, the fitted mesh at the
photo's pose) and where the row puts it (:meth:`~generators.shading.FaceShading.row_geometry`: the
identity with the photo's expression plus the row's AU shapes, at the row's pose, put on the rendered
landmarks). Per row, where a visible vertex lands in the crop, the warp's sampling map is corrected
by the difference between the vertex's place in the photo and the place the warp would sample there;
the corrections are splatted and filled like the shading ratio (:func:`generators.shading.splat_field`:
z-buffered, faded out at the face outline, the eye and mouth openings and where no vertex lands), so
the photo's skin follows the dense 3D displacement, with the landmarks exactly where the grid puts
them (the correction is 0 at each landmark by construction: both places carry the landmark residuals).
A vertex the photo does not show (the far cheek of a turned source) gives no correction; the warp's
own map stays there. Corrections are capped at :data:`MAX_FLOW_IOD` inter-ocular distances.

**The mouth interior** is the warp's painted one (``mouth="painted"``, the default: its teeth colour is
measured on the London smiles), or (``mouth="model"``) the model's: its teeth, gums, tongue and mouth
socket (:class:`MouthInterior`),
deformed by the same expression (the lower teeth, gums and tongue follow ``jawOpen``), placed like the
face, z-buffered among themselves at cells of half the face's splat cell, coloured teeth (the warp's tooth colour, from the
whites of the person's eyes), gums and tongue (the lips' colour) and socket (the lips' colour at
:data:`SOCKET_SHADE`), each lit by the photo's fitted light at its normal relative to a frontal normal,
and composited inside the rendered inner-lip polygon with the warp's opening fade. Where no interior
vertex lands the socket's colour fills.

Then the crop is relit by the shading ratio of the same geometry (``warp+shading``); the eyelids and
the background are the warp's. The warp's hand-written inner-point
displacements and painted skin are off (:class:`MeshSkin`): the mesh moves the skin and the shading
draws its folds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from fewshot.errors import ConfigError
from fewshot.landmarks import INNER_LIPS, interocular

from .appearance import ExpressionTexture, load_texture
from .grid import Grid
from .render import GENERATORS, GeneratedBatch, Generator, PreparedSource, WarpGenerator, WarpRenderer
from .facemodel import load_face_model
from .mouth import FaceColours, inner_mouth_mask
from .shading import (GAMMA, FaceShading, GeometryOnly, RowGeometry, apply_ratio, fit_face_shading, residual_weights, sh_basis,
                      splat_field, splat_fill, vertex_normals, zbuffer_visible)
from .warp import to_prescaled

MAX_FLOW_IOD = 0.15  # a correction of the warp's map is at most this many source inter-ocular distances
SOCKET_SHADE = 0.3  # the mouth socket's albedo: the lips' colour times this (a dark red-brown cavity)
GUM_SHADE = 0.9  # gums and tongue: the lips' colour times this
INTERIOR_PARTS = ("mouth_socket", "gums_tongue", "teeth")
LONDON_TEXTURE = Path(__file__).resolve().parent / "data" / "london_smile_texture.npz"
TEXTURE_NAMES = ("london", "none")  # what resolve_texture takes besides a path


def resolve_texture(texture: "str | Path | ExpressionTexture | None") -> ExpressionTexture | None:
    """The mesh's learned expression texture: an instance as it is, ``"london"`` (the default: the
    file :data:`LONDON_TEXTURE`, learned by ``scripts/derive_london_texture.py`` on the 40 FRL London
    neutral / smiling pairs), ``"none"`` (no learned skin change), or a path to an
    :meth:`~generators.appearance.ExpressionTexture.save` file."""
    if texture is None or isinstance(texture, ExpressionTexture):
        return texture
    if str(texture) == "none":
        return None
    return load_texture(LONDON_TEXTURE if str(texture) == "london" else texture)


@dataclass(frozen=True, eq=False)
class MouthInterior:
    """The fitted person's teeth, gums, tongue and mouth socket (module doc).

    vertices: (n, 3) mm head frame, the fitted identity with the photo's expression; expression_basis:
    (E, n, 3); triangles: (F, 3) into ``vertices``; albedo: (n, 3) sRGB 0..255; residual_weights:
    (n, 68) rows summing to 1 (:func:`generators.shading.residual_weights` in the head frame's x-y
    around the landmark vertices); cavity: (3,) sRGB where no interior vertex lands.
    """

    vertices: np.ndarray
    expression_basis: np.ndarray
    triangles: np.ndarray
    albedo: np.ndarray
    residual_weights: np.ndarray
    cavity: np.ndarray

    def render(self, face: FaceShading, g: RowGeometry, img: np.ndarray, landmarks: np.ndarray, alpha: float) -> None:
        """Composite the interior into ``img`` (uint8 RGB, in place) inside the inner-lip polygon of
        ``landmarks`` (output px), blended by ``alpha``."""
        if alpha <= 0:
            return
        h, w = img.shape[:2]
        x0, y0 = np.floor(landmarks[INNER_LIPS].min(0)).astype(int) - 2
        x1, y1 = np.ceil(landmarks[INNER_LIPS].max(0)).astype(int) + 3
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 - x0 < 2 or y1 - y0 < 2:
            return
        dw = g.expression_delta
        active = np.flatnonzero(np.abs(dw) > 1e-6)
        v = self.vertices + np.tensordot(dw[active], self.expression_basis[active], axes=1) if len(active) else self.vertices
        px, cam = g.place(face.camera, face.translation, v, self.residual_weights)
        normals = vertex_normals(v, self.triangles) @ g.rotation.T
        # the socket is seen from inside: only what faces the camera (the throat, the tongue's top, the
        # teeth's fronts), never the inner lips' backs
        facing = -(normals * cam).sum(1) / np.linalg.norm(cam, axis=1) > 0.0
        front = max(float((sh_basis(np.array([[0.0, 0.0, -1.0]])) @ face.light)[0]), 1e-6)
        shade = np.clip((np.maximum(sh_basis(normals) @ face.light, 0.0) + face.unexplained) / (front + face.unexplained), 0.55, 1.15)
        colour = self.albedo * shade[:, None] ** (1.0 / GAMMA)
        # splat cells of half the face's (~1.3 mm): the interior's vertices are ~1 mm apart
        cell = max(g.cell / 2, 1.0)
        grid = (int(np.ceil((y1 - y0) / cell)) + 1, int(np.ceil((x1 - x0) / cell)) + 1)
        c = np.floor((px - [x0, y0]) / cell + 0.5).astype(np.int64)
        inside = facing & (c[:, 0] >= 0) & (c[:, 0] < grid[1]) & (c[:, 1] >= 0) & (c[:, 1] < grid[0])
        c, depth, colour = c[inside], cam[inside, 2], colour[inside]
        if not len(c):
            return
        vis = zbuffer_visible(c, depth, grid, tolerance=2.0)
        c, colour = c[vis], colour[vis]
        ones = np.ones(len(c))
        fills = [splat_fill(c, colour[:, k], ones, grid, sigma=1.2) for k in range(3)]
        rgb = np.stack([f[0] for f in fills], -1)
        den = fills[0][1]  # the same weights for every channel
        cover = np.clip(den / 0.6, 0.0, 1.0)[..., None]
        small = (rgb * cover + self.cavity.astype(np.float32) * (1.0 - cover)).astype(np.float32)
        A = np.array([[1.0 / cell, 0, 0], [0, 1.0 / cell, 0]], np.float32)
        col = cv2.warpAffine(small, A, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_REPLICATE)
        mask = inner_mouth_mask(landmarks, (h, w))[y0:y1, x0:x1].astype(np.float32)
        mask = cv2.GaussianBlur(mask, (0, 0), 0.7)[..., None] * alpha
        region = img[y0:y1, x0:x1].astype(np.float32)
        img[y0:y1, x0:x1] = np.clip(region * (1 - mask) + col * mask + 0.5, 0, 255).astype(np.uint8)


def _sample_maps(mx: np.ndarray, my: np.ndarray, px: np.ndarray) -> np.ndarray:
    """(n, 2) the sampling maps read bilinearly at output points ``px`` (n, 2)."""
    pts = px.astype(np.float32).reshape(-1, 1, 2)
    both = np.dstack([mx, my])
    return cv2.remap(both, pts[..., 0], pts[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).reshape(-1, 2)


def fit_mouth_interior(face: FaceShading, colours: FaceColours) -> MouthInterior:
    """The interior parts of ``face``'s model at its fitted identity and expression, coloured from
    the person's ``colours`` (:func:`generators.mouth.sample_colours`)."""
    model = face.model
    full = model.shape(face.identity, face.base_expression)
    parts = [model.parts[n] for n in INTERIOR_PARTS]
    idx = np.concatenate([np.arange(p.vertices.start, p.vertices.stop) for p in parts])
    remap = np.full(model.n_vertices, -1, np.int64)
    remap[idx] = np.arange(len(idx))
    tri = remap[np.concatenate([model.triangles[p.triangles] for p in parts])]
    tri = tri[(tri >= 0).all(1)]  # a part's triangles that reach into the face part are the face's
    socket = colours.lips * SOCKET_SHADE
    albedo = np.concatenate([np.tile(c, (p.vertices.stop - p.vertices.start, 1)) for p, c in
                             zip(parts, (socket, colours.lips * GUM_SHADE, colours.teeth))])
    v = full[idx].astype(np.float64)
    lm = full[model.landmark_index, :2].astype(np.float64)
    return MouthInterior(vertices=v, expression_basis=np.ascontiguousarray(model.expression_basis[:, idx]),
                         triangles=tri.astype(np.int32), albedo=albedo.astype(np.float32),
                         residual_weights=residual_weights(v[:, :2], lm, float(interocular(lm))), cavity=socket * 0.8)


class MeshSkin(GeometryOnly):
    """Neither the warp's painted skin nor its hand-written inner-point displacements: the mesh moves
    the skin between the landmarks and its shading draws the folds."""

    def displacements(self, sem: dict[str, float], iod: float) -> list:
        return []

    def how(self, au: str) -> str:
        return "ict-mesh"


class MeshRenderer(WarpRenderer):
    """The warp's renderer with the mesh's dense map correction and shading (module doc)."""

    def __init__(self, src: PreparedSource, face: FaceShading, name: str = "mesh", relight: bool = True,
                 model_mouth: bool = True, texture: ExpressionTexture | None = None,
                 source_aus: dict[str, float] | None = None) -> None:
        super().__init__(src, MeshSkin(source="ict-mesh"), name)
        self.face = face
        self.relight = relight
        self._source_px = to_prescaled(face.source_px, src.scale)
        self._max_flow = MAX_FLOW_IOD * float(interocular(src.points[:68]))
        self._geometry: RowGeometry | None = None
        self.interior = fit_mouth_interior(face, src.colours) if model_mouth else None
        self.texture = texture
        self._learned_on: dict[str, float] = {}
        # a neutralized profile's photo carries the AUs it took out: their learned skin comes off first
        self._source_aus = dict(source_aus or {})
        self._source_gain = None if texture is None else texture.gain(self._source_aus)

    def skin_gain(self, aus, sem, seed):
        if self.texture is None:
            return None
        gain = self.texture.gain(aus)
        if self._source_gain is None:
            return gain
        return -self._source_gain if gain is None else gain - self._source_gain

    def adjust_maps(self, mx, my, landmarks, pose_deg, aus, M):
        learned = self.texture.fields if self.texture is not None else {}
        self._learned_on = {au: float(aus.get(au, 0.0)) for au in learned if aus.get(au, 0.0) > 0 or au in self._source_aus}
        # the ratio's reference carries the learned AUs' shapes: their light and shadow are the
        # texture's (learned from real faces), the ratio draws only the other AUs'
        g = self.face.row_geometry(aus, pose_deg, np.asarray(M, float), np.asarray(landmarks, float), reference_aus=self._learned_on)
        self._geometry = g
        inside = (g.px[:, 0] >= 0) & (g.px[:, 0] <= mx.shape[1] - 1) & (g.px[:, 1] >= 0) & (g.px[:, 1] <= mx.shape[0] - 1)
        keep = inside & self.face.source_visible
        d = np.zeros_like(g.px)
        d[keep] = self._source_px[keep] - _sample_maps(mx, my, g.px[keep])
        n = np.linalg.norm(d, axis=1, keepdims=True)
        d *= np.minimum(1.0, self._max_flow / np.maximum(n, 1e-9))
        flow = splat_field(g, d * self.face.feather[:, None], landmarks, mx.shape, keep=keep)
        if flow is None:
            return mx, my
        return mx + flow[..., 0], my + flow[..., 1]

    def paint_interior(self, img, landmarks, alpha, seed):
        if self._geometry is None or self.interior is None:
            super().paint_interior(img, landmarks, alpha, seed)
        else:
            self.interior.render(self.face, self._geometry, img, landmarks, alpha)

    def finish(self, img, landmarks, record):
        g, self._geometry = self._geometry, None
        record["mesh"] = {"model": "ict", "vertices": int(len(self.face.vertices))}
        if self.texture is not None:
            record["texture"] = {"source": self.texture.meta.get("source", "?"),
                                 "aus": {au: round(float(v), 3) for au, v in sorted(self._learned_on.items())}}
        if not self.relight or g is None:
            return img
        ratio = self.face.ratio_of(g, landmarks, img.shape[:2])
        record["shading"] = {"model": "ict", "light_samples": self.face.light_samples,
                             "range": [1.0, 1.0] if ratio is None else [round(float(ratio.min()), 3), round(float(ratio.max()), 3)]}
        return img if ratio is None else apply_ratio(img, ratio)


class MeshWarp(WarpGenerator):
    """The warp generator whose per-sample renderers are :class:`MeshRenderer` of its owner's face."""

    def __init__(self, owner: "MeshGenerator") -> None:
        super().__init__(MeshSkin(source="ict-mesh"))
        self.owner = owner
        self.name = owner.name

    def new_renderer(self, profile: Any, src: PreparedSource) -> WarpRenderer:
        return MeshRenderer(src, self.owner.face(profile), self.name, self.owner.relight, self.owner.mouth == "model",
                            self.owner.texture, getattr(profile, "source_expression", None))


@GENERATORS.register("mesh", "the person's dense ICT-FaceKit mesh (9.4k vertices) moves the skin over the warp's "
                             "landmarks, relit by the mesh's expression shading (CPU)")
class MeshGenerator(Generator):
    """'mesh': see the module doc."""

    name = "mesh"
    options = ("face_model", "mouth", "texture")

    def __init__(self, face_model: str | Path | None = None, relight: bool = True, mouth: str = "painted",
                 texture: "str | Path | ExpressionTexture | None" = "london") -> None:
        if mouth not in ("model", "painted"):
            raise ConfigError(f"mouth must be 'model' (the face model's teeth) or 'painted' (the warp's), not {mouth!r}")
        self.model = load_face_model(face_model)
        self.relight = relight
        self.mouth = mouth
        self.texture = resolve_texture(texture)
        self.warp = MeshWarp(self)
        self._cache: tuple[Any, FaceShading] | None = None

    def face(self, profile: Any) -> FaceShading:
        """The profile's fitted, lit face model (the last one is kept)."""
        if self._cache is None or self._cache[0] is not profile:
            self._cache = (profile, fit_face_shading(profile, self.model))
        return self._cache[1]

    def render(self, profile: Any, rows: Grid | pd.DataFrame, size: int = 256, full_frame: bool = False) -> GeneratedBatch:
        return self.warp.render(profile, rows, size, full_frame)
