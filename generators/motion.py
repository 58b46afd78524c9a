"""AU motion model: per Action Unit a 3D displacement field over the 68 landmarks.

Coordinates are the head frame of :func:`fewshot.pose.mean_face_3d` (x to the image right = the
subject's left, y down, z away from the camera, nose tip at the origin). Displacements are in units of
the face's inter-ocular distance (eye centre to eye centre). Each AU's field is its movement at
intensity E; a lower intensity scales it by :func:`generators.aus.intensity_level` (FACS's unequal
A..E bands), and the AUs of one expression add up. :func:`constrain_shapes` then projects the result
back to a plausible face: eyelids never cross, the upper lip never drops below the lower lip, and the
inner lips touch unless a mouth-opening AU (25, 26, 27) is on.

The shipped defaults (:func:`default_motion_model`) are written by hand from the FACS manual's
descriptions of each AU's appearance changes; :func:`fit_motion` learns fields from tracked landmarks
and intensity labels (DISFA, BP4D) by regularised least squares towards those defaults;
:func:`generators.facemodel.ict_motion_model` takes them from the ICT-FaceKit expression shapes
(shipped as ``generators/data/ict_motion.npz``, ``--motion`` of ``fewshot design`` / ``adapt``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fewshot.errors import ConfigError, InputError
from fewshot.io import atomic_path
from fewshot.landmarks import N_POINTS, STABLE, apply_affine, interocular, similarity_transform
from fewshot.pose import mean_face_3d

from .aus import AU_CODES, MOUTH_OPENING, au_code, intensity_level

# Facing pairs for the constraints (0-based iBUG indices).
UPPER_LID = np.array([37, 38, 43, 44])
LOWER_LID = np.array([41, 40, 47, 46])
UPPER_INNER_LIP = np.array([61, 62, 63])
LOWER_INNER_LIP = np.array([67, 66, 65])
UPPER_OUTER_LIP = np.array([50, 51, 52])
LOWER_OUTER_LIP = np.array([58, 57, 56])

# -- default fields, from FACS descriptions ------------------------------------------------------------
# Per AU: (points, outward, down, back) at intensity E, in inter-ocular units. "outward" is away from
# the midline (mirrored by side), "down" is +y, "back" is +z (away from the camera).
_O, _D, _B = 0, 1, 2
_DEFAULT_SPEC: dict[str, list[tuple[tuple[int, ...], float, float, float]]] = {
    # inner brows drawn up (and slightly together): raises the medial brow, oblique brow shape
    "AU01": [((21, 22), -0.01, -0.10, 0), ((20, 23), 0, -0.07, 0), ((19, 24), 0, -0.04, 0), ((18, 25), 0, -0.02, 0)],
    # outer brows drawn up, arching the lateral brow
    "AU02": [((17, 26), 0, -0.10, 0), ((18, 25), 0, -0.09, 0), ((19, 24), 0, -0.06, 0), ((20, 23), 0, -0.03, 0),
             ((21, 22), 0, -0.01, 0), ((37, 38, 43, 44), 0, -0.005, 0)],
    # brows lowered and pulled together; upper lid pushed down a little
    "AU04": [((21, 22), -0.04, 0.07, 0), ((20, 23), -0.03, 0.06, 0), ((19, 24), -0.02, 0.05, 0), ((18, 25), -0.01, 0.04, 0),
             ((17, 26), 0, 0.03, 0), ((37, 38, 43, 44), 0, 0.012, 0)],
    # upper lid raised, widening the eye opening
    "AU05": [((37, 38, 43, 44), 0, -0.06, 0), ((36, 39, 42, 45), 0, -0.005, 0)],
    # cheeks lifted: lower lids pushed up (the whole lid raise: the AU6 skin of generators.appearance
    # moves no landmark), crow's feet at the outer corners, lip corners lifted a little
    "AU06": [((40, 41, 46, 47), 0, -0.06, 0), ((36, 45), 0.0, -0.012, 0), ((37, 38, 43, 44), 0, 0.01, 0),
             ((17, 26), 0, 0.012, 0), ((48, 54, 60, 64), 0.005, -0.015, 0), ((31, 35), 0.005, -0.008, 0)],
    # lids tightened: lower lid raised and straightened, upper lid lowered slightly
    "AU07": [((40, 41, 46, 47), -0.005, -0.04, 0), ((37, 38, 43, 44), 0, 0.015, 0), ((36, 45), 0, -0.005, 0)],
    # nose wrinkled: alae and upper lip pulled up, inner brows lowered by the procerus
    "AU09": [((31, 35), 0.005, -0.045, 0), ((32, 34), 0, -0.04, 0), ((33,), 0, -0.03, 0), ((29, 30), 0, -0.012, 0),
             ((21, 22), -0.01, 0.035, 0), ((20, 23), 0, 0.02, 0), ((40, 41, 46, 47), 0, -0.015, 0),
             ((49, 50, 51, 52, 53), 0, -0.025, 0), ((61, 62, 63), 0, -0.02, 0), ((48, 54, 60, 64), 0, -0.01, 0)],
    # upper lip raised (centre most), deepening the nasolabial furrow, alae widened
    "AU10": [((50, 51, 52), 0, -0.07, -0.01), ((49, 53), 0.005, -0.06, 0), ((61, 62, 63), 0, -0.06, 0),
             ((48, 54, 60, 64), 0.01, -0.025, 0), ((31, 35), 0.01, -0.015, 0), ((32, 33, 34), 0, -0.01, 0)],
    # lip corners pulled obliquely up and back; lower lip stretched, upper lip follows the corners
    "AU12": [((48, 54), 0.10, -0.13, 0.04), ((60, 64), 0.09, -0.12, 0.04), ((49, 53), 0.06, -0.085, 0.02),
             ((59, 55), 0.065, -0.045, 0.02), ((50, 52), 0.025, -0.055, 0.01), ((58, 56), 0.025, -0.005, 0.01),
             ((51,), 0, -0.045, 0), ((57,), 0, 0.0, 0), ((61, 63), 0.03, -0.065, 0), ((62,), 0, -0.055, 0),
             ((67, 65), 0.03, -0.03, 0), ((66,), 0, -0.015, 0), ((31, 35), 0.01, -0.01, 0)],
    # lip corners tightened inward and back (dimple)
    "AU14": [((48, 54), -0.025, -0.01, 0.04), ((60, 64), -0.02, -0.01, 0.03), ((49, 53, 59, 55), -0.012, 0, 0.02)],
    # lip corners pulled down
    "AU15": [((48, 54), 0.01, 0.07, 0), ((60, 64), 0.005, 0.06, 0), ((59, 55), 0, 0.04, 0), ((49, 53), 0, 0.03, 0),
             ((58, 56), 0, 0.02, 0), ((67, 65), 0, 0.02, 0)],
    # chin boss pushed up, lower lip pushed up and out
    "AU17": [((7, 8, 9), 0, -0.04, 0), ((6, 10), 0, -0.02, 0), ((56, 57, 58), 0, -0.045, -0.02), ((55, 59), 0, -0.03, -0.01),
             ((65, 66, 67), 0, -0.035, 0), ((50, 51, 52, 61, 62, 63), 0, -0.015, 0)],
    # lips stretched horizontally, flattened
    "AU20": [((48, 54), 0.08, 0.01, 0), ((60, 64), 0.075, 0.01, 0), ((49, 53, 59, 55), 0.05, 0, 0),
             ((50, 52, 58, 56), 0.02, 0, 0), ((51,), 0, 0.008, 0), ((57,), 0, -0.008, 0), ((3, 13), 0.005, 0, 0)],
    # lips tightened: narrowed, red parts thinned
    "AU23": [((48, 54, 60, 64), -0.03, 0, 0), ((49, 53, 59, 55), -0.02, 0, 0), ((50, 52), -0.008, 0.01, 0),
             ((51,), 0, 0.015, 0), ((58, 56), -0.008, -0.01, 0), ((57,), 0, -0.015, 0)],
    # lips pressed together
    "AU24": [((50, 51, 52), 0, 0.02, 0), ((49, 53), 0, 0.012, 0), ((56, 57, 58), 0, -0.025, 0), ((55, 59), 0, -0.015, 0),
             ((48, 54, 60, 64), -0.01, 0, 0)],
    # lips parted (mostly the lower lip)
    "AU25": [((61, 62, 63), 0, -0.02, 0), ((67, 66, 65), 0, 0.08, 0), ((56, 57, 58), 0, 0.06, 0), ((55, 59), 0, 0.04, 0),
             ((50, 51, 52), 0, -0.01, 0)],
    # mandible lowered: chin, lower jaw and lower lip move down
    "AU26": [((8,), 0, 0.15, 0), ((7, 9), 0, 0.14, 0), ((6, 10), 0, 0.12, 0), ((5, 11), 0, 0.09, 0), ((4, 12), 0, 0.06, 0),
             ((3, 13), 0, 0.03, 0), ((2, 14), 0, 0.01, 0), ((56, 57, 58, 65, 66, 67), 0, 0.13, 0), ((55, 59), 0, 0.11, 0),
             ((48, 54), -0.005, 0.03, 0), ((60, 64), -0.005, 0.04, 0)],
    # mouth stretched wide open: jaw pulled far down, corners drawn in
    "AU27": [((8,), 0, 0.30, 0), ((7, 9), 0, 0.28, 0), ((6, 10), 0, 0.24, 0), ((5, 11), 0, 0.18, 0), ((4, 12), 0, 0.11, 0),
             ((3, 13), 0, 0.05, 0), ((2, 14), 0, 0.015, 0), ((56, 57, 58, 65, 66, 67), 0, 0.27, 0), ((55, 59), 0, 0.22, 0),
             ((48, 54), -0.02, 0.08, 0), ((60, 64), -0.02, 0.09, 0), ((50, 51, 52, 61, 62, 63), 0, -0.02, 0)],
    # eyes closed: upper lids down to the lower lids (the constraint stops them there)
    "AU43": [((37, 38, 43, 44), 0, 0.20, 0), ((40, 41, 46, 47), 0, -0.01, 0)],
    "AU45": [((37, 38, 43, 44), 0, 0.20, 0), ((40, 41, 46, 47), 0, -0.01, 0)],
}


def _default_fields() -> np.ndarray:
    side = np.sign(mean_face_3d()[:, 0])  # +1 subject's left (image right), -1 right, 0 midline
    fields = np.zeros((len(AU_CODES), N_POINTS, 3))
    for k, au in enumerate(AU_CODES):
        for pts, out, down, back in _DEFAULT_SPEC[au]:
            idx = np.array(pts)
            fields[k, idx, 0] += out * side[idx]
            fields[k, idx, 1] += down
            fields[k, idx, 2] += back
    return fields


@dataclass(frozen=True)
class MotionModel:
    """Displacement fields, (n_aus, 68, 3) in inter-ocular units at intensity E, head frame.

    ``cooccurrence`` (optional, (n_aus, n_aus)): joint on-probabilities P(i and j) (diagonal =
    prevalence), learned from labels by :func:`fit_motion`; the grid's co-occurrence strategy uses it.
    """

    aus: tuple[str, ...]
    fields: np.ndarray
    source: str = "FACS defaults"
    cooccurrence: np.ndarray | None = None
    meta: dict = field(default_factory=dict, compare=False)

    def index(self, au: str) -> int:
        code = au_code(au)
        if code not in self.aus:
            raise ConfigError(f"motion model ({self.source}) has no field for {code}; it knows {', '.join(self.aus)}")
        return self.aus.index(code)

    def intensity_matrix(self, aus: dict[str, float] | None = None, n: int = 1) -> np.ndarray:
        """(n, n_aus) FACS intensities from a {AU: intensity} dict (missing AUs = 0)."""
        m = np.zeros((n, len(self.aus)))
        for au, v in (aus or {}).items():
            m[:, self.index(au)] = v
        return m

    def displacement(self, intensities: np.ndarray) -> np.ndarray:
        """(n, n_aus) FACS intensities 0..5 -> (n, 68, 3) displacement in inter-ocular units."""
        lv = intensity_level(np.atleast_2d(intensities))
        return np.einsum("na,apc->npc", lv, self.fields)

    def deform(self, shape3d: np.ndarray, intensities: np.ndarray, constrain: bool = True) -> np.ndarray:
        """Move a neutral (68, 3) shape (mm, head frame) by (n, n_aus) intensities -> (n, 68, 3) mm."""
        intensities = np.atleast_2d(intensities)
        iod = float(interocular(shape3d[:, :2]))
        shapes = shape3d[None] + self.displacement(intensities) * iod
        if constrain:
            opening = np.zeros(len(intensities), bool)
            for au in MOUTH_OPENING:
                if au in self.aus:
                    opening |= intensities[:, self.aus.index(au)] > 0
            shapes = constrain_shapes(shapes, opening)
        return shapes

    def save(self, path: str | Path) -> None:
        arrays = {"aus": np.array(self.aus), "fields": self.fields, "source": np.array(self.source)}
        if self.cooccurrence is not None:
            arrays["cooccurrence"] = self.cooccurrence
        for k, v in self.meta.items():
            arrays[f"meta_{k}"] = np.asarray(v)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)


SHIPPED_MOTION = {"ict": Path(__file__).resolve().parent / "data" / "ict_motion.npz"}  # names for the shipped models
MOTION_NAMES = (*SHIPPED_MOTION, "facs")  # what load_motion_model takes besides a path


def load_motion_model(path: str | Path) -> MotionModel:
    """Read a model written by :meth:`MotionModel.save` (``fewshot fit-motion``), or a shipped one by
    name (:data:`SHIPPED_MOTION`: ``"ict"``, the ICT-FaceKit shapes of ``scripts/derive_ict_motion.py``;
    ``"facs"``: the hand-written FACS fields, :func:`default_motion_model`)."""
    if str(path) == "facs":
        return default_motion_model()
    p = SHIPPED_MOTION.get(str(path), Path(path))
    if not p.is_file():
        raise InputError(f"{p}: no such motion model file; write one with `fewshot fit-motion` or omit --motion")
    try:
        with np.load(p, allow_pickle=False) as d:
            aus = tuple(str(a) for a in d["aus"])
            fields = np.asarray(d["fields"], float)
            cooc = np.asarray(d["cooccurrence"], float) if "cooccurrence" in d.files else None
            meta = {k[5:]: d[k] for k in d.files if k.startswith("meta_")}
            source = str(d["source"]) if "source" in d.files else str(p)
    except Exception as e:  # noqa: BLE001 - not an npz, pickled data, a zip without our arrays...: numpy's advice (allow_pickle) would mislead
        raise InputError(f"{p}: not a motion model .npz from `fewshot fit-motion` ({type(e).__name__}); write one with `fewshot fit-motion` "
                         "or omit --motion") from None  # fmt: skip
    if fields.shape != (len(aus), N_POINTS, 3):
        raise InputError(f"{p}: fields have shape {fields.shape}, expected ({len(aus)}, 68, 3)")
    return MotionModel(aus, fields, source, cooc, meta)


def default_motion_model() -> MotionModel:
    """The hand-written FACS fields for every AU of the vocabulary."""
    return MotionModel(AU_CODES, _default_fields(), "FACS defaults")


def constrain_shapes(shapes: np.ndarray, mouth_open: np.ndarray | bool) -> np.ndarray:
    """Project (n, 68, 3) head-frame shapes (y down) onto plausible faces (a copy).

    Eyelids: an upper-lid point never below its lower-lid partner (it stops on it: the eye closes).
    Lips: the outer upper lip stays above the inner upper lip and the outer lower lip below the inner
    lower lip; the inner lips never cross, and where ``mouth_open`` is false they meet (mid-way).
    """
    s = np.array(shapes, float, copy=True)
    y = s[..., 1]
    y[:, UPPER_LID] = np.minimum(y[:, UPPER_LID], y[:, LOWER_LID])
    up, lo = y[:, UPPER_INNER_LIP], y[:, LOWER_INNER_LIP]
    mid = 0.5 * (up + lo)
    closed = ~np.broadcast_to(np.asarray(mouth_open, bool), (len(s),))
    cross = (up > lo) | closed[:, None]
    y[:, UPPER_INNER_LIP] = np.where(cross, mid, up)
    y[:, LOWER_INNER_LIP] = np.where(cross, mid, lo)
    y[:, UPPER_OUTER_LIP] = np.minimum(y[:, UPPER_OUTER_LIP], y[:, UPPER_INNER_LIP])
    y[:, LOWER_OUTER_LIP] = np.maximum(y[:, LOWER_OUTER_LIP], y[:, LOWER_INNER_LIP])
    return s


# -- learning fields from labelled landmark sequences --------------------------------------------------


def canonical_frame(neutral: np.ndarray) -> np.ndarray:
    """2x3 similarity taking a neutral 68-point face (px) onto the mean face's x,y (mm), stable points."""
    ok = ~np.isnan(neutral[STABLE]).any(axis=1)
    return similarity_transform(neutral[STABLE][ok], mean_face_3d()[STABLE, :2][ok])


def motion_samples(neutral: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Displacements (T, 68, 2) of frames from a subject's neutral face, in inter-ocular units of the
    canonical (mean-face) frame: each frame is aligned onto the neutral on the stable points first, so
    head motion does not count as expression. NaN points stay NaN."""
    to_canon = canonical_frame(neutral)
    neutral_c = apply_affine(to_canon, neutral)
    iod = float(interocular(neutral_c))
    out = np.full(frames.shape, np.nan)
    for t, fr in enumerate(frames):  # one 2x3 solve per frame; the alignment itself is tiny
        ok = ~np.isnan(fr[STABLE]).any(axis=1) & ~np.isnan(neutral_c[STABLE]).any(axis=1)
        if ok.sum() < 4:
            continue
        m = similarity_transform(fr[STABLE][ok], neutral_c[STABLE][ok])
        out[t] = (apply_affine(m, fr) - neutral_c) / iod
    return out


def fit_motion(
    subjects: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    aus: list[str],
    prior: MotionModel | None = None,
    ridge: float = 1.0,
    source: str = "fitted",
) -> MotionModel:
    """Learn displacement fields by least squares from labelled landmark sequences.

    subjects: per subject ``(neutral (68, 2) px, frames (T, 68, 2) px, intensities (T, len(aus)) 0..5)``;
        points a data set lacks are NaN (they keep the prior's field).
    aus: the AU of each intensity column. The fitted model holds every AU of ``prior`` (default: the
        FACS defaults); AUs without labels keep their prior field.
    ridge: weight of the pull towards the prior (in samples at full intensity): with few or no
        examples of an AU its field stays near the FACS default; x,y come from the data, z (depth is not
        observed in 2D) from the prior.

    Per point and axis: minimise ``||L W + b_s - D||^2 + ridge ||W - W0||^2`` with L the (T, n_aus)
    intensity levels, D the displacements in inter-ocular units (see :func:`motion_samples`) and b_s a
    free per-subject offset (the error of that subject's neutral estimate).
    """
    prior = prior or default_motion_model()
    cols = [prior.index(a) for a in aus]
    D_all, L_all = [], []
    for neutral, frames, inten in subjects:
        if len(frames) != len(inten):
            raise ConfigError(f"{len(frames)} landmark frames but {len(inten)} label rows for a subject")
        D_all.append(motion_samples(np.asarray(neutral, float), np.asarray(frames, float)))
        L_all.append(intensity_level(np.nan_to_num(np.asarray(inten, float))))
    if not D_all:
        raise ConfigError("no subjects to fit the motion model on")
    D = np.concatenate(D_all).reshape(-1, N_POINTS * 2)  # (T, 136)
    # A per-subject intercept absorbs the error of each subject's neutral estimate, so the fields
    # are fitted on differences between frames rather than on the neutral's own noise.
    n_s = len(D_all)
    subj = np.repeat(np.arange(n_s), [len(d) for d in D_all])
    L = np.concatenate([np.concatenate(L_all), np.eye(n_s)[subj]], axis=1)  # (T, k + n_subjects)
    W0 = np.concatenate([prior.fields[cols][:, :, :2].reshape(len(cols), -1), np.zeros((n_s, N_POINTS * 2))])
    reg = np.r_[np.full(len(cols), ridge), np.full(n_s, 1e-6)]
    fields = prior.fields.copy()
    valid = ~np.isnan(D)
    W = W0.copy()
    # Points with the same missing-pattern share one normal matrix; usually one or two patterns.
    patterns, inverse = np.unique(valid.T, axis=0, return_inverse=True)
    for p_idx, pattern in enumerate(patterns):
        dims = np.flatnonzero(inverse.ravel() == p_idx)
        rows = pattern
        if rows.sum() == 0:
            continue
        Lr = L[rows]
        A = Lr.T @ Lr + np.diag(reg)
        B = Lr.T @ D[np.ix_(rows, dims)] + reg[:, None] * W0[:, dims]
        W[:, dims] = np.linalg.solve(A, B)
    fields[cols, :, :2] = W[: len(cols)].reshape(len(cols), N_POINTS, 2)
    on = np.concatenate([np.asarray(i, float) for _, _, i in subjects]) > 0
    return MotionModel(prior.aus, fields, source, _cooccurrence_full(on, cols, len(prior.aus)),
                       {"n_frames": len(D), "n_subjects": len(subjects), "labelled_aus": np.array(aus)})


def _cooccurrence_full(on: np.ndarray, cols: list[int], n: int) -> np.ndarray:
    """Joint on-probabilities of the labelled AUs placed in an (n, n) matrix; NaN for unlabelled AUs."""
    m = np.full((n, n), np.nan)
    j = on.astype(float).T @ on.astype(float) / max(len(on), 1)
    m[np.ix_(cols, cols)] = j
    return m


# -- from a data set's frame table (experiments.datasets) ---------------------------------------------

OCCURRENCE_AS_INTENSITY = 3.0  # an AU coded present without an intensity counts as C (marked)


def label_intensities(table, aus: list[str]) -> np.ndarray:
    """(N, len(aus)) FACS intensities from a frame table: the ``AUxx_int`` column where it is known,
    else occurrence ``AUxx`` (1 -> C, 0 -> 0); NaN where neither is known."""
    out = np.full((len(table), len(aus)), np.nan)
    for k, a in enumerate(aus):
        if f"{a}_int" in table:
            out[:, k] = table[f"{a}_int"].to_numpy(float)
        if a in table:
            occ = table[a].to_numpy(float)
            fill = np.isnan(out[:, k]) & (occ >= 0)
            out[fill, k] = np.where(occ[fill] > 0, OCCURRENCE_AS_INTENSITY, 0.0)
    return out


def fit_motion_table(table, prior: MotionModel | None = None, ridge: float = 1.0, source: str = "fitted",
                     max_frames_per_subject: int | None = None, seed: int = 0) -> MotionModel:
    """Fit a :class:`MotionModel` from a frame table in the :mod:`experiments.datasets` layout
    (``subject``, ``AUxx`` / ``AUxx_int`` labels, ``lm_x_*``, ``lm_y_*``).

    Each subject's neutral face is the median of its frames with every labelled AU at 0 (if it has
    none: its 10% least active frames); frames with an unknown label or missing landmarks are dropped.
    """
    prior = prior or default_motion_model()
    aus = [a for a in prior.aus if (a in table or f"{a}_int" in table)]
    inten_all = label_intensities(table, aus)
    keep_aus = ~np.all(np.isnan(inten_all), axis=0)
    aus = [a for a, k in zip(aus, keep_aus) if k]
    if not aus:
        raise ConfigError("the data set table holds no labels for any AU of the vocabulary")
    inten_all = inten_all[:, keep_aus]
    lx = table[[f"lm_x_{i}" for i in range(N_POINTS)]].to_numpy(float)
    ly = table[[f"lm_y_{i}" for i in range(N_POINTS)]].to_numpy(float)
    lm_all = np.stack([lx, ly], -1)
    rng = np.random.default_rng(seed)
    subjects = []
    for subj in sorted(table["subject"].unique()):
        rows = np.flatnonzero(table["subject"].to_numpy() == subj)
        inten, lm = inten_all[rows], lm_all[rows]
        # BP4D has no jaw line: a frame needs most (not all) of the stable points
        known = ~np.isnan(inten).any(axis=1) & ((~np.isnan(lm[:, STABLE]).any(axis=2)).sum(axis=1) >= 8)
        inten, lm = inten[known], lm[known]
        if len(lm) == 0:
            continue
        activity = inten.sum(axis=1)
        rest = activity == 0
        if not rest.any():
            rest = activity <= np.quantile(activity, 0.1)
        with warnings.catch_warnings():  # points the data set's scheme lacks are all-NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            neutral = np.nanmedian(lm[rest], axis=0)
        if max_frames_per_subject and len(lm) > max_frames_per_subject:
            pick = np.sort(rng.choice(len(lm), max_frames_per_subject, replace=False))
            lm, inten = lm[pick], inten[pick]
        subjects.append((neutral, lm, inten))
    if not subjects:
        raise ConfigError("no frame of the data set has both complete labels and landmarks")
    return fit_motion(subjects, aus, prior, ridge, source)
