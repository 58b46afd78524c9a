"""Semantic AU appearance: what an AU does to the skin beyond moving landmarks.

Everything lives in a shape-normalised face space: the frontal template of :mod:`generators.warp` at
``CANONICAL`` x ``CANONICAL`` px, where every face has the mean shape. An AU's appearance is a pair of
log-luminance gain fields there (the rendered crop is multiplied by ``exp(gain)`` after the field is
warped onto the target face):

* ``shading``: low-frequency bulges and furrows (a raised cheek brightens its apex and shadows the
  infraorbital furrow), scaled linearly with the level;
* ``texture``: high-frequency wrinkles (crow's feet, chin 'orange peel', glabella furrows, nose-bridge
  wrinkles, nasolabial fold), scaled by ``level ** 0.6``: faint at A (a quarter of E's amplitude),
  clearly there from C (two thirds).

Strengths are the grid's ``sem_AUxx`` columns: a movement level 0..1 (FACS intensity through
:func:`generators.aus.intensity_level`: A = 0.1 ... E = 1).

Plus ``displacements`` of inner mesh points that no landmark describes (cheek apex, infraorbital
points, chin boss), in inter-ocular units at intensity E, for AU6 (cheeks up) and AU17 (chin boss up).
The 68 landmarks are never moved here: where they are the target (a grid row, a driving clip) the
renderer honours them, and AU6's narrowing of the eye from below is its motion field's lower-lid raise
(:mod:`generators.motion`), the one model of it that coding a face (``code_expression``) also uses.

Intensity 0 changes nothing. The procedural fields come in ``N_VARIANTS`` seeded variants per AU; a
sample uses variant ``seed % N_VARIANTS``, so a render is a pure function of its row.
:func:`fit_appearance` learns the shading field and the wrinkle strength of an AU from pairs of
photos of the same people without / with it (e.g. the London neutral / smiling pairs for AU6) and
:meth:`AppearanceModel.save` writes it as ``.npz``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from fewshot.analysis import Analyzer
from fewshot.crop import prescale, transform_scale
from fewshot.errors import InputError, NoFaceError
from fewshot.io import IMAGE_EXTENSIONS, atomic_path, read_image
from fewshot.landmarks import apply_affine, interocular

from . import warp as W
from .aus import intensity_level
from .semantic import SEMANTIC_AUS

CANONICAL = 256
N_VARIANTS = 8
TEXTURE_POWER = 0.6

# Inner mesh-point displacements at intensity E, in inter-ocular units (negative y = up); never a landmark.
_INNER = {n: W.N_LANDMARKS + W.N_EXTRA + i for i, n in enumerate(W.INNER_NAMES)}
DISPLACEMENTS: dict[str, list[tuple[int, float, float]]] = {
    "AU06": [(_INNER["cheek_r"], 0.0, -0.07), (_INNER["cheek_l"], 0.0, -0.07),
             (_INNER["infraorb_r"], 0.0, -0.05), (_INNER["infraorb_l"], 0.0, -0.05)],
    "AU17": [(_INNER["chin_boss"], 0.0, -0.07)],
}


def _tpl() -> np.ndarray:
    return W.template_points(CANONICAL)


def _iod() -> float:
    p = _tpl()
    return float(np.linalg.norm(p[36:42].mean(0) - p[42:48].mean(0)))


def _gauss(centre, sigma: float) -> np.ndarray:
    ys, xs = np.mgrid[0:CANONICAL, 0:CANONICAL].astype(np.float32)
    sx, sy = (sigma, sigma) if np.isscalar(sigma) else sigma
    return np.exp(-(((xs - centre[0]) / sx) ** 2 + ((ys - centre[1]) / sy) ** 2) / 2)


def _curve(pts: np.ndarray, width: float, blur: float) -> np.ndarray:
    m = np.zeros((CANONICAL, CANONICAL), np.float32)
    cv2.polylines(m, [np.round(pts * 16).astype(np.int32)], False, 1.0, max(1, int(round(width))), cv2.LINE_AA, shift=4)
    if blur > 0:
        m = cv2.GaussianBlur(m, (0, 0), blur)
    return m


def _wrinkle(pts: np.ndarray, depth: float, width: float = 1.0, normal_px: float = 1.4) -> np.ndarray:
    """A fold: dark core along ``pts`` with a faint highlight on one side (relief lit from above)."""
    core = _curve(pts, width, 0.6)
    d = np.diff(pts, axis=0).mean(0)
    n = np.array([d[1], -d[0]]) / max(np.linalg.norm(d), 1e-6)
    if n[1] > 0:
        n = -n  # highlight on the upper side
    hi = _curve(pts + n * normal_px, width, 0.9)
    return -depth * core + 0.35 * depth * hi


def _arc(p0, p1, bend: float, n: int = 12) -> np.ndarray:
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    t = np.linspace(0, 1, n)[:, None]
    d = p1 - p0
    normal = np.array([-d[1], d[0]])
    return p0 + t * d + (4 * t * (1 - t)) * bend * normal


def _bandpass_noise(rng: np.random.Generator, cell: float) -> np.ndarray:
    n = rng.standard_normal((CANONICAL, CANONICAL)).astype(np.float32)
    fine = cv2.GaussianBlur(n, (0, 0), cell)
    coarse = cv2.GaussianBlur(n, (0, 0), cell * 3)
    b = fine - coarse
    return b / max(float(b.std()), 1e-6)


def mesh_displacements(sem: dict[str, float], iod: float) -> list[tuple[int, np.ndarray]]:
    """Mesh point displacements (px) of :data:`DISPLACEMENTS` for semantic levels {AU: 0..1}, given the
    face's inter-ocular distance (px)."""
    out = []
    for au, moves in DISPLACEMENTS.items():
        x = min(float(sem.get(au, 0.0) or 0.0), 1.0)
        if x > 0:
            out += [(i, np.array([dx, dy]) * x * iod) for i, dx, dy in moves]
    return out


@dataclass(frozen=True)
class RegionMasks:
    """Soft masks (CANONICAL x CANONICAL float32 in [0, 1]) of the face regions AUs act on."""

    masks: dict[str, np.ndarray]

    def __getitem__(self, k: str) -> np.ndarray:
        return self.masks[k]


@lru_cache(maxsize=1)
def region_masks() -> RegionMasks:
    p = _tpl()
    iod = _iod()
    out: dict[str, np.ndarray] = {}

    def poly(pts, blur=3.0):
        m = np.zeros((CANONICAL, CANONICAL), np.float32)
        cv2.fillPoly(m, [np.round(np.asarray(pts) * 16).astype(np.int32)], 1.0, cv2.LINE_AA, shift=4)
        return cv2.GaussianBlur(m, (0, 0), blur)

    eyes = np.maximum(poly(p[36:42], 1.0), poly(p[42:48], 1.0))
    for side, (outer, lid, nose, jaw) in {"r": (36, [41, 40, 39], 31, [1, 2, 3]), "l": (45, [46, 47, 42], 35, [15, 14, 13])}.items():
        sgn = -1 if side == "r" else 1
        cheek = [p[lid[0]] + [0, 0.08 * iod], p[lid[1]] + [0, 0.08 * iod], p[lid[2]] + [0, 0.1 * iod], p[nose], p[jaw[2]] * 0.5 + p[nose] * 0.5, p[jaw[1]], p[jaw[0]]]
        out[f"cheek_{side}"] = poly(cheek, 4.0)
        c = p[outer] + [sgn * 0.22 * iod, 0.02 * iod]
        out[f"crows_{side}"] = _gauss(c, (0.17 * iod, 0.2 * iod))
        lower = p[[outer, lid[0], lid[1], lid[2]]]
        out[f"infraorb_{side}"] = poly(np.concatenate([lower, lower[::-1] + [0, 0.28 * iod]]), 3.0)
    out["cheeks"] = np.maximum(out["cheek_r"], out["cheek_l"])
    out["crows_feet"] = np.maximum(out["crows_r"], out["crows_l"])
    out["infraorbital"] = np.maximum(out["infraorb_r"], out["infraorb_l"])
    out["eyes"] = eyes
    au6 = np.maximum.reduce([out["cheeks"], out["crows_feet"], out["infraorbital"]])
    out["AU06"] = au6 * (1 - eyes)
    chin = [p[57], p[58] * 0.5 + p[7] * 0.5, p[7], p[8], p[9], p[56] * 0.5 + p[9] * 0.5]
    out["chin"] = poly(chin, 3.0)
    out["AU17"] = out["chin"]
    out["glabella"] = _gauss((p[21] + p[22]) / 2 + [0, 0.02 * iod], (0.16 * iod, 0.22 * iod))
    out["nose_bridge"] = _gauss(p[27] * 0.6 + p[28] * 0.4, (0.18 * iod, 0.12 * iod))
    out["nasolabial"] = np.maximum(poly([p[31], p[48], p[48] + [-0.18 * iod, 0.05 * iod], p[31] + [-0.3 * iod, 0]]),
                                   poly([p[35], p[54], p[54] + [0.18 * iod, 0.05 * iod], p[35] + [0.3 * iod, 0]]))
    out["AU04"], out["AU09"], out["AU10"] = out["glabella"], out["nose_bridge"], out["nasolabial"]
    return RegionMasks(out)


# -- procedural fields -----------------------------------------------------------------------------

def _au06(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    # Shading placed where the London neutral -> smiling pairs put it (see fit_appearance): the bulging
    # cheek lit below the eye, its shadow against the nose wing (top of the nasolabial furrow), a
    # darker nasojugal groove at the inner lower lid and the infraorbital furrow under the lid.
    p, iod = _tpl(), _iod()
    shade = np.zeros((CANONICAL, CANONICAL), np.float32)
    tex = np.zeros_like(shade)
    for outer, inner, lid, wing, sgn in ((36, 39, [41, 40], 31, -1), (45, 42, [46, 47], 35, 1)):
        shade += 0.055 * _gauss(p[wing] + np.array([sgn * 0.38, -0.16]) * iod, 0.12 * iod)
        shade -= 0.14 * _gauss(p[wing] + np.array([sgn * 0.18, -0.04]) * iod, (0.055 * iod, 0.11 * iod))
        shade -= 0.06 * _gauss(p[inner] + np.array([sgn * 0.02, 0.13]) * iod, 0.07 * iod)
        lower = np.array([p[outer], *p[lid], p[inner]])
        shade += _wrinkle(lower + [0, 0.13 * iod], 0.05, width=2, normal_px=2.5)
        tex += _wrinkle(lower + [0, 0.1 * iod], 0.16, width=1)
        tex += _wrinkle(lower + [0, 0.2 * iod], 0.1, width=1)
        # crow's feet: a fan of folds from the outer corner
        n_lines = 5 + rng.integers(0, 3)
        angles = np.sort(rng.uniform(-0.7, 0.45, n_lines)) + rng.normal(0, 0.05, n_lines)
        for a in angles:
            start = p[outer] + sgn * np.array([0.07, 0.0]) * iod
            length = iod * rng.uniform(0.16, 0.3)
            end = start + length * np.array([sgn * np.cos(a), np.sin(a)])
            tex += _wrinkle(_arc(start, end, rng.uniform(-0.08, 0.08)), rng.uniform(0.34, 0.46))
    m = region_masks()
    tex += 0.07 * _bandpass_noise(rng, 0.8) * m["crows_feet"]
    return shade * (1 - m["eyes"]), tex * (1 - m["eyes"])


def _au17(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    p, iod = _tpl(), _iod()
    m = region_masks()
    boss = p[57] * 0.45 + p[8] * 0.55
    shade = 0.09 * _gauss(boss + [0, -0.05 * iod], (0.22 * iod, 0.13 * iod))
    sulcus = _arc(p[58] * 0.6 + p[7] * 0.4, p[56] * 0.6 + p[9] * 0.4, -0.12)
    shade += _wrinkle(sulcus, 0.08, width=2, normal_px=2.5)
    peel = _bandpass_noise(rng, 1.1)
    dimples = (np.minimum(peel, 0.0) * 0.6 + np.maximum(peel, 0.0) * 0.4) * 0.09  # pits a little deeper than bumps
    tex = dimples * m["chin"]
    return shade.astype(np.float32), tex.astype(np.float32)


def _au04(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    p, iod = _tpl(), _iod()
    c = (p[21] + p[22]) / 2
    shade = -0.05 * _gauss(c + [0, 0.05 * iod], (0.35 * iod, 0.12 * iod))
    tex = np.zeros_like(shade)
    for dx in (-0.07, 0.07) if rng.random() < 0.5 else (-0.08, 0.0, 0.08):
        top = c + [dx * iod + rng.normal(0, 0.01) * iod, -0.12 * iod]
        tex += _wrinkle(_arc(top, top + [dx * 0.3 * iod, 0.26 * iod], rng.uniform(-0.1, 0.1)), 0.18, normal_px=1.2)
    return shade.astype(np.float32), tex.astype(np.float32)


def _au09(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    p, iod = _tpl(), _iod()
    shade = -0.04 * _gauss(p[28], (0.2 * iod, 0.15 * iod))
    tex = np.zeros_like(shade)
    for k in range(3 + rng.integers(0, 2)):
        y = p[27, 1] + (k * 0.055 + rng.uniform(-0.01, 0.01)) * iod
        half = rng.uniform(0.08, 0.12) * iod
        tex += _wrinkle(_arc([p[27, 0] - half, y], [p[27, 0] + half, y], 0.15), 0.16)
    return shade.astype(np.float32), tex.astype(np.float32)


def _au10(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    p, iod = _tpl(), _iod()
    shade = np.zeros((CANONICAL, CANONICAL), np.float32)
    tex = np.zeros_like(shade)
    for wing, corner, sgn in ((31, 48, -1), (35, 54, 1)):
        start = p[wing] + [sgn * 0.1 * iod, -0.05 * iod]
        end = p[corner] + [sgn * 0.1 * iod, 0.05 * iod]
        fold = _arc(start, end, sgn * 0.12)
        shade += _wrinkle(fold, 0.1, width=3, normal_px=3.0)
        tex += _wrinkle(fold, 0.08, width=1)
    return shade, tex


# one procedural appearance per semantic channel of generators.semantic
PROCEDURAL = {"AU04": _au04, "AU06": _au06, "AU09": _au09, "AU10": _au10, "AU17": _au17}


@lru_cache(maxsize=len(PROCEDURAL) * N_VARIANTS)
def procedural_fields(au: str, variant: int) -> tuple[np.ndarray, np.ndarray]:
    """(shading, texture) log-gain fields of an AU at intensity E, CANONICAL x CANONICAL float32."""
    rng = np.random.default_rng([int(au[2:]), variant, 20240917])
    shade, tex = PROCEDURAL[au](rng)
    return shade.astype(np.float32), tex.astype(np.float32)


# -- the model used by the generator -----------------------------------------------------------------

@dataclass
class AppearanceModel:
    """Per-AU appearance: procedural by default; learned shading / texture strength where fitted.

    learned_shading: AU -> CANONICAL x CANONICAL log-gain at intensity E (replaces the procedural one).
    texture_scale: AU -> multiplier of the procedural wrinkle texture.
    """

    learned_shading: dict[str, np.ndarray] = field(default_factory=dict)
    texture_scale: dict[str, float] = field(default_factory=dict)
    source: str = "procedural"
    meta: dict = field(default_factory=dict)

    def how(self, au: str) -> str:
        return f"learned:{self.source}" if au in self.learned_shading else "procedural"

    def gain(self, sem: dict[str, float], seed: int) -> np.ndarray | None:
        """Summed log-gain field for semantic levels {AU: 0..1}; None when all are 0."""
        total = None
        v = int(seed) % N_VARIANTS
        for au, inten in sem.items():
            if au not in PROCEDURAL or not inten or inten <= 0:
                continue
            x = min(float(inten), 1.0)
            shade, tex = procedural_fields(au, v)
            shade = self.learned_shading.get(au, shade)
            g = x * shade + (x**TEXTURE_POWER * self.texture_scale.get(au, 1.0)) * tex
            total = g if total is None else total + g
        return total

    def displacements(self, sem: dict[str, float], iod: float) -> list[tuple[int, np.ndarray]]:
        """Mesh point displacements (px) for semantic levels {AU: 0..1}: :func:`mesh_displacements`."""
        return mesh_displacements(sem, iod)

    def save(self, path: str | Path) -> None:
        arrays = {f"shading_{k}": v.astype(np.float32) for k, v in self.learned_shading.items()}
        meta = {**self.meta, "texture_scale": self.texture_scale, "canonical": CANONICAL}
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, meta=np.array(json.dumps(meta)), **arrays)


def _read_fields(p: Path, prefix: str, what: str, command: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(meta, {name: float32 field}) of a fields .npz written by :meth:`AppearanceModel.save` or
    :meth:`ExpressionTexture.save` (arrays named ``prefix + name``); InputError naming ``what`` and the
    ``command`` that writes one otherwise."""
    try:
        with np.load(p, allow_pickle=False) as d:
            meta = json.loads(str(d["meta"]))
            fields = {k[len(prefix):]: d[k].astype(np.float32) for k in d.files if k.startswith(prefix)}
    except FileNotFoundError:
        raise InputError(f"{p}: no such {what}; create one with '{command}'") from None
    except Exception as e:  # zip / json / key errors all mean the same thing to the user
        raise InputError(f"{p}: not a fewshot {what} ({type(e).__name__}); re-run '{command}'") from None
    return meta, fields


def load_appearance(path: str | Path | None) -> AppearanceModel:
    """The procedural model (path None) or a learned one saved by :func:`fit_appearance`."""
    if path is None:
        return AppearanceModel()
    p = Path(path)
    meta, shading = _read_fields(p, "shading_", "appearance file", "fewshot fit-appearance")
    if meta.get("canonical") != CANONICAL or any(v.shape != (CANONICAL, CANONICAL) for v in shading.values()):
        raise InputError(f"{p}: appearance fields are not {CANONICAL}x{CANONICAL}; re-run 'fewshot fit-appearance'")
    return AppearanceModel(shading, {k: float(v) for k, v in meta.get("texture_scale", {}).items()}, p.name, meta)


# -- learning from pairs -------------------------------------------------------------------------------

def to_canonical(image: np.ndarray, landmarks: np.ndarray, rotation: np.ndarray | None = None,
                 sem: dict[str, float] | None = None) -> np.ndarray:
    """Warp a uint8 RGB face (68 landmarks, px) into the shape-normalised CANONICAL space.

    ``sem``: semantic AU levels the face shows; their mesh displacements (:data:`DISPLACEMENTS`, as the
    renderer applies them) are followed, so that what is left is the skin change beyond that motion."""
    R = np.eye(3) if rotation is None else rotation
    M = W.crop_transform(landmarks, CANONICAL)
    image, f = prescale(image, transform_scale(M))
    src_face = W.face_points(landmarks, R)
    if sem:
        for i, d in mesh_displacements(sem, float(interocular(landmarks))):  # inner points only
            src_face[i] += d
    border_src = apply_affine(W.invert_affine(M), W.border_points(CANONICAL))
    src = W.to_prescaled(np.concatenate([src_face, border_src]), f)
    dst = _tpl()
    mesh = W.mesh()
    ids = W.rasterise(dst, mesh.triangles, np.arange(len(mesh.triangles)), CANONICAL)
    mx, my = W.dense_map(ids, W.triangle_affines(dst, src, mesh.triangles))
    return cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def log_luminance(rgb: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return np.log(g + 8.0)


def highpass(x: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    return x - cv2.GaussianBlur(x, (0, 0), sigma)


def fit_appearance(
    pairs: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    au: str = "AU06",
    intensity: float | Sequence[float] = 3.0,
    names: Sequence[str] | None = None,
    shrink_t: float = 2.0,
) -> AppearanceModel:
    """Learn an AU's shading field and wrinkle strength from (image_without, landmarks_without,
    image_with, landmarks_with) pairs of the same people (uint8 RGB, (68, 2) px, roughly frontal).

    Both images of a pair are warped into the shape-normalised space; the mean (with - without)
    log-luminance difference inside the AU's region mask, low-passed, regressed on the pairs' movement
    levels (:func:`generators.aus.intensity_level` of ``intensity``: FACS 0..5, one for all pairs or
    one per pair, e.g. coded frames of DISFA/BP4D) is the shading at level 1 (E).
    The wrinkle strength is the high-frequency energy the AU adds in that region over what the
    procedural texture gives at the same intensity.
    """
    if not pairs:
        raise InputError("fit_appearance needs at least one (without, with) pair of photos")
    levels = np.broadcast_to(np.asarray(intensity, float), (len(pairs),))
    if not (levels > 0).all():
        raise InputError(f"fit_appearance: every pair needs {au} on (intensity > 0), got {levels.min():g}")
    xs = np.array([float(intensity_level(v)) for v in levels])
    m = region_masks()[au]
    diffs, hf_gain = [], []
    for (img0, lm0, img1, lm1), x in zip(pairs, xs):
        # the renderer moves the mesh for this AU (cheek apex, chin boss up): learn only what is left
        a, b = log_luminance(to_canonical(img0, lm0)), log_luminance(to_canonical(img1, lm1, sem={au: x}))
        d = b - a
        # remove a global exposure change between the two photos (median over the whole face)
        d -= np.median(d)
        diffs.append(d)
        ha, hb = highpass(a), highpass(b)
        w = m / m.sum()
        hf_gain.append(max(float((w * hb**2).sum() - (w * ha**2).sum()), 0.0))
    # least squares through the origin, per pixel: shading at E = sum x_i d_i / sum x_i^2, then shrunk
    # towards 0 where the pairs disagree (James-Stein-like factor 1 - t0^2 / t^2 on the slope's t
    # statistic): what is left is the change people share, not one person's folds or lid edges.
    D = np.stack([cv2.GaussianBlur(d.astype(np.float32), (0, 0), 2.5) for d in diffs])
    sxx = float((xs**2).sum())
    fit = np.tensordot(xs, D, axes=1) / sxx
    if len(pairs) >= 3 and shrink_t > 0:
        resid = D - xs[:, None, None] * fit[None]
        se2 = (resid**2).sum(0) / (len(pairs) - 1) / sxx
        fit = fit * np.clip(1.0 - shrink_t**2 * se2 / np.maximum(fit**2, 1e-12), 0.0, 1.0)
    shading = fit.astype(np.float32) * m
    # procedural texture's HF energy at the pairs' levels, measured the same way (it scales as x^(2p))
    tex_1 = np.mean([float((m / m.sum() * highpass(procedural_fields(au, v)[1]) ** 2).sum()) for v in range(N_VARIANTS)])
    tex_e = tex_1 * float(np.sum(xs ** (2 * TEXTURE_POWER)))
    scale = float(np.sqrt(np.sum(hf_gain) / max(tex_e, 1e-12)))
    meta = {"au": au, "intensity": [float(v) for v in levels] if np.ndim(intensity) else float(intensity),
            "n_pairs": len(pairs), "trained_on": list(names or [])}
    return AppearanceModel({au: shading.astype(np.float32)}, {au: scale}, "fitted", meta)


def pair_photos(without: str | Path, with_: str | Path) -> list[tuple[str, Path, Path]]:
    """Match photos of two folders by identity: the file name up to its first '_' (the London Set's
    ``001_03.jpg`` / ``001_08.jpg``), else the whole stem. Returns (identity, without, with) sorted."""
    def index(d: Path) -> dict[str, Path]:
        if not d.is_dir():
            raise InputError(f"{d}: not a folder of photos")
        return {f.stem.split("_")[0]: f for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_EXTENSIONS}

    a, b = index(Path(without)), index(Path(with_))
    common = sorted(set(a) & set(b))
    if not common:
        raise InputError(f"{without} and {with_}: no photos of the same identity (match by the name before '_')")
    return [(k, a[k], b[k]) for k in common]


def read_intensities(path: str | Path, au: str) -> dict[str, float]:
    """{identity: FACS intensity} from a CSV with an ``identity`` column and an ``au`` column."""
    import pandas as pd

    p = Path(path)
    try:
        t = pd.read_csv(p, dtype={"identity": str})
    except FileNotFoundError:
        raise InputError(f"{p}: no such intensities file") from None
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise InputError(f"{p}: not a readable CSV ({type(e).__name__})") from None
    missing = [c for c in ("identity", au) if c not in t.columns]
    if missing:
        raise InputError(f"{p}: needs column(s) {', '.join(missing)} (one row per identity, {au} as FACS 0-5)")
    v = pd.to_numeric(t[au], errors="coerce")
    if v.isna().any() or not v.between(0, 5).all():
        raise InputError(f"{p}: {au} must be numbers within 0..5")
    return dict(zip(t["identity"].astype(str), v.astype(float)))


def _read_pairs(pairs, landmarks: dict | None = None) -> list[tuple]:
    """(img0, lm0, img1, lm1) of :func:`pair_photos` rows, landmarks detected where not supplied."""
    analyzer = None
    data = []
    for _ident, p0, p1 in pairs:
        item = []
        for p in (p0, p1):
            img = read_image(p)
            lm = (landmarks or {}).get(str(p))
            if lm is None:
                analyzer = analyzer or Analyzer(embed=False)
                faces = analyzer.analyze_image(img, str(p))
                if not faces:
                    raise NoFaceError(f"{p}: no face found; remove the pair or use another photo")
                lm = faces[0].landmarks
            item += [img, lm]
        data.append(tuple(item))
    return data


def fit_appearance_from_folders(
    without: str | Path,
    with_: str | Path,
    au: str = "AU06",
    intensity: float | dict[str, float] = 3.0,
    identities: Sequence[str] | None = None,
    landmarks: dict[str, np.ndarray] | None = None,
) -> AppearanceModel:
    """:func:`fit_appearance` on photo pairs matched by :func:`pair_photos` (optionally only
    ``identities``); ``intensity``: one FACS value for all pairs or {identity: value};
    ``landmarks`` may supply precomputed (68, 2) landmarks keyed by file path."""
    if au not in SEMANTIC_AUS:
        raise InputError(f"--au must be one of {', '.join(sorted(SEMANTIC_AUS))}, not {au!r}")
    pairs = pair_photos(without, with_)
    if identities is not None:
        keep = set(identities)
        pairs = [p for p in pairs if p[0] in keep]
    if isinstance(intensity, dict):  # before any photo is read
        missing = [p[0] for p in pairs if p[0] not in intensity]
        if missing:
            raise InputError(f"no {au} intensity for identit{'y' if len(missing) == 1 else 'ies'} {', '.join(missing[:5])}")
        intensity = [float(intensity[p[0]]) for p in pairs]
    return fit_appearance(_read_pairs(pairs, landmarks), au=au, intensity=intensity, names=[p[0] for p in pairs])


# -- learned expression texture ------------------------------------------------------------------------

TEXTURE_AUS = ("AU06", "AU12")  # what a neutral / smiling pair of photos shows
TEXTURE_SIGMA = 1.0  # px at CANONICAL: the learned field keeps folds and crow's feet, not the pixel noise
TEXTURE_LIMIT = 0.35  # |log-gain| at intensity E is at most this (a fold darkens to ~70%)


@lru_cache(maxsize=1)
def texture_regions() -> dict[str, np.ndarray]:
    """Soft CANONICAL x CANONICAL masks splitting the face skin between :data:`TEXTURE_AUS`: the skin
    inside the jaw contour and just above the brows, without the eyes and the mouth opening (where a
    photo pair differs by what is seen, not by the skin), is AU6's above the middle of the nose
    (landmark 29: crow's feet, lower lids, the infraorbital furrow) and AU12's below (the raised
    cheeks' apex, nasolabial folds from the nose wings down, mouth corners, lower cheeks, chin),
    blended over a tenth of the inter-ocular distance."""
    p = _tpl()
    iod = _iod()

    def poly(pts, blur):
        m = np.zeros((CANONICAL, CANONICAL), np.float32)
        cv2.fillPoly(m, [np.round(np.asarray(pts) * 16).astype(np.int32)], 1.0, cv2.LINE_AA, shift=4)
        return cv2.GaussianBlur(m, (0, 0), blur) if blur > 0 else m

    skin = poly(np.vstack([p[0:17], (p[17:27] - [0, 0.12 * iod])[::-1]]), 0.04 * iod)
    eye_r = p[36:42].mean(0) + (p[36:42] - p[36:42].mean(0)) * 1.25
    eye_l = p[42:48].mean(0) + (p[42:48] - p[42:48].mean(0)) * 1.25
    mouth = p[60:68].mean(0) + (p[60:68] - p[60:68].mean(0)) * [1.05, 1.8]
    holes = np.maximum.reduce([poly(eye_r, 0.03 * iod), poly(eye_l, 0.03 * iod), poly(mouth, 0.03 * iod)])
    face = np.clip(skin * (1.0 - np.clip(1.5 * holes, 0, 1)), 0, 1)
    ys = np.arange(CANONICAL, dtype=np.float32)[:, None]
    split = float(p[29, 1])
    lower = np.clip(0.5 + (ys - split) / (0.1 * iod), 0.0, 1.0) * np.ones((1, CANONICAL), np.float32)
    return {"AU06": face * (1.0 - lower), "AU12": face * lower}


@dataclass
class ExpressionTexture:
    """The skin change of AUs learned from photos of the same people without / with them: per AU a
    CANONICAL x CANONICAL log-luminance gain at intensity E (folds darker, bulges brighter), scaled
    linearly with the movement level (:func:`generators.aus.intensity_level`). Applied to every channel
    after the field is warped onto the rendered face, like the procedural fields."""

    fields: dict[str, np.ndarray]
    meta: dict = field(default_factory=dict)

    def how(self, au: str) -> str:
        return f"learned-texture:{self.meta.get('source', '?')}" if au in self.fields else "none"

    def gain(self, aus: dict[str, float]) -> np.ndarray | None:
        """Summed log-gain of FACS intensities {AU: 0..5}; None when no learned AU is on."""
        total = None
        for au, f in self.fields.items():
            x = float(intensity_level(aus.get(au, 0.0) or 0.0))
            if x > 0:
                total = x * f if total is None else total + x * f
        return total

    def save(self, path: str | Path) -> None:
        meta = {**self.meta, "kind": "expression_texture", "canonical": CANONICAL}
        arrays = {f"texture_{k}": v.astype(np.float16) for k, v in self.fields.items()}
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, meta=np.array(json.dumps(meta)), **arrays)


def load_texture(path: str | Path) -> ExpressionTexture:
    """An :class:`ExpressionTexture` saved by :meth:`ExpressionTexture.save`."""
    p = Path(path)
    meta, fields = _read_fields(p, "texture_", "expression texture", "fewshot fit-appearance --texture")
    if meta.get("kind") != "expression_texture" or meta.get("canonical") != CANONICAL or not fields \
            or any(v.shape != (CANONICAL, CANONICAL) for v in fields.values()):
        raise InputError(f"{p}: not a {CANONICAL}x{CANONICAL} expression texture; re-run 'fewshot fit-appearance --texture'")
    return ExpressionTexture(fields, meta)


def fit_expression_texture(
    pairs: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    levels: Sequence[dict[str, float]],
    names: Sequence[str] | None = None,
    source: str = "pairs",
    shrink_t: float = 2.0,
) -> ExpressionTexture:
    """Learn :data:`TEXTURE_AUS`' skin change from (image_without, landmarks_without, image_with,
    landmarks_with) pairs of the same people (uint8 RGB, (68, 2) px, roughly frontal) and the FACS
    intensities each 'with' photo shows (``levels``: one {AU: 0..5} per pair, e.g. coded by
    :func:`generators.code_expression`, or DISFA/BP4D labels).

    Both photos of a pair go into the shape-normalised space on their own landmarks (the landmark
    motion is the renderer's; what is left is the skin); their log-luminance difference, less its
    median (the exposure change between the photos), lightly smoothed (:data:`TEXTURE_SIGMA`), is
    regressed per pixel through the origin on the pair's movement level of the AU whose region
    (:func:`texture_regions`) the pixel is in, shrunk towards 0 where the pairs disagree (factor
    ``1 - t0^2 / t^2`` on the slope's t statistic, ``t0 = shrink_t``): what is left is the change
    people share, not one person's moles, lid edges or hair."""
    if not pairs:
        raise InputError("fit_expression_texture needs at least one (without, with) pair of photos")
    if len(levels) != len(pairs):
        raise InputError(f"fit_expression_texture: {len(pairs)} pairs but {len(levels)} intensity records")
    X = np.array([[float(intensity_level(lv.get(au, 0.0) or 0.0)) for au in TEXTURE_AUS] for lv in levels])
    D = []
    for img0, lm0, img1, lm1 in pairs:
        d = log_luminance(to_canonical(img1, lm1)) - log_luminance(to_canonical(img0, lm0))
        D.append(cv2.GaussianBlur((d - np.median(d)).astype(np.float32), (0, 0), TEXTURE_SIGMA))
    D = np.stack(D)
    regions = texture_regions()
    fields = {}
    for k, au in enumerate(TEXTURE_AUS):
        x = X[:, k]
        sxx = float((x**2).sum())
        if sxx <= 0:
            continue
        fit = np.tensordot(x, D, axes=1) / sxx
        if len(pairs) >= 3 and shrink_t > 0:
            se2 = ((D - x[:, None, None] * fit[None]) ** 2).sum(0) / (len(pairs) - 1) / sxx
            fit = fit * np.clip(1.0 - shrink_t**2 * se2 / np.maximum(fit**2, 1e-12), 0.0, 1.0)
        fields[au] = (np.clip(fit, -TEXTURE_LIMIT, TEXTURE_LIMIT) * regions[au]).astype(np.float32)
    if not fields:
        raise InputError(f"fit_expression_texture: no pair shows {' or '.join(TEXTURE_AUS)} (all intensities 0)")
    meta = {"source": source, "aus": list(fields), "n_pairs": len(pairs), "trained_on": list(names or []),
            "mean_level": {au: float(X[:, k].mean()) for k, au in enumerate(TEXTURE_AUS)}, "sigma_px": TEXTURE_SIGMA,
            "shrink_t": shrink_t}
    return ExpressionTexture(fields, meta)


def fit_texture_from_folders(
    without: str | Path,
    with_: str | Path,
    intensity: float | dict[str, dict[str, float]] = 3.0,
    identities: Sequence[str] | None = None,
    landmarks: dict[str, np.ndarray] | None = None,
) -> ExpressionTexture:
    """:func:`fit_expression_texture` on photo pairs matched by :func:`pair_photos`; ``intensity``: one
    FACS value for every AU of :data:`TEXTURE_AUS` in every pair, or {AU: {identity: value}}."""
    pairs = pair_photos(without, with_)
    if identities is not None:
        keep = set(identities)
        pairs = [p for p in pairs if p[0] in keep]
    if isinstance(intensity, dict):
        missing = sorted({p[0] for p in pairs for au in TEXTURE_AUS if p[0] not in intensity.get(au, {})})
        if missing:
            raise InputError(f"no {'/'.join(TEXTURE_AUS)} intensities for identit{'y' if len(missing) == 1 else 'ies'} "
                             f"{', '.join(missing[:5])}")
        levels = [{au: float(intensity[au][p[0]]) for au in TEXTURE_AUS} for p in pairs]
    else:
        levels = [{au: float(intensity) for au in TEXTURE_AUS} for _ in pairs]
    return fit_expression_texture(_read_pairs(pairs, landmarks), levels, names=[p[0] for p in pairs], source=Path(with_).name)
