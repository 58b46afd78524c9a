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

``df.attrs`` records the inputs (strategy, seed, AUs, pose bins, motion model), the source photo
(``source``: its path as given; ``source_fingerprint``: :func:`source_fingerprint` of its pixels;
``source_sha1``: of its file, when it is one) and the balance report (``attrs['balance']``, the
records of :func:`grid_balance`). Parquet keeps attrs; :func:`write_grid` writes a CSV grid's attrs
to a sidecar JSON that ``generators.store.read_grid`` reads back.

Consumers read a table through :class:`Grid` (``Grid.from_table(df)``, validated once): typed arrays
of the targets, poses, AU intensities and semantic levels, by AU name, never by column position.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from itertools import product
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import cv2
import numpy as np
import pandas as pd

from fewshot.crop import warp_crop
from fewshot.errors import ConfigError
from fewshot.io import atomic_path, write_table
from fewshot.landmarks import N_POINTS, interocular
from fewshot.registry import Registry

from .aus import AU_CODES, AU_VOCABULARY, EXCLUSIVE, MAX_INTENSITY, au_code, intensity_level, intensity_to_letter, parse_aus
from .profile import PersonProfile
from .semantic import SEMANTIC_AUS
from .sheet import au_caption, sheet_indices, tile_sheet

# DISFA's 8 evaluated AUs: the default design.
# BP4D's 12 and DISFA's 8 (AU1, 2, 4, 6, 7, 9, 10, 12, 14, 15, 17, 23, 24, 25, 26), plus AU5 and AU20,
# without which the surprise, fear and anger prototypes cannot be rendered
DEFAULT_AUS = ("AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU12", "AU14", "AU15", "AU17", "AU20",
               "AU23", "AU24", "AU25", "AU26")
DEFAULT_YAWS = (-30, -15, 0, 15, 30)
DEFAULT_PITCHES = (-15, 0, 15)
DEFAULT_POSE_BINS = tuple((float(y), float(p), 0.0) for y in DEFAULT_YAWS for p in DEFAULT_PITCHES)

TX = [f"tx_{i}" for i in range(N_POINTS)]
TY = [f"ty_{i}" for i in range(N_POINTS)]
POSE_COLUMNS = ["yaw", "pitch", "roll"]
SEM_PREFIX = "sem_"
SEM_COLUMNS = [f"{SEM_PREFIX}{a}" for a in SEMANTIC_AUS]
AU_COLUMN = re.compile(r"AU\d\d")
_AU_LIKE = re.compile(r"(?i)au\d.*")  # what a reader might mean as an AU column, spelt as the generator reads it or not
MAKE_GRID = "make it with 'fewshot design' (generators.design_grid)"


@dataclass(frozen=True, eq=False)
class Grid:
    """A grid table unpacked once into typed arrays, N rows (see the module docstring for the columns).

    Build it with :meth:`Grid.from_table` (which validates) and write it with :meth:`to_table`; parquet
    or CSV tables with the OpenFace-like column names stay the on-disk format.

    sample_ids, seeds: (N,) int64 (seed: the seed step 3 renders the row with).
    pose: (N, 3) float, absolute head pose yaw, pitch, roll in degrees.
    aus: the AU codes of the intensity columns, table order; intensities: (N, len(aus)) FACS 0..5.
    targets: (N, 68, 2) float target landmarks, px in the source photo's frame.
    semantic_aus: the AU codes of the ``sem_*`` columns, table order; semantic: (N, len(semantic_aus))
        appearance levels 0..1.
    pose_bins, expressions: (N,) str, or None when the table has no such column.
    attrs: what the design recorded (strategy, seed, ``source`` photo, ``source_fingerprint``, ...).
    """

    sample_ids: np.ndarray
    seeds: np.ndarray
    pose: np.ndarray
    aus: tuple[str, ...]
    intensities: np.ndarray
    targets: np.ndarray
    semantic_aus: tuple[str, ...]
    semantic: np.ndarray
    pose_bins: np.ndarray | None = None
    expressions: np.ndarray | None = None
    attrs: Mapping[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, rows) -> Grid:
        """The grid of some rows (a slice, or an index / boolean array); attrs are kept."""
        if isinstance(rows, (int, np.integer)):
            rows = slice(int(rows), int(rows) + 1 or None)
        pick = (lambda a: None if a is None else a[rows])
        return replace(self, sample_ids=self.sample_ids[rows], seeds=self.seeds[rows], pose=self.pose[rows],
                       intensities=self.intensities[rows], targets=self.targets[rows], semantic=self.semantic[rows],
                       pose_bins=pick(self.pose_bins), expressions=pick(self.expressions))

    @property
    def source(self) -> str:
        """The photo (or clip) the grid was designed on, as given to :func:`design_grid` ('' if unrecorded)."""
        return str(self.attrs.get("source") or "")

    @property
    def source_fingerprint(self) -> str:
        """:func:`source_fingerprint` of the design's photo ('' if unrecorded)."""
        return str(self.attrs.get("source_fingerprint") or "")

    def au_matrix(self, aus: Sequence[str]) -> np.ndarray:
        """(N, len(aus)) FACS intensities of ``aus`` in that order; 0 for an AU the grid does not design."""
        out = np.zeros((len(self), len(aus)))
        for j, a in enumerate(aus):
            if a in self.aus:
                out[:, j] = self.intensities[:, self.aus.index(a)]
        return out

    def row_aus(self, i: int) -> dict[str, float]:
        """{AU: FACS intensity} of the AUs on in row ``i`` (table order)."""
        return {a: float(v) for a, v in zip(self.aus, self.intensities[i]) if v > 0}

    def row_semantic(self, i: int) -> dict[str, float]:
        """{AU: appearance level 0..1} of the semantic channels on in row ``i`` (table order)."""
        return {a: float(v) for a, v in zip(self.semantic_aus, self.semantic[i]) if v > 0}

    def to_table(self) -> pd.DataFrame:
        """The grid as its table: sample_id, seed, yaw, pitch, roll, [pose_bin], AUxx..., [expression],
        tx_0..tx_67, ty_0..ty_67, sem_AUxx...; ``attrs`` copied. ``Grid.from_table(t).to_table()`` equals
        a table made by :func:`design_grid` (other tables come back in this column order)."""
        head = {"sample_id": self.sample_ids, "seed": self.seeds,
                "yaw": self.pose[:, 0], "pitch": self.pose[:, 1], "roll": self.pose[:, 2]}
        if self.pose_bins is not None:
            head["pose_bin"] = self.pose_bins
        parts = [pd.DataFrame(head), pd.DataFrame(self.intensities, columns=list(self.aus))]
        if self.expressions is not None:
            parts.append(pd.DataFrame({"expression": self.expressions}))
        parts += [pd.DataFrame(np.concatenate([self.targets[..., 0], self.targets[..., 1]], axis=1), columns=TX + TY),
                  pd.DataFrame(self.semantic, columns=[f"{SEM_PREFIX}{a}" for a in self.semantic_aus])]
        df = pd.concat(parts, axis=1)
        df.attrs.update(copy.deepcopy(dict(self.attrs)))
        return df

    @classmethod
    def from_table(cls, table: pd.DataFrame, path: str | Path | None = None) -> Grid:
        """Check and unpack a grid table (``path``: the file it came from, named in errors).

        ConfigError, naming the grid and the remedy, for: missing target (``tx_*``, ``ty_*``) or pose
        columns; non-finite targets or poses; an AU-like column the generator would not read (``AU6``,
        ``AU12_r``, an AU outside the vocabulary, ``sem_`` of an AU without semantic appearance); an AU
        the design lists (``attrs['aus']``) without its column; intensities outside 0..5 or levels
        outside 0..1."""
        where = f"{path}: " if path else "grid: "
        cols = [str(c) for c in table.columns]
        missing = [c for c in TX + TY + POSE_COLUMNS if c not in cols]
        if missing:
            raise ConfigError(f"{where}lacks column(s) {', '.join(missing[:4])}{'...' if len(missing) > 4 else ''}; {MAKE_GRID}")
        aus, sem_aus = [], []
        for c in cols:
            if c.startswith(SEM_PREFIX):
                a = c[len(SEM_PREFIX):]
                if a not in SEMANTIC_AUS:
                    raise ConfigError(f"{where}column {c!r} is not a semantic channel (the generator would ignore it); "
                                      f"semantic columns are {', '.join(SEM_COLUMNS)}")
                sem_aus.append(a)
            elif _AU_LIKE.fullmatch(c):
                if not AU_COLUMN.fullmatch(c) or c not in AU_VOCABULARY:
                    try:
                        hint = f"rename it {au_code(c)!r}"
                    except ConfigError:
                        hint = f"known AUs: {', '.join(AU_CODES)}"
                    raise ConfigError(f"{where}column {c!r} is not an AU column the generator reads (it would be dropped); {hint}")
                aus.append(c)
        listed = [str(a) for a in (table.attrs.get("aus") or [])]
        absent = [a for a in listed if a not in aus]
        if absent:
            raise ConfigError(f"{where}lacks the column(s) {', '.join(absent)} of AUs its design lists (attrs['aus']); "
                              f"restore them or {MAKE_GRID}")
        targets = np.stack([_numbers(table, TX, where), _numbers(table, TY, where)], -1)
        if not np.isfinite(targets).all():
            raise ConfigError(f"{where}has non-finite target landmarks (tx_*/ty_*); {MAKE_GRID}")
        pose = _numbers(table, POSE_COLUMNS, where)
        if not np.isfinite(pose).all():
            raise ConfigError(f"{where}has non-finite head poses (yaw, pitch, roll); {MAKE_GRID}")
        inten = _numbers(table, aus, where)
        bad = [a for j, a in enumerate(aus) if not (np.isfinite(inten[:, j]).all() and inten[:, j].min(initial=0) >= 0
                                                      and inten[:, j].max(initial=0) <= MAX_INTENSITY)]
        if bad:
            raise ConfigError(f"{where}AU column(s) {', '.join(bad)} outside 0..5 (FACS intensity: 0 absent, 1..5 = A..E); {MAKE_GRID}")
        sem = _numbers(table, [f"{SEM_PREFIX}{a}" for a in sem_aus], where)
        bad = [f"{SEM_PREFIX}{a}" for j, a in enumerate(sem_aus) if not (np.isfinite(sem[:, j]).all()
                                                                          and sem[:, j].min(initial=0) >= 0 and sem[:, j].max(initial=0) <= 1.0)]
        if bad:
            raise ConfigError(f"{where}column(s) {', '.join(bad)} outside 0..1: sem_* are movement levels (generators.grid); "
                              "map FACS 0..5 intensities with generators.aus.intensity_level")
        n = len(table)
        ints = {c: (_integers(table, c, where) if c in cols else np.arange(n, dtype=np.int64)) for c in ("sample_id", "seed")}
        text = {c: (table[c].astype(str).to_numpy(str) if c in cols else None) for c in ("pose_bin", "expression")}
        return cls(ints["sample_id"], ints["seed"], pose, tuple(aus), inten, targets, tuple(sem_aus), sem,
                   text["pose_bin"], text["expression"], copy.deepcopy(dict(table.attrs)))


def _numbers(table: pd.DataFrame, columns: Sequence[str], where: str) -> np.ndarray:
    try:
        return table[list(columns)].to_numpy(float).reshape(len(table), len(columns))
    except (TypeError, ValueError):
        raise ConfigError(f"{where}non-numeric values in column(s) {', '.join(columns[:4])}{'...' if len(columns) > 4 else ''}; {MAKE_GRID}") from None


def _integers(table: pd.DataFrame, column: str, where: str) -> np.ndarray:
    try:
        return table[column].to_numpy(np.int64)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}column {column!r} must hold whole numbers; {MAKE_GRID}") from None


def as_grid(rows: Grid | pd.DataFrame, path: str | Path | None = None) -> Grid:
    """``rows`` as a :class:`Grid` (a table is checked by :meth:`Grid.from_table`)."""
    return rows if isinstance(rows, Grid) else Grid.from_table(rows, path)


def source_fingerprint(image: np.ndarray) -> str:
    """'sha1:<hex>' of a uint8 (H, W, 3) RGB photo's pixels and shape: every copy of the photo (any
    path, any name) decodes to the same value, any other photo or frame to another."""
    a = np.ascontiguousarray(image, np.uint8)
    h = hashlib.sha1(repr(a.shape).encode())
    h.update(a.tobytes())
    return "sha1:" + h.hexdigest()


def file_sha1(path: str | Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# The nose bridge and eye corners: where no AU moves a landmark much, so a grid's targets there are the
# design photo's face re-posed (see Grid.target_offset).
RIGID_POINTS = (27, 28, 29, 30, 36, 39, 42, 45)
# Median target offset (inter-ocular distances) above which a grid's targets are another photo's face:
# 0.003..0.006 on the design photo (16 AUs at intensity E included), 0.066..0.49 on 20 other London
# photos framed the same way (the same person smiling: 0.37).
TARGET_OFFSET_LIMIT = 0.04


def target_offset(grid: Grid, profile: PersonProfile, rows: int = 32) -> float:
    """How far ``grid``'s targets lie from ``profile``'s face: the median over up to ``rows`` evenly
    spaced rows of the mean distance between the targets' :data:`RIGID_POINTS` and where ``profile``
    puts them rigidly at the row's pose, in the profile's inter-ocular distances (see
    :data:`TARGET_OFFSET_LIMIT`)."""
    idx = sheet_indices(len(grid), rows)
    pred = profile.landmarks_batch(grid.pose[idx], None)[:, list(RIGID_POINTS)]
    err = np.linalg.norm(grid.targets[idx][:, list(RIGID_POINTS)] - pred, axis=-1).mean(axis=1)
    return float(np.median(err) / interocular(np.asarray(profile.landmarks, float)))


def grid_sidecar(path: str | Path) -> Path:
    """Where a CSV grid's attrs live (CSV keeps no metadata): ``grid.csv`` -> ``grid.csv.attrs.json``."""
    p = Path(path)
    return p.with_name(p.name + ".attrs.json")


def write_grid(df: pd.DataFrame, path: str | Path) -> None:
    """Write a grid table as parquet (attrs in its metadata) or CSV plus :func:`grid_sidecar` (the
    attrs and the CSV's sha1, so a sidecar is used only with the CSV it was written with)."""
    p = Path(path)
    write_table(df, p)
    if p.suffix != ".parquet":
        with atomic_path(grid_sidecar(p)) as tmp:
            tmp.write_text(json.dumps({"table_sha1": file_sha1(p), "attrs": df.attrs}, default=str))


def read_grid_attrs(path: str | Path) -> dict:
    """The attrs of a CSV grid from its :func:`grid_sidecar`; {} when there is none, or when it belongs
    to another version of the CSV (edited since it was written)."""
    p = Path(path)
    side = grid_sidecar(p)
    if p.suffix == ".parquet" or not side.is_file():
        return {}
    try:
        meta = json.loads(side.read_text())
        return dict(meta["attrs"]) if meta.get("table_sha1") == file_sha1(p) else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}

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
GridStrategy = Callable[..., tuple[np.ndarray, np.ndarray]]
GRID_STRATEGIES: Registry[GridStrategy] = Registry("grid strategy")


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


def _rows_needed(n: int | None) -> None:
    if n is None:
        raise ConfigError("--n 0 means the full design, which only the factorial strategy has; pass --n N or --strategy factorial")


@GRID_STRATEGIES.register("balanced", "each AU on in `on_share` of the rows of every pose bin, intensities A-E equally")
def _balanced(n: int, aus: Sequence[str], n_bins: int, rng: np.random.Generator, on_share: float = 0.5,
              intensities: Sequence[float] = (1, 2, 3, 4, 5), **_) -> tuple[np.ndarray, np.ndarray]:
    _rows_needed(n)
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
                  intensities: Sequence[float] = (1, 2, 3, 4, 5), motion=None, **_) -> tuple[np.ndarray, np.ndarray]:
    _rows_needed(n)
    k = len(aus)
    if cooccurrence is None and motion is not None and motion.cooccurrence is not None:  # learned by `fewshot fit-motion`
        idx = [motion.index(a) for a in aus]
        learned = motion.cooccurrence[np.ix_(idx, idx)]
        if not np.isnan(learned).any():
            cooccurrence = learned
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


def _apportion(counts: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """Integer parts of ``share x counts`` per bin, each the floor or the ceiling, summing to
    ``round(share x counts.sum())`` (the ceilings go to the bins with the largest remainders, ties at
    random), so a grid with a row or two per bin still gets its share overall."""
    exact = share * np.asarray(counts, float)
    base = np.floor(exact).astype(int)
    extra = int(round(exact.sum())) - int(base.sum())
    if extra > 0:
        order = np.lexsort((rng.random(len(exact)), -(exact - base)))
        base[order[:extra]] += 1
    return base


def _prototype_rows(bins: np.ndarray, rows: np.ndarray, aus: list[str], levels: np.ndarray,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Intensities (len(rows), len(aus)) of EMFACS prototypes for ``rows``: within each pose bin the
    prototypes whose AUs are all in ``aus`` and the neutral face (no AU) are dealt in turn (random
    start), each at the next of
    ``levels`` (every AU of the prototype at that letter; contempt at most :data:`CONTEMPT_MAX`), so
    every bin holds every expression at every intensity as evenly as its count allows. Also returns
    the index of each row's prototype in that deal."""
    protos = [(name, p) for name, p in EXPRESSIONS.items() if all(a in aus for a in p)] + [("neutral", {})]
    inten = np.zeros((len(rows), len(aus)))
    which = np.full(len(rows), -1)
    for b in np.unique(bins[rows]):
        mine = np.flatnonzero(bins[rows] == b)
        start, lstart = rng.integers(len(protos)), rng.integers(len(levels))
        for r, i in enumerate(mine):
            k = (start + r) % len(protos)
            name, proto = protos[k]
            level = levels[(lstart + r // len(protos)) % len(levels)]
            if name == "contempt":
                level = min(level, CONTEMPT_MAX)
            for a in proto:
                inten[i, aus.index(a)] = level
            which[i] = k
    return inten, which


@GRID_STRATEGIES.register("expressions", "EMFACS prototypes and neutral faces at B-E in half of each pose bin, the rest drawn "
                                         "by co-occurrence, each AU then brought to `on_share` (0.25) of every bin (default)")
def _expressions(n: int, aus: Sequence[str], n_bins: int, rng: np.random.Generator, prototype_share: float = 0.5,
                 on_share: float = 0.25, intensities: Sequence[float] = (1, 2, 3, 4, 5),
                 prototype_intensities: Sequence[float] = (2, 3, 4, 5), **_) -> tuple[np.ndarray, np.ndarray]:
    """Faces people make, each AU still balanced: a ``prototype_share`` of every pose bin are the basic
    expressions and the neutral face (:func:`_prototype_rows`); the other rows follow the EMFACS co-occurrence
    (:func:`default_cooccurrence` rescaled so that each AU's share over the whole grid comes out near
    ``on_share``, sampled on its Chow-Liu tree as the 'cooccurrence' strategy does); then, per pose bin
    and AU, co-occurrence rows are switched on (at a random level of ``intensities``, never against an
    exclusive partner) or off until the AU is on in ``on_share x bin size`` rows (rounded up or down so
    that the whole grid holds ``round(on_share x n)``: :func:`_apportion`), where the prototypes leave
    room for it. Prototype rows are never changed. ``on_share`` 0.25 keeps about four
    AUs on per row, as in the prototypes (half of 17 AUs on at once is a face no one makes)."""
    _rows_needed(n)
    for name, v in (("prototype_share", prototype_share), ("on_share", on_share)):
        if not 0.0 <= v <= 1.0:
            raise ConfigError(f"{name} must be in [0, 1], not {v}")
    aus = list(aus)
    k = len(aus)
    levels = np.asarray(intensities, float)
    bins = _balanced_bins(n, n_bins, rng)
    counts = np.bincount(bins, minlength=n_bins)
    # which rows of each bin are prototypes: the first round(share x count) of a random order
    order = np.lexsort((rng.random(n), bins))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(n, int)
    rank[order] = np.arange(n) - starts[bins[order]]
    is_proto = rank < _apportion(counts, prototype_share, rng)[bins]
    proto_rows, rest = np.flatnonzero(is_proto), np.flatnonzero(~is_proto)
    inten = np.zeros((n, k))
    inten[proto_rows], _which = _prototype_rows(bins, proto_rows, aus, np.asarray(prototype_intensities, float), rng)
    if len(rest):
        # co-occurrence rows: the EMFACS dependencies, with the marginals that bring each AU to on_share
        want = np.clip((on_share * n - (inten[proto_rows] > 0).sum(0)) / len(rest), 0.0, 1.0)
        J = default_cooccurrence(aus)
        p = np.clip(np.diag(J), 1e-6, 1.0)
        Jr = J * np.sqrt(np.outer(want, want) / np.outer(p, p))
        Jr = np.minimum(Jr, np.minimum.outer(want, want))
        np.fill_diagonal(Jr, want)
        _, sub = _cooccurrence(len(rest), aus, 1, rng, cooccurrence=Jr, intensities=intensities)
        inten[rest] = sub
    exclusive = [(aus.index(a), aus.index(b)) for a, b in EXCLUSIVE if a in aus and b in aus]
    targets = np.stack([_apportion(counts, on_share, rng) for _ in range(k)], axis=1)  # (n_bins, k)
    for b in range(n_bins):
        in_bin = bins == b
        free = np.flatnonzero(in_bin & ~is_proto)
        for j in range(k):
            target = int(targets[b, j])
            on = inten[:, j] > 0
            excess = int(on[in_bin].sum()) - target
            if excess > 0:
                cand = free[on[free]]
                off = rng.permutation(cand)[:excess]
                inten[off, j] = 0.0
            elif excess < 0:
                blocked = np.zeros(n, bool)
                for x, y in exclusive:
                    if j == x:
                        blocked |= inten[:, y] > 0
                    elif j == y:
                        blocked |= inten[:, x] > 0
                cand = free[~on[free] & ~blocked[free]]
                up = rng.permutation(cand)[:-excess]
                inten[up, j] = levels[rng.integers(len(levels), size=len(up))]
    return bins, inten


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
    strategy: str = "expressions",
    aus: Sequence[str] | str | None = None,
    pose_bins: Sequence[Sequence[float]] | None = None,
    seed: int = 0,
    pose_jitter: float = 2.0,
    roll_jitter: float = 3.0,
    **options,
) -> pd.DataFrame:
    """Design ``n`` samples of ``profile`` (see the module docstring for the columns).

    strategy: a name in ``GRID_STRATEGIES``: 'expressions' (the default: EMFACS prototypes, neutral
        faces and co-occurring AUs, each AU on in ``on_share=0.25`` of every pose bin), 'balanced' (options ``on_share=0.5``,
        ``intensities=(1..5)``), 'factorial' (``levels=(0, 3)``; ``n=None`` for the full design),
        'cooccurrence' (``cooccurrence=`` a (k, k) joint on-probability matrix over ``aus``, e.g. from
        a fitted motion model; EMFACS defaults otherwise).
    aus: AU codes (default: :data:`DEFAULT_AUS`, BP4D's and DISFA's with AU5 and AU20). pose_bins: (yaw, pitch[, roll]) degree tuples (default: yaw
        -30..30 step 15 x pitch -15, 0, 15). Each row's pose is its bin plus uniform jitter of
        +-``pose_jitter`` (yaw, pitch) and +-``roll_jitter`` (roll) degrees, kept inside the outer
        bins' yaw and pitch (the default grid never exceeds |yaw| 30). seed: same seed, same grid.
    """
    aus = parse_aus(DEFAULT_AUS if aus is None else aus)
    bins = _parse_bins(DEFAULT_POSE_BINS if pose_bins is None else pose_bins)
    if n is not None and n < 1:
        raise ConfigError(f"--n must be at least 1, not {n}")
    if "cooccurrence" in options and options["cooccurrence"] is None:
        options.pop("cooccurrence")
    for a in aus:
        profile.motion.index(a)  # every AU needs a motion field
    strat_ss, pose_ss, seed_ss = np.random.SeedSequence(seed).spawn(3)
    # each strategy takes what it needs (e.g. 'cooccurrence' the motion model's learned matrix)
    bin_idx, inten = GRID_STRATEGIES.get(strategy)(n, aus, len(bins), np.random.default_rng(strat_ss), motion=profile.motion, **options)
    n_rows = len(bin_idx)
    prng = np.random.default_rng(pose_ss)
    angles = bins[bin_idx] + np.column_stack([
        prng.uniform(-pose_jitter, pose_jitter, n_rows), prng.uniform(-pose_jitter, pose_jitter, n_rows),
        prng.uniform(-roll_jitter, roll_jitter, n_rows)])
    angles[:, :2] = np.clip(angles[:, :2], bins[:, :2].min(0), bins[:, :2].max(0))
    full = np.zeros((n_rows, len(profile.motion.aus)))
    full[:, [profile.motion.index(a) for a in aus]] = inten
    targets = profile.landmarks_batch(angles, full)  # (n, 68, 2)

    level = dict(zip(aus, intensity_level(inten).T))
    none = np.zeros(n_rows)
    sem = {a: level.get(a, none) for a in SEMANTIC_AUS}
    if "AU12" in level:  # a strong lip-corner pull bunches the cheeks too
        sem["AU06"] = np.maximum(sem["AU06"], 0.3 * level["AU12"])

    names = np.array(bin_names(bins))
    grid = Grid(
        sample_ids=np.arange(n_rows), seeds=np.random.default_rng(seed_ss).integers(0, 2**31 - 1, n_rows),
        pose=angles, aus=tuple(aus), intensities=inten, targets=targets,
        semantic_aus=SEMANTIC_AUS, semantic=np.column_stack([sem[a] for a in SEMANTIC_AUS]),
        pose_bins=names[bin_idx], expressions=label_expressions(inten, aus),
        attrs={
            "strategy": strategy, "seed": int(seed), "aus": list(aus), "n": int(n_rows),
            "pose_bins": bins.tolist(), "pose_bin_names": names.tolist(), "source": profile.source,
            "source_fingerprint": source_fingerprint(profile.image),
            "source_sha1": file_sha1(profile.source) if profile.source and Path(profile.source).is_file() else "",
            "image_size": list(profile.image_size), "motion": profile.motion.source,
            "pose_jitter": float(pose_jitter), "roll_jitter": float(roll_jitter),
        })
    df = grid.to_table()
    df.attrs["balance"] = grid_balance(grid).astype(object).where(lambda t: t.notna(), None).to_dict("records")
    return df


def grid_balance(grid: Grid | pd.DataFrame) -> pd.DataFrame:
    """Balance report: one row per AU (``count`` = rows with it on, ``share``, its least and largest
    share within one pose bin ``bin_share_min`` / ``_max``, counts per intensity ``A..E``), per pose bin (``count``, ``share``, ``expected`` = 1 / n_bins) and per expression
    (the last two when the grid has those columns)."""
    g = as_grid(grid)
    n = max(len(g), 1)
    rows = []
    letters = [intensity_to_letter(x) for x in range(1, 6)]
    bin_of = np.asarray(g.pose_bins) if g.pose_bins is not None else np.zeros(len(g), int)
    for a, v in zip(g.aus, g.intensities.T):
        k = np.clip(np.round(v), 0, 5).astype(int)
        per = np.bincount(k, minlength=6)
        by_bin = pd.Series(v > 0).groupby(bin_of).mean() if len(g) else pd.Series(dtype=float)
        rows.append({"kind": "au", "name": a, "count": int((v > 0).sum()), "share": float((v > 0).mean()),
                     "expected": np.nan, "bin_share_min": float(by_bin.min()) if len(by_bin) else np.nan,
                     "bin_share_max": float(by_bin.max()) if len(by_bin) else np.nan,
                     **{L: int(c) for L, c in zip(letters, per[1:])}})
    if g.pose_bins is not None:
        names = g.attrs.get("pose_bin_names") or sorted(np.unique(g.pose_bins))
        counts = pd.Series(g.pose_bins).value_counts()
        for b in names:
            c = int(counts.get(b, 0))
            rows.append({"kind": "pose_bin", "name": b, "count": c, "share": c / n, "expected": 1.0 / len(names)})
    if g.expressions is not None:
        for e, c in pd.Series(g.expressions).value_counts().sort_index().items():
            rows.append({"kind": "expression", "name": e, "count": int(c), "share": c / n, "expected": np.nan})
    out = pd.DataFrame(rows, columns=["kind", "name", "count", "share", "expected", "bin_share_min", "bin_share_max",
                                      "A", "B", "C", "D", "E"])
    for L in "ABCDE":
        out[L] = out[L].astype("Int64")
    return out


# -- contact sheet -----------------------------------------------------------------------------------

_CURVES = [(np.arange(0, 17), False), (np.arange(17, 22), False), (np.arange(22, 27), False), (np.arange(27, 31), False),
           (np.arange(30, 36), True), (np.arange(36, 42), True), (np.arange(42, 48), True), (np.arange(48, 60), True),
           (np.arange(60, 68), True)]


def contact_sheet(profile: PersonProfile, grid: Grid | pd.DataFrame, n: int = 16, tile: int = 256) -> np.ndarray:
    """uint8 RGB landmark sheet (:func:`generators.sheet.tile_sheet`): up to ``n`` evenly spaced rows
    of the grid, their target landmarks drawn over the person's photo (one shared crop around the
    face, dimmed), each captioned with sample id, pose (degrees) and the AUs on (FACS letters)."""
    g = as_grid(grid)
    if len(g) == 0:
        raise ConfigError("the grid is empty; nothing to draw")
    sub = g[sheet_indices(len(g), n)]
    pts = sub.targets  # (m, 68, 2)
    allp = np.concatenate([pts.reshape(-1, 2), profile.landmarks])
    lo, hi = np.nanmin(allp, 0), np.nanmax(allp, 0)
    c, half = (lo + hi) / 2, 0.62 * float((hi - lo).max())
    x0, y0 = c - half
    s = tile / (2 * half)
    M = np.array([[s, 0, -x0 * s], [0, s, -y0 * s]])
    base = warp_crop(profile.image, M, tile, cv2.BORDER_CONSTANT)
    base = (base * 0.6).astype(np.uint8)  # dim the photo so the targets stand out
    tiles_px = np.round((pts * s + M[:, 2]) * 16).astype(np.int32)
    tiles, captions = [], []
    for t in range(len(sub)):
        im = base.copy()
        curves = [tiles_px[t, ids] for ids, _ in _CURVES]
        cv2.polylines(im, [cv for cv, (_, closed) in zip(curves, _CURVES) if not closed], False, (0, 255, 0), 1, cv2.LINE_AA, shift=4)
        cv2.polylines(im, [cv for cv, (_, closed) in zip(curves, _CURVES) if closed], True, (0, 255, 0), 1, cv2.LINE_AA, shift=4)
        tiles.append(im)
        yaw, pitch, roll = sub.pose[t]
        captions.append(f"#{sub.sample_ids[t]} y{yaw:+.0f} p{pitch:+.0f} r{roll:+.0f}\n{au_caption(sub.row_aus(t))}")
    return tile_sheet(np.stack(tiles), captions, cols=int(np.ceil(np.sqrt(len(sub)))))
