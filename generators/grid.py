"""Stage 2: design the pose x expression x AU grid of what to synthesize for one person.

    from generators import fit_profile, design_grid, grid_balance
    profile = fit_profile("photo.jpg")
    grid = design_grid(profile, n=500, strategy="balanced", seed=0)
    grid_balance(grid)

Grid columns, one row per sample (in this order):

- ``sample_id`` (int), ``seed`` (int: the seed step 3 uses for this sample),
- ``yaw, pitch, roll`` (degrees, absolute head pose in the camera; see :mod:`generators.profile`),
- ``pose_bin`` (str, e.g. ``yaw-15_pitch+0``),
- one float column per AU of the design, ``AU01``... (FACS intensity 0..5, 0 = absent),
- ``expression`` (the EMFACS prototype the AUs complete, most specific first, or ``none``),
- ``tx_0..tx_67, ty_0..ty_67`` (target landmarks, px in the source photo's frame),
- ``sem_AU06, sem_AU17, sem_AU04, sem_AU09, sem_AU10`` (appearance strength 0..1 of the semantic skin
  channels of :mod:`generators.semantic`: the AU's movement level; for AU06 at least 0.3 x AU12's level,
  as a strong lip-corner pull bunches the cheeks too; 0 when the AU is not in the design).

``df.attrs`` records the inputs (strategy, seed, AUs, pose bins, source photo, motion model) and the
balance report (``attrs['balance']``, the records of :func:`grid_balance`); it survives parquet.
"""

from __future__ import annotations

from itertools import product
from typing import Callable, Sequence

import cv2
import numpy as np
import pandas as pd

from fewshot.crop import warp_crop
from fewshot.errors import ConfigError
from fewshot.landmarks import N_POINTS
from fewshot.registry import Registry

from .aus import EXCLUSIVE, intensity_level, intensity_to_letter, parse_aus
from .profile import PersonProfile
from .semantic import SEMANTIC_AUS

# DISFA's 8 evaluated AUs: the default design.
DEFAULT_AUS = ("AU01", "AU02", "AU04", "AU06", "AU09", "AU12", "AU25", "AU26")
DEFAULT_YAWS = (-30, -15, 0, 15, 30)
DEFAULT_PITCHES = (-15, 0, 15)
DEFAULT_POSE_BINS = tuple((float(y), float(p), 0.0) for y in DEFAULT_YAWS for p in DEFAULT_PITCHES)

TX = [f"tx_{i}" for i in range(N_POINTS)]
TY = [f"ty_{i}" for i in range(N_POINTS)]
SEM_COLUMNS = [f"sem_{a}" for a in SEMANTIC_AUS]

# EMFACS prototypes (FACS intensity; AU16 is not in the vocabulary, so disgust uses 9+15+17).
EXPRESSIONS: dict[str, dict[str, float]] = {
    "happiness": {"AU06": 3, "AU12": 3},
    "sadness": {"AU01": 3, "AU04": 3, "AU15": 3},
    "surprise": {"AU01": 3, "AU02": 3, "AU05": 2, "AU26": 3},
    "fear": {"AU01": 3, "AU02": 3, "AU04": 3, "AU05": 3, "AU07": 3, "AU20": 3, "AU26": 3},
    "anger": {"AU04": 3, "AU05": 3, "AU07": 3, "AU23": 3},
    "disgust": {"AU09": 3, "AU15": 3, "AU17": 3},
    "contempt": {"AU12": 1, "AU14": 1},
}
CONTEMPT_MAX = 2.0  # contempt is a low-intensity (A-B) 12+14

# (n_rows, aus, n_bins, rng, options) -> (bin index (n,), intensities (n, len(aus)))
Strategy = Callable[..., tuple[np.ndarray, np.ndarray]]
GRID_STRATEGIES: Registry[Strategy] = Registry("grid strategy")


def _parse_bins(pose_bins) -> np.ndarray:
    bins = np.array([tuple(b) + (0.0,) * (3 - len(b)) for b in pose_bins], float)
    if bins.ndim != 2 or bins.shape[1] != 3 or len(bins) == 0:
        raise ConfigError("pose_bins must be (yaw, pitch) or (yaw, pitch, roll) tuples in degrees")
    return bins


def bin_names(bins: np.ndarray) -> list[str]:
    return [f"yaw{y:+.0f}_pitch{p:+.0f}" + (f"_roll{r:+.0f}" if r else "") for y, p, r in bins]


def _balanced_bins(n: int, n_bins: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.arange(n) % n_bins)


def _drop_exclusive(inten: np.ndarray, aus: Sequence[str], rng: np.random.Generator) -> np.ndarray:
    for a, b in EXCLUSIVE:
        if a in aus and b in aus:
            ia, ib = aus.index(a), aus.index(b)
            both = (inten[:, ia] > 0) & (inten[:, ib] > 0)
            drop_a = rng.random(len(inten)) < 0.5
            inten[both & drop_a, ia] = 0
            inten[both & ~drop_a, ib] = 0
    return inten


@GRID_STRATEGIES.register("balanced", "each AU on in `on_share` of the rows of every pose bin, intensities A-E equally")
def _balanced(n: int, aus: Sequence[str], n_bins: int, rng: np.random.Generator, on_share: float = 0.5,
              intensities: Sequence[float] = (1, 2, 3, 4, 5), **_) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 <= on_share <= 1.0:
        raise ConfigError(f"on_share must be in [0, 1], not {on_share}")
    levels = np.asarray(intensities, float)
    bins = _balanced_bins(n, n_bins, rng)
    counts = np.bincount(bins, minlength=n_bins)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    inten = np.zeros((n, len(aus)))
    for k in range(len(aus)):
        order = np.lexsort((rng.random(n), bins))  # rows grouped by bin, random within
        rank = np.arange(n) - starts[bins[order]]
        target = on_share * counts
        n_on = np.floor(target) + (rng.random(n_bins) < target - np.floor(target))
        on_sorted = rank < n_on[bins[order]]
        rows = order[on_sorted]  # grouped by bin, so cycling the levels spreads them over every bin
        inten[rows, k] = levels[(np.arange(len(rows)) + rng.integers(len(levels))) % len(levels)]
    return bins, _drop_exclusive(inten, list(aus), rng)


@GRID_STRATEGIES.register("factorial", "every pose bin x every combination of the AU `levels` (subsampled to n if given)")
def _factorial(n: int | None, aus: Sequence[str], n_bins: int, rng: np.random.Generator,
               levels: Sequence[float] = (0, 3), **_) -> tuple[np.ndarray, np.ndarray]:
    n_combos = len(levels) ** len(aus)
    if n_combos * n_bins > 2_000_000:
        raise ConfigError(f"a full factorial of {len(aus)} AUs x {len(levels)} levels x {n_bins} pose bins has "
                          f"{n_combos * n_bins} rows; use fewer AUs or levels, or --strategy balanced")
    combos = np.array(list(product(levels, repeat=len(aus))), float).reshape(-1, len(aus))
    keep = np.ones(len(combos), bool)
    for a, b in EXCLUSIVE:
        if a in aus and b in aus:
            keep &= ~((combos[:, aus.index(a)] > 0) & (combos[:, aus.index(b)] > 0))
    combos = combos[keep]
    bins = np.repeat(np.arange(n_bins), len(combos))
    inten = np.tile(combos, (n_bins, 1))
    total = len(bins)
    if n is not None and n != total:
        # a random order of the combinations within each bin, dealt round-robin over the bins, so a
        # subsample (or a repetition past the full design) keeps the bins equally filled
        rank = np.argsort(rng.random((n_bins, len(combos))), axis=1).argsort(axis=1).ravel()
        order = np.lexsort((bins, rank))
        idx = np.sort(order[np.arange(n) % total])
        bins, inten = bins[idx], inten[idx]
    return bins, inten


def default_cooccurrence(aus: Sequence[str], background: float = 0.08) -> np.ndarray:
    """Joint on-probabilities P(i and j) of AUs under an EMFACS mixture: the seven prototypes and
    neutral equally likely, every AU also on by chance with probability ``background``."""
    comps = [set(p) for p in EXPRESSIONS.values()] + [set()]
    on = np.array([[1.0 if a in c else background for a in aus] for c in comps])  # (n_comp, k)
    joint = on.T @ on / len(comps)
    np.fill_diagonal(joint, on.mean(0))
    return joint


def chow_liu_tree(joint: np.ndarray) -> tuple[list[int], np.ndarray]:
    """Maximum-mutual-information spanning tree of binary AUs from their joint on-probabilities.

    Returns (sampling order, parent of each AU; -1 for the root): the tree keeps every marginal and
    the strongest pairwise dependencies exactly (Chow & Liu, 1968)."""
    eps = 1e-9
    k = len(joint)
    p = np.diag(joint)
    # 2x2 tables of every pair: P(1,1), P(1,0), P(0,1), P(0,0)
    t11 = joint
    t10 = p[:, None] - joint
    t01 = p[None, :] - joint
    t00 = 1 - p[:, None] - p[None, :] + joint
    pi = [p[:, None], p[:, None], 1 - p[:, None], 1 - p[:, None]]
    pj = [p[None, :], 1 - p[None, :], p[None, :], 1 - p[None, :]]
    mi = sum(np.clip(t, eps, 1) * np.log(np.clip(t, eps, 1) / np.clip(a * b, eps, 1))
             for t, a, b in zip((t11, t10, t01, t00), pi, pj))
    np.fill_diagonal(mi, -np.inf)
    parent = np.full(k, -1)
    order = [int(np.argmax(p * (1 - p)))]  # the most uncertain AU as root
    best = mi[order[0]].copy()
    best_from = np.full(k, order[0])
    in_tree = np.zeros(k, bool)
    in_tree[order[0]] = True
    while len(order) < k:  # Prim's algorithm over at most 20 AUs
        cand = np.where(in_tree, -np.inf, best)
        j = int(np.argmax(cand))
        parent[j] = best_from[j]
        order.append(j)
        in_tree[j] = True
        upd = mi[j] > best
        best[upd], best_from[upd] = mi[j][upd], j
    return order, parent


@GRID_STRATEGIES.register("cooccurrence", "AUs drawn to follow a co-occurrence matrix (learned from labels, or EMFACS defaults)")
def _cooccurrence(n: int, aus: Sequence[str], n_bins: int, rng: np.random.Generator, cooccurrence: np.ndarray | None = None,
                  intensities: Sequence[float] = (1, 2, 3, 4, 5), **_) -> tuple[np.ndarray, np.ndarray]:
    k = len(aus)
    J = default_cooccurrence(aus) if cooccurrence is None else np.asarray(cooccurrence, float)
    if J.shape != (k, k) or np.isnan(J).any():
        raise ConfigError(f"co-occurrence matrix must be {k}x{k} over {', '.join(aus)} without gaps (got {J.shape})")
    p = np.clip(np.diag(J), 0.0, 1.0)
    order, parent = chow_liu_tree(J)
    on = np.zeros((n, k), bool)
    for j in order:  # each AU drawn given its tree parent: marginals and tree-edge pairs follow J exactly
        i = parent[j]
        if i < 0:
            prob = np.full(n, p[j])
        else:
            p_on = J[i, j] / p[i] if p[i] > 0 else p[j]
            p_off = (p[j] - J[i, j]) / (1 - p[i]) if p[i] < 1 else p[j]
            prob = np.where(on[:, i], p_on, p_off)
        on[:, j] = rng.random(n) < np.clip(prob, 0, 1)
    levels = np.asarray(intensities, float)
    inten = np.where(on, levels[rng.integers(len(levels), size=(n, k))], 0.0)
    return _balanced_bins(n, n_bins, rng), _drop_exclusive(inten, list(aus), rng)


def label_expressions(inten: np.ndarray, aus: Sequence[str]) -> np.ndarray:
    """EMFACS prototype name per row whose AUs are all on (most AUs first; contempt only at A-B), else 'none'."""
    aus = list(aus)
    conds, names = [], []
    for name, proto in sorted(EXPRESSIONS.items(), key=lambda kv: -len(kv[1])):
        if not all(a in aus for a in proto):
            continue
        cols = inten[:, [aus.index(a) for a in proto]]
        cond = (cols > 0).all(axis=1)
        if name == "contempt":
            cond &= (cols <= CONTEMPT_MAX).all(axis=1)
        conds.append(cond)
        names.append(name)
    return np.select(conds, names, default="none") if conds else np.full(len(inten), "none", dtype=object)


def design_grid(
    profile: PersonProfile,
    n: int | None = 500,
    strategy: str = "balanced",
    aus: Sequence[str] | str | None = None,
    pose_bins: Sequence[Sequence[float]] | None = None,
    seed: int = 0,
    pose_jitter: float = 2.0,
    roll_jitter: float = 3.0,
    **options,
) -> pd.DataFrame:
    """Design ``n`` samples of ``profile`` (see the module docstring for the columns).

    strategy: a name in ``GRID_STRATEGIES``: 'balanced' (options ``on_share=0.5``,
        ``intensities=(1..5)``), 'factorial' (``levels=(0, 3)``; ``n=None`` for the full design),
        'cooccurrence' (``cooccurrence=`` a (k, k) joint on-probability matrix over ``aus``, e.g. from
        a fitted motion model; EMFACS defaults otherwise).
    aus: AU codes (default: DISFA's 8). pose_bins: (yaw, pitch[, roll]) degree tuples (default: yaw
        -30..30 step 15 x pitch -15, 0, 15). Each row's pose is its bin plus uniform jitter of
        +-``pose_jitter`` (yaw, pitch) and +-``roll_jitter`` (roll) degrees, kept inside the outer
        bins' yaw and pitch (the default grid never exceeds |yaw| 30). seed: same seed, same grid.
    """
    aus = parse_aus(DEFAULT_AUS if aus is None else aus)
    bins = _parse_bins(DEFAULT_POSE_BINS if pose_bins is None else pose_bins)
    if n is not None and n < 1:
        raise ConfigError(f"--n must be at least 1, not {n}")
    if n is None and strategy != "factorial":
        raise ConfigError("n=None (the full design) only makes sense with strategy 'factorial'")
    if "cooccurrence" in options and options["cooccurrence"] is None:
        options.pop("cooccurrence")
    if strategy == "cooccurrence" and "cooccurrence" not in options and profile.motion.cooccurrence is not None:
        idx = [profile.motion.index(a) for a in aus]
        learned = profile.motion.cooccurrence[np.ix_(idx, idx)]
        if not np.isnan(learned).any():
            options["cooccurrence"] = learned
    for a in aus:
        profile.motion.index(a)  # every AU needs a motion field
    strat_ss, pose_ss, seed_ss = np.random.SeedSequence(seed).spawn(3)
    bin_idx, inten = GRID_STRATEGIES.get(strategy)(n, aus, len(bins), np.random.default_rng(strat_ss), **options)
    n_rows = len(bin_idx)
    prng = np.random.default_rng(pose_ss)
    angles = bins[bin_idx] + np.column_stack([
        prng.uniform(-pose_jitter, pose_jitter, n_rows), prng.uniform(-pose_jitter, pose_jitter, n_rows),
        prng.uniform(-roll_jitter, roll_jitter, n_rows)])
    angles[:, :2] = np.clip(angles[:, :2], bins[:, :2].min(0), bins[:, :2].max(0))
    full = np.zeros((n_rows, len(profile.motion.aus)))
    full[:, [profile.motion.index(a) for a in aus]] = inten
    targets = profile.landmarks_batch(angles, full)  # (n, 68, 2)

    level = intensity_level(inten)
    sem = np.zeros((n_rows, len(SEMANTIC_AUS)))
    for j, a in enumerate(SEMANTIC_AUS):
        if a in aus:
            sem[:, j] = level[:, aus.index(a)]
    if "AU12" in aus:
        sem[:, 0] = np.maximum(sem[:, 0], 0.3 * level[:, aus.index("AU12")])

    names = np.array(bin_names(bins))
    df = pd.concat([
        pd.DataFrame({
            "sample_id": np.arange(n_rows), "seed": np.random.default_rng(seed_ss).integers(0, 2**31 - 1, n_rows),
            "yaw": angles[:, 0], "pitch": angles[:, 1], "roll": angles[:, 2], "pose_bin": names[bin_idx],
        }),
        pd.DataFrame(inten, columns=aus),
        pd.DataFrame({"expression": label_expressions(inten, aus)}),
        pd.DataFrame(np.concatenate([targets[..., 0], targets[..., 1]], axis=1), columns=TX + TY),
        pd.DataFrame(sem, columns=SEM_COLUMNS),
    ], axis=1)
    df.attrs.update({
        "strategy": strategy, "seed": int(seed), "aus": list(aus), "n": int(n_rows),
        "pose_bins": bins.tolist(), "pose_bin_names": names.tolist(), "source": profile.source,
        "image_size": list(profile.image_size), "motion": profile.motion.source,
        "pose_jitter": float(pose_jitter), "roll_jitter": float(roll_jitter),
    })
    df.attrs["balance"] = grid_balance(df).astype(object).where(lambda t: t.notna(), None).to_dict("records")
    return df


def grid_aus(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if len(c) == 4 and c.startswith("AU") and c[2:].isdigit()]


def grid_balance(df: pd.DataFrame) -> pd.DataFrame:
    """Balance report: one row per AU (``count`` = rows with it on, ``share``, counts per intensity
    ``A..E``), per pose bin (``count``, ``share``, ``expected`` = 1 / n_bins) and per expression."""
    n = max(len(df), 1)
    rows = []
    for a in grid_aus(df):
        v = df[a].to_numpy()
        letters = [intensity_to_letter(x) for x in range(1, 6)]
        k = np.clip(np.round(v), 0, 5).astype(int)
        per = np.bincount(k, minlength=6)
        rows.append({"kind": "au", "name": a, "count": int((v > 0).sum()), "share": float((v > 0).mean()),
                     "expected": np.nan, **{L: int(c) for L, c in zip(letters, per[1:])}})
    names = df.attrs.get("pose_bin_names") or sorted(df["pose_bin"].unique())
    counts = df["pose_bin"].value_counts()
    for b in names:
        c = int(counts.get(b, 0))
        rows.append({"kind": "pose_bin", "name": b, "count": c, "share": c / n, "expected": 1.0 / len(names)})
    for e, c in df["expression"].value_counts().sort_index().items():
        rows.append({"kind": "expression", "name": e, "count": int(c), "share": c / n, "expected": np.nan})
    out = pd.DataFrame(rows, columns=["kind", "name", "count", "share", "expected", "A", "B", "C", "D", "E"])
    for L in "ABCDE":
        out[L] = out[L].astype("Int64")
    return out


# -- contact sheet -----------------------------------------------------------------------------------

_CURVES = [(np.arange(0, 17), False), (np.arange(17, 22), False), (np.arange(22, 27), False), (np.arange(27, 31), False),
           (np.arange(30, 36), True), (np.arange(36, 42), True), (np.arange(42, 48), True), (np.arange(48, 60), True),
           (np.arange(60, 68), True)]


def contact_sheet(profile: PersonProfile, df: pd.DataFrame, n: int = 16, tile: int = 256) -> np.ndarray:
    """uint8 RGB sheet: up to ``n`` evenly spaced rows of the grid, their target landmarks drawn over
    the person's photo (one shared crop around the face), each tile labelled with pose and AUs."""
    if len(df) == 0:
        raise ConfigError("the grid is empty; nothing to draw")
    idx = np.unique(np.linspace(0, len(df) - 1, min(n, len(df))).round().astype(int))
    sub = df.iloc[idx]
    pts = np.stack([sub[TX].to_numpy(), sub[TY].to_numpy()], axis=-1)  # (m, 68, 2)
    allp = np.concatenate([pts.reshape(-1, 2), profile.landmarks])
    lo, hi = np.nanmin(allp, 0), np.nanmax(allp, 0)
    c, half = (lo + hi) / 2, 0.62 * float((hi - lo).max())
    x0, y0 = c - half
    s = tile / (2 * half)
    M = np.array([[s, 0, -x0 * s], [0, s, -y0 * s]])
    base = warp_crop(profile.image, M, tile, cv2.BORDER_CONSTANT)
    base = (base * 0.6).astype(np.uint8)  # dim the photo so the targets stand out
    aus = grid_aus(df)
    cols = int(np.ceil(np.sqrt(len(sub))))
    rows_n = int(np.ceil(len(sub) / cols))
    sheet = np.zeros((rows_n * tile, cols * tile, 3), np.uint8)
    tiles_px = np.round((pts * s + M[:, 2]) * 16).astype(np.int32)
    for t, (_, row) in enumerate(sub.iterrows()):
        im = base.copy()
        curves = [tiles_px[t, ids] for ids, _ in _CURVES]
        cv2.polylines(im, [cv for cv, (_, closed) in zip(curves, _CURVES) if not closed], False, (0, 255, 0), 1, cv2.LINE_AA, shift=4)
        cv2.polylines(im, [cv for cv, (_, closed) in zip(curves, _CURVES) if closed], True, (0, 255, 0), 1, cv2.LINE_AA, shift=4)
        on = " ".join(f"{a[2:].lstrip('0')}{intensity_to_letter(row[a])}" for a in aus if row[a] > 0)
        cv2.putText(im, f"#{row['sample_id']} y{row['yaw']:+.0f} p{row['pitch']:+.0f} r{row['roll']:+.0f}", (4, 14),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1, cv2.LINE_AA)
        cv2.putText(im, on or "neutral", (4, tile - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1, cv2.LINE_AA)
        r, q = divmod(t, cols)
        sheet[r * tile:(r + 1) * tile, q * tile:(q + 1) * tile] = im
    return sheet
