"""Stage 3: render a grid of targets from one person's photo.

    from generators import fit_profile, design_grid, generate
    profile = fit_profile("photo.jpg")
    grid = design_grid(profile, n=200, strategy="balanced", seed=0)
    batch = generate(profile, grid, size=256)          # GeneratedBatch
    batch.images                                       # (N, 256, 256, 3) uint8 RGB aligned crops

A generator turns a person profile (``.image`` uint8 RGB, ``.landmarks`` (68, 2) px, ``.pose`` HeadPose,
optional ``.shape3d`` (68, 3) mm) and grid rows (a :class:`generators.grid.Grid`, or a table it is read
from: target landmarks in the source image's pixels, yaw, pitch, roll degrees, AU intensities FACS
0..5, semantic appearance levels 0..1, seeds) into aligned crops. Generators are registered by name in :data:`GENERATORS`.

The crop is the similarity transform that puts the target's stable landmarks (eye corners, nose,
upper jaw) on the frontal template of :mod:`generators.warp` (jaw spans 0.6 of the crop); the returned
landmarks are in crop pixels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import pandas as pd

from fewshot.crop import area_resize, prescale, transform_scale
from fewshot.errors import ConfigError
from fewshot.landmarks import LEFT_BROW, LEFT_EYE, RIGHT_BROW, RIGHT_EYE, apply_affine, interocular, similarity_transform
from fewshot.pose import estimate_pose
from fewshot.registry import Registry

from . import warp as W
from .appearance import CANONICAL, N_VARIANTS, PROCEDURAL, AppearanceModel, load_appearance
from .grid import Grid, as_grid
from .mouth import FaceColours, eye_openings, mouth_opening, paint_closed_lid, paint_mouth, sample_colours

@dataclass
class GeneratedBatch:
    """Rendered samples, one per grid row.

    images: (N, S, S, 3) uint8 RGB aligned crops.
    landmarks: (N, 68, 2) float32, the rendered landmarks in crop pixels.
    crop_transforms: (N, 2, 3) float32 similarity from source-image pixels to crop pixels.
    records: per row, what was rendered and how (see :func:`render_record`), JSON-serialisable.
    frames: (N, H, W, 3) uint8 RGB full frames (source image frame) when asked for, else None.
    """

    images: np.ndarray
    landmarks: np.ndarray
    crop_transforms: np.ndarray
    records: list[dict]
    frames: np.ndarray | None = None
    generator: str = "warp"

    def __len__(self) -> int:
        return len(self.images)


class Generator:
    """Interface: ``render(profile, rows, size, full_frame) -> GeneratedBatch``.

    ``options``: the keyword options the constructor takes (files named by the user: appearance,
    refiner...); ``required``: those it cannot do without. :func:`generator_options` checks a request
    against them, so an option a generator would ignore is an error, not silently dropped."""

    name = "?"
    options: tuple[str, ...] = ()
    required: tuple[str, ...] = ()

    def render(self, profile: Any, rows: Grid | pd.DataFrame, size: int = 256, full_frame: bool = False) -> GeneratedBatch:
        raise NotImplementedError


GENERATORS: Registry[Generator] = Registry("generator")


def generator_options(name: str, **given: Any) -> dict[str, Any]:
    """The constructor options of generator ``name`` from ``given`` (None = not given, dropped).
    ConfigError for an option the generator does not take or a required one that is missing."""
    cls = GENERATORS.get(name)
    opts = {k: v for k, v in given.items() if v is not None}
    extra = sorted(set(opts) - set(cls.options))
    if extra:
        raise ConfigError(f"generator {name!r} takes no --{', --'.join(extra)}; "
                          f"choose a generator that uses it (`fewshot backends` lists them) or drop the option")
    missing = [k for k in cls.required if k not in opts]
    if missing:
        raise ConfigError(f"generator {name!r} needs --{', --'.join(missing)}")
    return opts


@dataclass
class PreparedSource:
    """A profile's image downscaled for a crop size, with its mesh points and colours."""

    image: np.ndarray  # uint8 RGB, downscaled by `scale`
    scale: float  # source-image px -> `image` px
    points: np.ndarray  # (N_FACE, 2) mesh points in `image` px
    rotation: np.ndarray  # (3, 3)
    shape3d: np.ndarray | None
    colours: FaceColours
    eye_open: tuple[float, float]
    mouth_open: float
    full_size: tuple[int, int]  # (h, w) of the original image


def prepare_source(profile: Any, size: int | None = None, scale: float | None = None) -> PreparedSource:
    """The profile's photo ready to render from: area-downscaled for crops of ``size`` px (or by the
    factor ``scale``, e.g. for full frames at a reduced resolution), mesh points, colours, openings."""
    image = np.asarray(profile.image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ConfigError(f"profile.image must be uint8 (H, W, 3) RGB, got {image.dtype} {image.shape}")
    lm = np.asarray(profile.landmarks, float)
    pose = getattr(profile, "pose", None) or estimate_pose(lm, (image.shape[1], image.shape[0]))
    R = pose.matrix
    if scale is None:
        small, f = prescale(image, transform_scale(W.crop_transform(lm, size)))
    else:
        small, f = area_resize(image, scale)
    return PreparedSource(
        image=small,
        scale=f,
        points=W.to_prescaled(W.face_points(lm, R), f),
        rotation=R,
        shape3d=getattr(profile, "shape3d", None),
        colours=sample_colours(small, W.to_prescaled(lm, f)),
        eye_open=eye_openings(lm),
        mouth_open=mouth_opening(lm),
        full_size=image.shape[:2],
    )


def _similarity_2pt(d0, d1, s0, s1) -> np.ndarray:
    """Affine row [a, b, c, d, e, f] of the similarity sending d0, d1 onto s0, s1."""
    dz, sz = complex(*(d1 - d0)), complex(*(s1 - s0))
    a = sz / dz if abs(dz) > 1e-6 else 1.0
    b = complex(*s0) - a * complex(*d0)
    return np.array([a.real, -a.imag, b.real, a.imag, a.real, b.imag])


_INTERIOR_ANCHORS = {1: (36, 39), 2: (42, 45), 3: (60, 64)}


def render_record(aus: dict, sem: dict, appearance: AppearanceModel, mouth_alpha: float, lid_alpha: tuple[float, float], seed: int, generator: str) -> dict:
    """What one sample shows: landmark-driven AUs, semantic appearance AUs and how each was made."""
    return {
        "generator": generator,
        "seed": int(seed),
        "landmarks_aus": {k: round(v, 3) for k, v in sorted(aus.items())},
        "semantic_aus": {k: {"level": round(v, 3), "how": appearance.how(k)} for k, v in sorted(sem.items()) if k in PROCEDURAL},
        "semantic_ignored": sorted(k for k in sem if k not in PROCEDURAL),
        "texture_variant": int(seed) % N_VARIANTS,
        "mouth_interior": round(float(mouth_alpha), 3),
        "eyelids_painted": [round(float(a), 3) for a in lid_alpha],
    }


class WarpRenderer:
    """The 'warp' generator's per-sample renderer for one prepared source (see module doc)."""

    def __init__(self, src: PreparedSource, appearance: AppearanceModel, name: str = "warp") -> None:
        self.src = src
        self.appearance = appearance
        self.mesh = W.mesh()
        self.name = name
        tri = self.mesh.triangles
        self._canon = W.template_points(CANONICAL)
        self._interior = {k: np.where(self.mesh.kind == k)[0] for k in _INTERIOR_ANCHORS}
        self._has_border = (tri >= W.N_FACE).any(1)

    def render(self, target_lm: np.ndarray, pose_deg: np.ndarray, aus: dict, sem: dict, seed: int,
               M: np.ndarray, out_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, dict]:
        """One sample: target landmarks (68, 2) source-image px, pose (yaw, pitch, roll) deg, AU dicts;
        M maps source-image px to the output's px; out_shape (h, w). Returns (image, landmarks in
        output px, record)."""
        src, tri = self.src, self.mesh.triangles
        R = W.rotation_of(*pose_deg)
        face = apply_affine(M, W.face_points(target_lm, R))
        iod = float(interocular(face[:68]))
        for i, d in self.appearance.displacements(sem, iod):
            face[i] += d
        # The background follows the head rigidly (a similarity on the stable landmarks), never its
        # expression: sampling it at fixed image positions instead would pull the ear or hair that the
        # turned head uncovers across the crop.
        border = W.border_points(out_shape)
        S = similarity_transform(face[W.ALIGN_POINTS], src.points[W.ALIGN_POINTS])
        face = W.clamp_extras(W.unfold_outline(face, src.points, S, R, src.rotation), out_shape)
        dst = np.concatenate([face, border])
        srcp = np.concatenate([src.points, apply_affine(S, border)])

        depth = np.concatenate([W.face_depths(R, src.shape3d), np.full(W.N_BORDER, 1e6)])
        tdepth = depth[tri].mean(1)
        back = W._signed_area(dst[tri]) <= 0
        order = np.lexsort((-tdepth, ~back))  # back-facing first, then far to near

        A = W.triangle_affines(dst, srcp, tri)
        for kind, (a, b) in _INTERIOR_ANCHORS.items():
            A[self._interior[kind]] = _similarity_2pt(dst[a], dst[b], srcp[a], srcp[b])
        ids = W.rasterise(dst, tri, order, out_shape)
        mx, my = self.adjust_maps(*W.dense_map(ids, A), dst[:68], pose_deg, aus, M)
        img = cv2.remap(src.image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

        gain = self.skin_gain(aus, sem, seed)
        if gain is not None:
            A2 = W.triangle_affines(dst, np.concatenate([self._canon[: W.N_FACE], W.border_points(CANONICAL)]), tri)
            # the crop -> face-space map is continuous: built at half resolution, upsampled exactly
            size = (ids.shape[1], ids.shape[0])
            gx, gy = (cv2.resize(m, size, interpolation=cv2.INTER_LINEAR) for m in W.dense_map(ids, A2, stride=2))
            g = cv2.remap(gain, gx, gy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            img = np.clip(img * np.exp(g)[..., None], 0, 255).astype(np.uint8)

        lm = dst[:68]
        mouth_alpha = float(np.clip((mouth_opening(lm) - src.mouth_open - 0.02) / 0.06, 0, 1))
        self.paint_interior(img, lm, mouth_alpha, seed)
        lid_alpha = []
        for k, (eye, brow) in enumerate(((RIGHT_EYE, RIGHT_BROW), (LEFT_EYE, LEFT_BROW))):
            r = eye_openings(lm)[k] / max(src.eye_open[k], 1e-3)
            a = float(np.clip((0.3 - r) / 0.2, 0, 1))  # a squint (AU6/7) keeps its eye; only near-closure is painted
            paint_closed_lid(img, lm, eye, brow, src.colours, a)
            lid_alpha.append(a)
        record = render_record(aus, sem, self.appearance, mouth_alpha, tuple(lid_alpha), seed, self.name)
        return self.finish(img, lm, record), lm.astype(np.float32), record

    def skin_gain(self, aus: dict, sem: dict, seed: int) -> np.ndarray | None:
        """The row's log-luminance gain in the shape-normalised space of :mod:`generators.appearance`
        (CANONICAL x CANONICAL, warped onto the rendered face), or None for none. The warp's own: its
        appearance model's semantic fields (procedural or learned) at the row's ``sem`` levels."""
        return self.appearance.gain(sem, seed) if sem else None

    def adjust_maps(self, mx: np.ndarray, my: np.ndarray, landmarks: np.ndarray, pose_deg: np.ndarray, aus: dict,
                    M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The per-pixel sampling maps (output px -> prescaled source px) of a row before the source is
        sampled; ``landmarks``: the rendered landmarks (output px). The warp's own: unchanged."""
        return mx, my

    def paint_interior(self, img: np.ndarray, landmarks: np.ndarray, alpha: float, seed: int) -> None:
        """Paint the mouth's interior of a row in place, blended by ``alpha`` (0 closed .. 1 open):
        the warp's painted teeth and cavity (:func:`generators.mouth.paint_mouth`)."""
        paint_mouth(img, landmarks, self.src.colours, alpha, seed)

    def finish(self, img: np.ndarray, landmarks: np.ndarray, record: dict) -> np.ndarray:
        """The rendered row after painting (uint8 RGB, output px); ``record`` may be added to. The
        warp's own: unchanged."""
        return img


@GENERATORS.register("warp", "depth-aware piecewise-affine warp + mouth/eyelid painting + semantic AU appearance (CPU, default)")
class WarpGenerator(Generator):
    name = "warp"
    options = ("appearance",)

    def __init__(self, appearance: AppearanceModel | str | None = None, full_frame_max_side: int = 1024) -> None:
        self.appearance = appearance if isinstance(appearance, AppearanceModel) else load_appearance(appearance)
        self.full_frame_max_side = full_frame_max_side
        self._cache: dict[int, tuple[Any, WarpRenderer]] = {}

    def renderer(self, profile: Any, size: int) -> WarpRenderer:
        """The renderer of one profile at one crop size (the last one is kept: a grid is rendered in
        chunks of the same profile)."""
        cached = self._cache.get(size)
        if cached is None or cached[0] is not profile:
            self._cache = {size: (profile, self.new_renderer(profile, prepare_source(profile, size)))}
        return self._cache[size][1]

    def new_renderer(self, profile: Any, src: PreparedSource) -> WarpRenderer:
        """A per-sample renderer of a prepared source (subclasses return their own)."""
        return WarpRenderer(src, self.appearance, self.name)

    def render(self, profile: Any, rows: Grid | pd.DataFrame, size: int = 256, full_frame: bool = False) -> GeneratedBatch:
        t = as_grid(rows)
        r = self.renderer(profile, size)
        n = len(t)
        images = np.empty((n, size, size, 3), np.uint8)
        lms = np.empty((n, 68, 2), np.float32)
        Ms = np.empty((n, 2, 3), np.float32)
        records = []
        frames = None
        if full_frame:
            h, w = r.src.full_size
            f = min(1.0, self.full_frame_max_side / max(h, w))
            fh, fw = int(round(h * f)), int(round(w * f))
            frames = np.empty((n, fh, fw, 3), np.uint8)
            rf = self.new_renderer(profile, prepare_source(profile, scale=f))
        for i in range(n):
            aus, sem = t.row_aus(i), t.row_semantic(i)
            M = W.crop_transform(t.targets[i], size)
            images[i], lms[i], rec = r.render(t.targets[i], t.pose[i], aus, sem, int(t.seeds[i]), M, (size, size))
            Ms[i] = M
            records.append(rec)
            if frames is not None:
                Mf = np.array([[f, 0, 0], [0, f, 0]], float)
                frames[i] = rf.render(t.targets[i], t.pose[i], aus, sem, int(t.seeds[i]), Mf, (fh, fw))[0]
        return GeneratedBatch(images, lms, Ms, records, frames, self.name)


def generate(profile: Any, grid_rows: Grid | pd.DataFrame, size: int = 256, full_frame: bool = False,
             generator: str | Generator = "warp", **options) -> GeneratedBatch:
    """Render every row of a grid for a person (see the module doc for inputs and outputs).

    generator: a name in :data:`GENERATORS` ('warp', 'warp+refiner') or an instance; ``options``
    go to its constructor (e.g. ``appearance='smile_au06.npz'``, ``refiner='refiner.pt'``).
    """
    if size < 32:
        raise ConfigError(f"size must be at least 32 px, not {size}")
    gen = generator if isinstance(generator, Generator) else GENERATORS.create(generator, **options)
    return gen.render(profile, grid_rows, size=size, full_frame=full_frame)


def records_json(records: list[dict]) -> list[str]:
    return [json.dumps(r, sort_keys=True) for r in records]
