"""A compact 3D morphable face model (ICT-FaceKit, MIT) and its fit to 68 detected landmarks.

    from generators.facemodel import load_face_model, fit_landmarks
    model = load_face_model()                                    # FaceModel: mesh, bases, AU map
    weights = model.expression_weights_for_aus({"AU12": 4, "AU06": 3})
    vertices = model.shape(identity, weights)                    # (V, 3) mm, head frame
    fit = fit_landmarks(face.landmarks, face.image_size)         # LandmarkFit: identity, expression, pose
    motion = ict_motion_model()                                  # MotionModel: the AU fields of the shapes

The model is ``generators/data/ict_face.npz``, derived from ICT-FaceKit by
``scripts/derive_ict_face.py`` (licence: ``generators/data/ICT_FaceKit_LICENSE.txt``): the face area
(with ears and the front of the neck), mouth and eye sockets, gums and tongue, teeth, scleras and
irises; ``K`` identity principal components and 53 ARKit-style expression shapes as deltas from the
neutral mesh. Frame: millimetres, :mod:`fewshot.pose`'s head frame (x to the image right, y down, z away
from the camera, origin at the neutral nose tip), so ``camera = R @ vertex + t`` with a
:class:`~fewshot.pose.HeadPose` places the mesh in the camera exactly as the 68-point mean face.
Identity weights are in standard deviations of the identity PCA; expression weights are blendshape
weights, 0 (neutral) to 1 (the sculpted extreme).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Mapping, Sequence

import numpy as np

from fewshot.errors import ConfigError, InputError
from fewshot.landmarks import JAW, N_POINTS, interocular
from fewshot.pose import HeadPose, camera_matrix, estimate_pose, project

from .aus import AU_CODES, INTENSITY_LEVELS, intensity_level
from .motion import MotionModel, default_motion_model

MODEL_PATH = Path(__file__).with_name("data") / "ict_face.npz"

# Regularisation of fit_landmarks (see there): detector noise as a share of the inter-ocular distance,
# how much noisier the contour is, and the prior scale of an expression weight.
LANDMARK_NOISE_IOD = 0.03
CONTOUR_NOISE_FACTOR = 2.0
EXPRESSION_PRIOR_SCALE = 0.5
# Shapes fit_landmarks leaves at 0 by default: ARKit's mouthClose is a corrective for an open jaw (it
# closes the lips of jawOpen); on its own it pushes the lower lip up through the upper one.
NOT_FITTED = ("mouthClose",)
# AUs of the generators' vocabulary that ICT-FaceKit's README table lacks: expression shapes and their
# weight as a multiple of the movement level. AU26 (jaw drop) is jawOpen, the shape of AU27 (mouth
# stretch), at 0.6: the relaxed drop opens the jaw about 60% of the stretched one (FACS: AU26 parts the
# teeth, AU27 stretches the mouth wide). AU25 (lips part) has no jaw movement: mouthLowerDown at 0.3
# (the lower lip parts from the upper one). AU43 (eyes closed) is eyeBlink at the level (the closed
# lid of a blink, held). AU23 (lip tightener) is mouthPress (AU24's shape) at 0.5: both narrow the red
# of the lips; AU23 without pressing them together.
EXTRA_AUS: Mapping[str, tuple[tuple[str, float], ...]] = MappingProxyType({
    "AU25": (("mouthLowerDown_L", 0.3), ("mouthLowerDown_R", 0.3)),
    "AU26": (("jawOpen", 0.6),),
    "AU43": (("eyeBlink_L", 1.0), ("eyeBlink_R", 1.0)),
    "AU23": (("mouthPress_L", 0.5), ("mouthPress_R", 0.5)),
})
ICT_MOTION_SOURCE = "ICT-FaceKit blendshapes (MIT)"


@dataclass(frozen=True)
class MeshPart:
    """A contiguous range of vertices and of triangles of the model's mesh."""

    name: str
    vertex_start: int
    vertex_stop: int
    triangle_start: int
    triangle_stop: int

    @property
    def vertices(self) -> slice:
        return slice(self.vertex_start, self.vertex_stop)

    @property
    def triangles(self) -> slice:
        return slice(self.triangle_start, self.triangle_stop)


@dataclass(frozen=True, eq=False)
class FaceModel:
    """A linear face model: ``vertices = neutral + identity @ identity_basis + expression @ expression_basis``.

    vertices_neutral: (V, 3) float32 mm, head frame (module docstring).
    identity_basis: (K, V, 3) float32 mm per standard deviation of each identity principal component.
    expression_basis: (E, V, 3) float32 mm at expression weight 1; ``expression_names`` (E,) in order.
    au_to_expressions: FACS AU code -> the expression shapes ICT-FaceKit's README relates to it
        (``AU01``...``AU64``; ``AU30L``/``AU30R``: jaw sideways to the subject's left/right);
        ``au_names``: code -> FACS name.
    triangles: (F, 3) int32 vertex indices; ``(b - a) x (c - a)`` points out of the surface.
    landmark_index: (68,) vertex of each iBUG/Multi-PIE landmark (README list);
        ``landmark_index_jawline`` the same with the README's jawline substitutes for 0-7 and 9-16;
        ``jawline_extended_right``/``_left`` (17,) the README's denser jawlines (for contour fitting).
    parts: name -> :class:`MeshPart`; disjoint and in vertex order: face, mouth_socket,
        eye_socket_left/right, gums_tongue, teeth, sclera_left, iris_left, sclera_right, iris_right
        (left/right: the subject's). The sockets' rim triangles use face vertices (the surface is
        stitched). ``narrow_face``: the README's narrow face area, the first vertices and triangles of
        the face part (no ears or neck).
    source_vertex_index: (V,) ICT-FaceKit vertex index of each vertex.
    float16_max_error_mm: stored (float16) bases against the source, largest absolute error per basis.
    meta: provenance (source, commit, units, ...). license: ICT-FaceKit's MIT licence text.
    """

    vertices_neutral: np.ndarray
    identity_basis: np.ndarray
    expression_basis: np.ndarray
    expression_names: tuple[str, ...]
    au_to_expressions: Mapping[str, tuple[str, ...]]
    au_names: Mapping[str, str]
    triangles: np.ndarray
    landmark_index: np.ndarray
    landmark_index_jawline: np.ndarray
    jawline_extended_right: np.ndarray
    jawline_extended_left: np.ndarray
    parts: Mapping[str, MeshPart]
    narrow_face: MeshPart
    source_vertex_index: np.ndarray
    float16_max_error_mm: Mapping[str, float]
    identity_variance_kept: float
    meta: Mapping[str, object]
    license: str

    @property
    def n_vertices(self) -> int:
        return int(self.vertices_neutral.shape[0])

    @property
    def n_identity(self) -> int:
        return int(self.identity_basis.shape[0])

    @property
    def n_expressions(self) -> int:
        return int(self.expression_basis.shape[0])

    def expression_index(self, name: str) -> int:
        try:
            return self.expression_names.index(name)
        except ValueError:
            raise ConfigError(f"{name!r} is not an expression shape of the face model; known: "
                              f"{', '.join(self.expression_names)}") from None

    def _weights(self, values, n: int, what: str) -> np.ndarray:
        if values is None:
            return np.zeros(n)
        w = np.asarray(values, float)
        if w.shape[-1:] != (n,):
            raise ConfigError(f"{what} weights must have {n} entries in the last axis, not shape {w.shape}")
        return w

    def shape(self, identity=None, expression=None) -> np.ndarray:
        """Vertices (..., V, 3) mm of identity weights (..., K) (standard deviations; None: the mean
        face) with expression weights (..., E) (0..1; None: neutral). Leading axes broadcast."""
        a = self._weights(identity, self.n_identity, "identity")
        b = self._weights(expression, self.n_expressions, "expression")
        return (self.vertices_neutral + np.einsum("...k,kvc->...vc", a, self.identity_basis)
                + np.einsum("...e,evc->...vc", b, self.expression_basis))

    def landmarks(self, identity=None, expression=None, jawline: bool = False) -> np.ndarray:
        """(..., 68, 3) mm: the landmark vertices of :meth:`shape` (computed on those vertices only).
        ``jawline``: use the README's jawline substitutes for the contour points 0-7 and 9-16."""
        idx = self.landmark_index_jawline if jawline else self.landmark_index
        a = self._weights(identity, self.n_identity, "identity")
        b = self._weights(expression, self.n_expressions, "expression")
        return (self.vertices_neutral[idx] + np.einsum("...k,kvc->...vc", a, self.identity_basis[:, idx])
                + np.einsum("...e,evc->...vc", b, self.expression_basis[:, idx]))

    @cached_property
    def au_shapes(self) -> Mapping[str, tuple[tuple[str, float], ...]]:
        """The one AU -> shape map: code -> ((expression shape, factor), ...). The README's table
        (:attr:`au_to_expressions`, factor 1) plus :data:`EXTRA_AUS` for the vocabulary's AUs it lacks
        (AU23, AU25, AU26, AU43)."""
        table = {c: tuple((n, 1.0) for n in names) for c, names in self.au_to_expressions.items()}
        table.update({c: v for c, v in EXTRA_AUS.items() if c not in table})
        return MappingProxyType(table)

    def expression_weights_for_aus(self, aus: Mapping[str, float]) -> np.ndarray:
        """(E,) expression weights of FACS AU intensities ``{"AU12": 4.0, ...}`` (0..5, A..E = 1..5).

        Each AU sets every shape :attr:`au_shapes` relates to it (both sides of a bilateral AU) to its
        factor (1 for the README's table, :data:`EXTRA_AUS`'s for AU23/25/26/43) times
        :func:`generators.aus.intensity_level` of its intensity: 0, A 0.1, B 0.25, C 0.5, D 0.775,
        E 1.0 (piecewise linear between). A shape named by two AUs takes the larger weight. Codes:
        ``AU12``, ``12``, ``au12``; ``AU30L``/``AU30R`` for jaw sideways. An AU with no shape (e.g.
        AU19) raises :class:`ConfigError`.
        """
        w = np.zeros(self.n_expressions)
        for au, intensity in aus.items():
            code = self.au_code(au)
            level = float(intensity_level(float(intensity)))
            for name, factor in self.au_shapes[code]:
                i = self.expression_names.index(name)
                w[i] = max(w[i], factor * level)
        return w

    def aus_of_weights(self, weights: np.ndarray, aus: Sequence[str] | None = None) -> dict[str, float]:
        """FACS intensities (0..5) that (E,) expression ``weights`` amount to, the inverse of
        :meth:`expression_weights_for_aus` per AU: the mean over the AU's shapes of weight / factor
        (both sides of a bilateral AU), through the inverse of
        :func:`generators.aus.intensity_level`. ``aus``: the codes to report (default every AU with
        shapes). A fitted expression codes with detector noise and with whatever of a face's own shape
        the identity basis leaves to the shapes: compare with a neutral population
        (:mod:`generators.neutral`), not with 0."""
        w = np.asarray(weights, float)
        out = {}
        for au in (self.au_shapes if aus is None else [self.au_code(a) for a in aus]):
            level = np.mean([w[self.expression_names.index(n)] / f for n, f in self.au_shapes[au]])
            out[au] = float(np.interp(min(max(level, 0.0), 1.0), INTENSITY_LEVELS, np.arange(len(INTENSITY_LEVELS))))
        return out

    def without_aus(self, weights: np.ndarray, aus) -> np.ndarray:
        """A copy of (E,) expression ``weights`` with every shape of ``aus`` (codes) at 0: a fitted
        expression with those AUs taken out (e.g. the smile of a source photo that is not neutral)."""
        out = np.array(weights, float)
        for au in aus:
            for name, _ in self.au_shapes[self.au_code(au)]:
                out[self.expression_names.index(name)] = 0.0
        return out

    def au_code(self, au) -> str:
        """Normalise an AU name to the model's codes ('12' -> 'AU12', 'au30l' -> 'AU30L')."""
        m = re.fullmatch(r"(?i)(?:au)?0*(\d+)([lr]?)", str(au).strip())
        code = None if m is None else f"AU{int(m.group(1)):02d}{m.group(2).upper()}"
        if code not in self.au_shapes:
            raise ConfigError(f"{au!r}: the face model has no expression shapes for this AU; known: "
                              f"{', '.join(self.au_shapes)}")
        return code


def _frozen(a: np.ndarray, dtype) -> np.ndarray:
    out = np.ascontiguousarray(a, dtype=dtype)
    out.setflags(write=False)  # the default model is cached and shared
    return out


@lru_cache(maxsize=2)
def _load(path: str) -> FaceModel:
    try:
        with np.load(path, allow_pickle=False) as d:
            data = {k: d[k] for k in d.files}
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read the face model ({err}); re-derive it with scripts/derive_ict_face.py") from err
    names = [str(n) for n in data["part_names"]]
    parts = {n: MeshPart(n, int(v[0]), int(v[1]), int(t[0]), int(t[1]))
             for n, v, t in zip(names, data["part_vertex_bounds"], data["part_triangle_bounds"])}
    (nv0, nv1), (nt0, nt1) = data["narrow_face_bounds"]
    codes = [str(c) for c in data["au_codes"]]
    errors = data["float16_max_error_mm"]
    return FaceModel(
        vertices_neutral=_frozen(data["vertices_neutral"], np.float32),
        identity_basis=_frozen(data["identity_basis"].transpose(0, 2, 1), np.float32),
        expression_basis=_frozen(data["expression_basis"].transpose(0, 2, 1), np.float32),
        expression_names=tuple(str(n) for n in data["expression_names"]),
        au_to_expressions=MappingProxyType({c: tuple(str(s).split("+")) for c, s in zip(codes, data["au_expressions"])}),
        au_names=MappingProxyType({c: str(n) for c, n in zip(codes, data["au_names"])}),
        triangles=_frozen(data["triangles"], np.int32),
        landmark_index=_frozen(data["landmark_index"], np.int64),
        landmark_index_jawline=_frozen(data["landmark_index_jawline"], np.int64),
        jawline_extended_right=_frozen(data["jawline_extended_right"], np.int64),
        jawline_extended_left=_frozen(data["jawline_extended_left"], np.int64),
        parts=MappingProxyType(parts),
        narrow_face=MeshPart("face_narrow", int(nv0), int(nv1), int(nt0), int(nt1)),
        source_vertex_index=_frozen(data["source_vertex_index"], np.int64),
        float16_max_error_mm=MappingProxyType({"identity": float(errors[0]), "expression": float(errors[1])}),
        identity_variance_kept=float(data["identity_variance_kept"]),
        meta=MappingProxyType(json.loads(str(data["meta"]))),
        license=str(data["license"]),
    )


def load_face_model(path: str | Path | None = None) -> FaceModel:
    """The shipped ICT-FaceKit face model (default ``generators/data/ict_face.npz``), or one written by
    ``scripts/derive_ict_face.py`` at ``path``. Cached: repeated calls share one read-only model."""
    p = Path(MODEL_PATH if path is None else path)
    if not p.is_file():
        raise InputError(f"{p}: no face model file; run scripts/derive_ict_face.py to derive it from ICT-FaceKit")
    return _load(str(p.resolve()))


def ict_motion_model(model: FaceModel | None = None) -> MotionModel:
    """The AU motion model of the face model's expression shapes (default: the shipped ICT-FaceKit model).

    For each AU of :data:`generators.aus.AU_CODES` with shapes in :attr:`FaceModel.au_shapes` (all 20
    of the vocabulary with the shipped model), its field at intensity E is the 68 landmark vertices of
    the mean identity at that AU's weights (:meth:`FaceModel.expression_weights_for_aus` at E, level
    1.0) minus the neutral landmarks, over the neutral landmarks' inter-ocular distance (eye centre to
    eye centre in x, y, as :meth:`generators.motion.MotionModel.deform` measures it): (20, 68, 3), head
    frame, inter-ocular units, so it is a drop-in for :func:`generators.motion.default_motion_model`.
    An AU without shapes keeps its FACS default field; ``meta['facs_default_aus']`` lists them.
    """
    model = load_face_model() if model is None else model
    neutral = model.landmarks().astype(float)
    iod = float(interocular(neutral[:, :2]))
    fields = default_motion_model().fields.copy()
    derived, kept = [], []
    for k, au in enumerate(AU_CODES):
        if au not in model.au_shapes:
            kept.append(au)
            continue
        weights = model.expression_weights_for_aus({au: 5.0})
        fields[k] = (model.landmarks(None, weights).astype(float) - neutral) / iod
        derived.append(au)
    meta = {"iod_mm": iod, "derived_aus": np.array(derived, dtype=str), "facs_default_aus": np.array(kept, dtype=str),
            "face_model_source": str(model.meta.get("source", "")), "face_model_commit": str(model.meta.get("commit", ""))}
    return MotionModel(AU_CODES, fields, ICT_MOTION_SOURCE, None, meta)


# --------------------------------------------------------------------------------------------------
# fitting


@dataclass(frozen=True, eq=False)
class LandmarkFit:
    """Result of :func:`fit_landmarks`.

    identity: (K,) standard deviations; expression: (E,) weights in [0, 1], the model's order;
    pose: head pose (radians, mm; :mod:`fewshot.pose`); camera: 3x3 intrinsics used;
    landmarks_3d: (68, 3) mm, head frame, of the fitted shape; reprojected: (68, 2) px;
    error_px: (68,) distance of each reprojected landmark from its detection.
    """

    identity: np.ndarray
    expression: np.ndarray
    pose: HeadPose
    camera: np.ndarray
    landmarks_3d: np.ndarray
    reprojected: np.ndarray
    error_px: np.ndarray

    @property
    def mean_error_px(self) -> float:
        return float(self.error_px.mean())


def bounded_least_squares(A: np.ndarray, b: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                          max_iter: int = 200) -> np.ndarray:
    """argmin ||A x - b||^2 subject to lower <= x <= upper (entries may be +-inf), for A of full column
    rank (n unknowns, n small): an active-set method on the normal equations. Variables are fixed at a
    bound when the unconstrained step leaves the box, and freed again when the gradient pushes them
    back inside, until the KKT conditions hold."""
    H, g = A.T @ A, A.T @ b
    n = len(g)
    at_bound = np.zeros(n, bool)
    x = np.clip(np.zeros(n), lower, upper)
    for _ in range(max_iter):
        free = ~at_bound
        trial = x.copy()
        if free.any():
            rhs = g[free] - H[np.ix_(free, at_bound)] @ x[at_bound]
            trial[free] = np.linalg.solve(H[np.ix_(free, free)], rhs)
        outside = free & ((trial < lower) | (trial > upper))
        if outside.any():
            # step from x towards trial as far as the box allows, and fix the variable that hits it
            d = trial - x
            with np.errstate(divide="ignore", invalid="ignore"):
                room = np.where(d < 0, (lower - x) / d, np.where(d > 0, (upper - x) / d, np.inf))
            room = np.where(outside, room, np.inf)
            j = int(np.argmin(room))
            x = np.clip(x + max(0.0, min(1.0, float(room[j]))) * d, lower, upper)
            x[j] = lower[j] if d[j] < 0 else upper[j]
            at_bound[j] = True
            continue
        x = trial
        grad = H @ x - g
        release = at_bound & (((x <= lower) & (grad < 0)) | ((x >= upper) & (grad > 0)))
        if not release.any():
            return x
        at_bound[int(np.argmax(np.where(release, np.abs(grad), -1.0)))] = False
    return x


def _shape_step(model: FaceModel, idx: np.ndarray, target: np.ndarray, pose: HeadPose, K: np.ndarray,
                sigma_px: np.ndarray, depth: np.ndarray, prior_scale: np.ndarray, free: np.ndarray,
                weights: np.ndarray) -> np.ndarray:
    """MAP (identity, expression) weights at a fixed pose: the linearised projection residuals (pixels,
    by the current depths) over the noise, plus the priors. Weights outside ``free`` keep their value
    in ``weights``."""
    if not free.any():
        return weights
    R, t = pose.matrix, pose.translation
    full = np.concatenate([model.identity_basis[:, idx], model.expression_basis[:, idx]]).astype(float)
    basis = full[free]
    p0 = model.vertices_neutral[idx] + np.einsum("m,mnc->nc", weights[~free], full[~free])
    f = np.array([K[0, 0], K[1, 1]])
    offset = target - K[:2, 2]  # (n, 2) px from the principal point
    # residual of point i, axis a: (f_a (R p + t)_a - offset_a (R p + t)_z) / depth_i, p = p0 + basis^T w
    rows = f[None, :, None] * R[None, :2, :] - offset[:, :, None] * R[None, 2:3, :]  # (n, 2, 3)
    const = f[None] * t[:2][None] - offset * t[2] + np.einsum("nac,nc->na", rows, p0)
    scale = 1.0 / (depth[:, None] * sigma_px[:, None])
    A = (np.einsum("nac,mnc->nam", rows, basis) * scale[..., None]).reshape(-1, len(basis))
    b = -(const * scale).ravel()
    k = model.n_identity
    A = np.vstack([A, np.diag(1.0 / prior_scale[free])])
    b = np.r_[b, np.zeros(len(basis))]
    is_expression = np.arange(k + model.n_expressions)[free] >= k
    lower = np.where(is_expression, 0.0, -np.inf)
    upper = np.where(is_expression, 1.0, np.inf)
    out = weights.astype(float).copy()
    out[free] = bounded_least_squares(A, b, lower, upper)
    return out


def fit_landmarks(
    landmarks: np.ndarray,
    image_size: tuple[int, int],
    model: FaceModel | None = None,
    pose: HeadPose | None = None,
    focal: float | None = None,
    iterations: int = 4,
    refine_pose: bool = True,
    jawline: bool = False,
    landmark_noise: float = LANDMARK_NOISE_IOD,
    contour_noise_factor: float = CONTOUR_NOISE_FACTOR,
    expression_prior: float = EXPRESSION_PRIOR_SCALE,
    identity: np.ndarray | None = None,
    expressions: tuple[str, ...] | None = None,
) -> LandmarkFit:
    """Fit identity and expression weights (and refine the head pose) to 68 detected landmarks.

    landmarks: (68, 2) px (iBUG order) in an image of ``image_size`` (width, height); the camera is
    :func:`fewshot.pose.camera_matrix` (focal ``focal``, default max(W, H) px, principal point at the
    centre), as for every pose in fewshot. ``pose``: a starting head pose (e.g. ``Face.pose``);
    default: PnP of the model's mean landmarks (:func:`fewshot.pose.estimate_pose`).

    Alternation: ``iterations`` rounds of (shape at the current pose, then PnP with the fitted shape's
    landmarks on fewshot.pose's ``PNP_POINTS``), then a last shape step, so the returned shape is the
    optimum for the returned pose. ``refine_pose=False`` keeps the given pose.

    Shape step (regularised linear least squares, bounded). With the pose fixed, each landmark's
    perspective projection is linear in the weights once multiplied by its depth; dividing by the
    current depth (updated twice per step) makes the residuals pixels. Objective, a MAP estimate:

        sum_i ||r_i||^2 / sigma_i^2 + ||identity||^2 + ||expression||^2 / expression_prior^2,
        0 <= expression <= 1,

    where sigma_i = ``landmark_noise`` x the detections' inter-ocular distance (eye centres; default
    0.03, a typical detector's error), ``contour_noise_factor`` times that on the jaw contour 0-16 (a
    silhouette that slides over the 3D surface as the head turns; default 2); ``||identity||^2`` is the
    PCA's own N(0, 1) prior; the expression prior (scale 0.5 by default) keeps shapes the landmarks do
    not see (gaze, cheek puff) at zero. ``jawline``: fit the README's jawline vertices for the contour.
    ``expressions``: the shapes to fit (default all but :data:`NOT_FITTED`; ``()`` fits identity only,
    e.g. on a neutral reference photo). ``identity``: (K,) weights to hold fixed instead of fitting them
    (e.g. a person's identity from their neutral photo, to code an expression in another photo).
    """
    model = load_face_model() if model is None else model
    target = np.asarray(landmarks, float)
    if target.shape != (N_POINTS, 2) or not np.isfinite(target).all():
        raise ConfigError(f"fit_landmarks needs (68, 2) finite pixel landmarks, got shape {target.shape}")
    if iterations < 0:
        raise ConfigError(f"fit_landmarks iterations must be >= 0, not {iterations}")
    K = camera_matrix(int(image_size[0]), int(image_size[1]), focal)
    idx = model.landmark_index_jawline if jawline else model.landmark_index
    sigma = np.full(N_POINTS, landmark_noise * float(interocular(target)))
    sigma[JAW] *= contour_noise_factor
    k = model.n_identity
    theta = np.zeros(k + model.n_expressions)
    if identity is not None:
        theta[:k] = model._weights(identity, k, "identity")
    names = [n for n in model.expression_names if n not in NOT_FITTED] if expressions is None else list(expressions)
    free = np.r_[np.full(k, identity is None), np.zeros(model.n_expressions, bool)]
    free[[k + model.expression_index(n) for n in names]] = True
    prior_scale = np.r_[np.ones(k), np.full(model.n_expressions, float(expression_prior))]

    def shape_of(th: np.ndarray) -> np.ndarray:
        return model.landmarks(th[:k], th[k:], jawline=jawline).astype(float)

    def pnp(th: np.ndarray) -> HeadPose:
        return estimate_pose(target, image_size, shape_of(th), focal)

    if pose is None:
        pose = pnp(theta)

    def shape_step(th: np.ndarray, at: HeadPose) -> np.ndarray:
        for _ in range(2):
            depth = (shape_of(th) @ at.matrix.T + at.translation)[:, 2]
            th = _shape_step(model, idx, target, at, K, sigma, depth, prior_scale, free, th)
        return th

    for _ in range(iterations if refine_pose else 0):
        theta = shape_step(theta, pose)
        pose = pnp(theta)
    theta = shape_step(theta, pose)
    pts = shape_of(theta)
    reprojected = project(pts, pose, K)
    return LandmarkFit(
        identity=theta[:k], expression=theta[k:], pose=pose, camera=K, landmarks_3d=pts,
        reprojected=reprojected, error_px=np.linalg.norm(reprojected - target, axis=1),
    )


@dataclass(frozen=True)
class FaceView:
    """One more photo or frame of the person, for fitting the identity on several views: ``landmarks``
    (68, 2) px detected in an image of ``image_size`` (width, height), ``pose`` its head pose."""

    landmarks: np.ndarray
    image_size: tuple[int, int]
    pose: HeadPose | None = None


def fit_views(
    reference: FaceView,
    others: Sequence[FaceView] = (),
    model: FaceModel | None = None,
    focal: float | None = None,
    others_focal: float | None = None,
) -> LandmarkFit:
    """Fit one identity to several views of a person and the reference view's pose and expression.

    Each view is fitted on its own (:func:`fit_landmarks`: identity, expression, pose); the identity is
    the mean of the views' identities (each view's expression and pose are its own, so a smile in one
    frame and a turned head in another do not leak into the shape), and the reference view is fitted
    again with that identity held fixed. One view: :func:`fit_landmarks` of it. ``focal`` (the
    reference's) and ``others_focal``: as :func:`fit_landmarks` (None: the view's max(W, H))."""
    model = load_face_model() if model is None else model
    first = fit_landmarks(reference.landmarks, reference.image_size, model, pose=reference.pose, focal=focal)
    if not others:
        return first
    ids = [first.identity] + [fit_landmarks(v.landmarks, v.image_size, model, pose=v.pose, focal=others_focal).identity
                              for v in others]
    identity = np.mean(ids, axis=0)
    return fit_landmarks(reference.landmarks, reference.image_size, model, pose=first.pose, focal=focal, identity=identity)


IDENTITY_VIEWS = 8  # a clip's profile fits the face model's identity on at most this many of its other faces


def fit_profile_views(profile, model: FaceModel | None = None) -> LandmarkFit:
    """The face model fitted to a profile (``.image``, ``.landmarks`` (68, 2) px, ``.pose``, ``.camera``,
    optional ``.views``): :func:`fit_views` of its reference face and up to :data:`IDENTITY_VIEWS` of its
    other views, evenly spread over a clip. The one fit the mesh generator renders from and
    :func:`generators.neutral.neutralize_profile` takes the expression out of."""
    model = load_face_model() if model is None else model
    image = np.asarray(profile.image)
    size = (image.shape[1], image.shape[0])
    views = tuple(getattr(profile, "views", ()) or ())
    if len(views) > IDENTITY_VIEWS:
        views = tuple(views[int(i)] for i in np.linspace(0, len(views) - 1, IDENTITY_VIEWS).round())
    K = np.asarray(profile.camera, float)
    return fit_views(FaceView(np.asarray(profile.landmarks, float), size, profile.pose), views, model, focal=float(K[0, 0]))
