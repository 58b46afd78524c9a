"""Aligned-face sets: align a data set once into ``aligned.h5``, then train from it.

    from au_models.cache import build_cache, load_aligned
    build_cache(frames, "bp4d_aligned.h5")        # frames: experiments.datasets.AUFrames
    data = load_aligned("bp4d_aligned.h5")        # AlignedSet (arrays, or lazily read HDF5)

``aligned.h5`` layout (N faces, crop side S, A occurrence AUs, I intensity AUs):

- ``images`` (N, S, S, 3) uint8 RGB aligned crops, chunked (64 faces), gzip-free for speed;
- ``landmarks`` (N, 68, 2) float32 in crop pixels (NaN missing); ``ok`` (N,) bool (False: the frame could
  not be read, or the face not found or aligned; its crop is black and training skips it);
- ``occ`` (N, A) int8 1/0/-1, attribute ``aus``; ``intensity`` (N, I) float32 0..5 NaN unknown, attribute
  ``intensity_aus``; ``expr`` (N,) int8 index into ``expressions`` attribute, -1 unknown;
- ``subject``, ``sequence`` (N,) strings; ``frame`` (N,) int64;
- root attributes: ``crop_size``, ``face_width``, ``center_y``, ``template_hash``, ``source`` (data set
  name and root), ``n``, ``done`` (rows written; < n while incomplete), ``format`` = 'fewshot-aligned-1'.

Writing is resumable: rows are aligned and written in chunks to ``<out>.partial`` whose ``done``
attribute records progress; re-running with the same inputs continues from there; the file is renamed
onto ``<out>`` only when complete.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from fewshot.analysis import Analyzer
from fewshot.errors import ConfigError, InputError
from fewshot.landmarks import STABLE

from .align import AlignConfig, align_faces, canonical_template, template_hash
from .heads import EXPRESSIONS

FORMAT = "fewshot-aligned-1"
CHUNK = 64


@dataclass
class AlignedSet:
    """Aligned faces with labels, in memory (numpy) or lazily read from ``aligned.h5`` (h5py datasets).

    images (N, S, S, 3) uint8 RGB; landmarks (N, 68, 2) float32 crop pixels; occ (N, A) int8 1/0/-1;
    intensity (N, I) float32 NaN unknown; expr (N,) int64 -1 unknown; subjects (N,) str; frames (N,) int64.
    """

    images: object
    landmarks: np.ndarray
    occ: np.ndarray
    intensity: np.ndarray
    expr: np.ndarray
    subjects: np.ndarray
    aus: list[str]
    intensity_aus: list[str]
    expressions: list[str] = field(default_factory=lambda: list(EXPRESSIONS))
    frames: np.ndarray | None = None
    align: AlignConfig = field(default_factory=AlignConfig)
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.landmarks)
        self.occ = np.asarray(self.occ, np.int8).reshape(n, len(self.aus))
        self.intensity = np.asarray(self.intensity, np.float32).reshape(n, len(self.intensity_aus))
        self.expr = np.asarray(self.expr, np.int64).reshape(n)
        self.subjects = np.asarray(self.subjects).astype(str)
        self.frames = np.arange(n) if self.frames is None else np.asarray(self.frames, np.int64)

    def __len__(self) -> int:
        return len(self.landmarks)

    def take_images(self, idx: np.ndarray) -> np.ndarray:
        """(len(idx), S, S, 3) uint8 for row indices (h5py needs increasing indices: sorted, then undone)."""
        idx = np.asarray(idx, np.int64)
        if isinstance(self.images, np.ndarray):
            return self.images[idx]
        order = np.argsort(idx, kind="stable")
        uniq, inv = np.unique(idx[order], return_inverse=True)
        block = self.images[uniq.tolist()]
        out = np.empty((len(idx),) + block.shape[1:], np.uint8)
        out[order] = block[inv]
        return out

    def subset(self, idx: np.ndarray | Sequence[int]) -> "AlignedSet":
        """Rows ``idx`` (images loaded into memory)."""
        idx = np.asarray(idx, np.int64)
        return AlignedSet(
            self.take_images(idx), self.landmarks[idx], self.occ[idx], self.intensity[idx], self.expr[idx],
            self.subjects[idx], list(self.aus), list(self.intensity_aus), list(self.expressions), self.frames[idx], self.align, self.source,
        )  # fmt: skip

    def by_subjects(self, subjects: Sequence[str]) -> "AlignedSet":
        return self.subset(np.flatnonzero(np.isin(self.subjects, list(subjects))))


def _expr_index(values, expressions: Sequence[str]) -> np.ndarray:
    synonyms = {"smiling": "happy", "happiness": "happy", "sadness": "sad", "surprised": "surprise", "angry": "anger", "disgusted": "disgust", "fearful": "fear"}
    lookup = {e: i for i, e in enumerate(expressions)}
    out = np.full(len(values), -1, np.int64)
    for i, v in enumerate(values):
        if isinstance(v, str) and v:
            out[i] = lookup.get(synonyms.get(v.lower(), v.lower()), -1)
    return out


def frames_labels(frames, aus: Sequence[str] | None = None, intensity_aus: Sequence[str] | None = None) -> dict:
    """Label arrays of an AUFrames table: occ (N, A), intensity (N, I), expr (N,), subjects, frames."""
    t = frames.table
    aus = list(aus or frames.aus)
    intensity_aus = list(frames.intensity_aus if intensity_aus is None else intensity_aus)
    occ = np.stack([t[a].to_numpy(np.int8) if a in t else np.full(len(t), -1, np.int8) for a in aus], 1) if aus else np.zeros((len(t), 0), np.int8)
    inten = (
        np.stack([t[f"{a}_int"].to_numpy(np.float32) if f"{a}_int" in t else np.full(len(t), np.nan, np.float32) for a in intensity_aus], 1)
        if intensity_aus else np.zeros((len(t), 0), np.float32)
    )  # fmt: skip
    expr = _expr_index(t["expression"].tolist(), EXPRESSIONS) if "expression" in t else np.full(len(t), -1, np.int64)
    return dict(aus=aus, intensity_aus=intensity_aus, occ=occ, intensity=inten, expr=expr,
                subjects=t["subject"].astype(str).to_numpy(), frames=t["frame"].to_numpy(np.int64))  # fmt: skip


def _detect_landmarks(image: np.ndarray, analyzer) -> np.ndarray:
    found = analyzer.analyze_image(image)
    return found[0].landmarks if found else np.full((68, 2), np.nan)


def build_cache(
    frames,
    out: str | os.PathLike,
    align: AlignConfig = AlignConfig(),
    aus: Sequence[str] | None = None,
    intensity_aus: Sequence[str] | None = None,
    landmarks: str = "auto",
    analyzer=None,
    progress: bool = True,
) -> Path:
    """Align every row of an AUFrames into ``out`` (see the module docstring); returns ``out``.

    landmarks: 'dataset' (the table's lm_* columns), 'detect' (run fewshot's Analyzer on each frame) or
    'auto' (the table's when a row has >= 3 of the stable points, else detect). An existing complete
    ``out`` made from the same source and template is reused as it is.
    """
    import h5py

    out = Path(out)
    if landmarks not in ("auto", "dataset", "detect"):
        raise ConfigError(f"landmarks={landmarks!r}: use auto, dataset or detect")
    lab = frames_labels(frames, aus, intensity_aus)
    n = len(frames.table)
    source = f"{frames.name}:{Path(frames.root).resolve()}:{n}"
    tpl_hash = template_hash(canonical_template(align))
    S = align.crop_size
    if out.is_file():
        with h5py.File(out, "r") as f:
            if f.attrs.get("source") == source and f.attrs.get("template_hash") == tpl_hash and int(f.attrs.get("done", -1)) == n:
                return out
        raise ConfigError(f"{out}: exists but was made from other data or another alignment; delete it or pick another --cache path")
    partial = out.with_name(out.name + ".partial")
    f = None
    if partial.is_file():
        try:
            f = h5py.File(partial, "a")
            if f.attrs.get("source") != source or f.attrs.get("template_hash") != tpl_hash or f["images"].shape[0] != n:
                f.close()
                f = None
                partial.unlink()
        except OSError:  # a partial file broken by a hard kill: start over
            f = None
            partial.unlink()
    if f is None:
        out.parent.mkdir(parents=True, exist_ok=True)
        f = h5py.File(partial, "w")
        f.attrs.update(format=FORMAT, source=source, template_hash=tpl_hash, n=n, done=0, **align.to_dict())
        f.create_dataset("images", (n, S, S, 3), np.uint8, chunks=(min(CHUNK, max(n, 1)), S, S, 3))
        f.create_dataset("landmarks", (n, 68, 2), np.float32, fillvalue=np.nan)
        f.create_dataset("ok", (n,), bool)
        f.create_dataset("occ", data=lab["occ"]).attrs["aus"] = lab["aus"]
        f.create_dataset("intensity", data=lab["intensity"]).attrs["intensity_aus"] = lab["intensity_aus"]
        f.create_dataset("expr", data=lab["expr"].astype(np.int8)).attrs["expressions"] = list(EXPRESSIONS)
        f.create_dataset("subject", data=lab["subjects"].astype(object), dtype=h5py.string_dtype())
        seq = frames.table["sequence"].astype(str).to_numpy() if "sequence" in frames.table else np.full(n, "")
        f.create_dataset("sequence", data=seq.astype(object), dtype=h5py.string_dtype())
        f.create_dataset("frame", data=lab["frames"])
    with f:
        lm_all = frames.landmarks()
        done = int(f.attrs["done"])
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=n, initial=done, desc=f"align {frames.name}", unit="face", file=sys.stderr, dynamic_ncols=True)
        skipped: list[str] = []
        for start in range(done, n, CHUNK):
            rows = range(start, min(n, start + CHUNK))
            imgs, lms = [], []
            for i in rows:
                try:
                    img = frames.load_image(i)
                except InputError as e:  # a missing / unreadable frame: recorded as ok=False, not fatal
                    skipped.append(f"{i}: {e}")
                    imgs.append(np.zeros((1, 1, 3), np.uint8))
                    lms.append(np.full((68, 2), np.nan))
                    continue
                lm = lm_all[i].astype(np.float64)
                have = np.isfinite(lm[STABLE]).all(1).sum()
                if landmarks == "detect" or (landmarks == "auto" and have < 3):
                    if analyzer is None:
                        analyzer = Analyzer(embed=False, track=False)
                    lm = _detect_landmarks(img, analyzer)
                imgs.append(img)
                lms.append(lm)
            crops, crop_lm, ok = align_faces(imgs, np.stack(lms), align)
            f["images"][rows.start : rows.stop] = crops
            f["landmarks"][rows.start : rows.stop] = crop_lm
            f["ok"][rows.start : rows.stop] = ok
            f.attrs["done"] = rows.stop
            f.flush()
            if bar is not None:
                bar.update(len(rows))
        if bar is not None:
            bar.close()
        frames.close()
        if skipped:
            import warnings

            warnings.warn(f"{frames.name}: {len(skipped)} frame(s) could not be read and are marked ok=False (first: {skipped[0]})", stacklevel=2)
    os.replace(partial, out)
    return out


def _strs(values) -> np.ndarray:
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in values], dtype=object).astype(str)


def load_aligned(path: str | os.PathLike, in_memory: bool = True, only_ok: bool = True) -> AlignedSet:
    """Read ``aligned.h5`` as an :class:`AlignedSet` (images loaded unless ``in_memory=False``; then the
    file stays open for lazy reads). ``only_ok`` drops faces that could not be aligned."""
    import h5py

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no aligned cache; build one with au_models.cache.build_cache")
    try:
        f = h5py.File(p, "r")
    except OSError as e:
        raise InputError(f"{p}: not a readable HDF5 file ({e}); delete it and rebuild") from None
    if f.attrs.get("format") != FORMAT or int(f.attrs.get("done", -1)) != int(f.attrs.get("n", -2)):
        f.close()
        raise InputError(f"{p}: not a complete fewshot aligned cache; delete it and rebuild")
    align = AlignConfig(int(f.attrs["crop_size"]), float(f.attrs["face_width"]), float(f.attrs["center_y"]))
    ok = np.asarray(f["ok"], bool)
    keep = np.flatnonzero(ok) if only_ok else np.arange(len(ok))
    images = np.asarray(f["images"])[keep] if in_memory else f["images"]
    data = AlignedSet(
        images=images,
        landmarks=np.asarray(f["landmarks"], np.float32)[keep],
        occ=np.asarray(f["occ"], np.int8)[keep],
        intensity=np.asarray(f["intensity"], np.float32)[keep],
        expr=np.asarray(f["expr"], np.int64)[keep],
        subjects=_strs(f["subject"][:])[keep],
        aus=[str(a) for a in _strs(f["occ"].attrs["aus"])] if len(f["occ"].attrs["aus"]) else [],
        intensity_aus=[str(a) for a in _strs(f["intensity"].attrs["intensity_aus"])] if len(f["intensity"].attrs["intensity_aus"]) else [],
        frames=np.asarray(f["frame"], np.int64)[keep],
        align=align,
        source=str(f.attrs["source"]),
    )
    if not in_memory:
        if not only_ok or ok.all():
            data.images = f["images"]
        else:  # lazy reads must map kept rows to file rows
            data.images = _RowView(f["images"], keep)
    else:
        f.close()
    return data


class _RowView:
    """h5py dataset seen through a row index (kept rows only)."""

    def __init__(self, ds, rows: np.ndarray) -> None:
        self.ds, self.rows = ds, rows
        self.shape = (len(rows),) + ds.shape[1:]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx):
        return self.ds[self.rows[np.asarray(idx)].tolist()]


def concat_sets(sets: Sequence[AlignedSet]) -> AlignedSet:
    """One in-memory AlignedSet from several with the same crop; labels are merged by AU name (the
    union of AU lists, -1 / NaN where a set lacks an AU)."""
    if not sets:
        raise ConfigError("nothing to concatenate")
    crop = {s.align.crop_size for s in sets}
    if len(crop) > 1:
        raise ConfigError(f"cannot concatenate sets of crop sizes {sorted(crop)}")
    aus = list(dict.fromkeys(a for s in sets for a in s.aus))
    int_aus = list(dict.fromkeys(a for s in sets for a in s.intensity_aus))

    def widen(s: AlignedSet) -> tuple[np.ndarray, np.ndarray]:
        occ = np.full((len(s), len(aus)), -1, np.int8)
        inten = np.full((len(s), len(int_aus)), np.nan, np.float32)
        for j, a in enumerate(s.aus):
            occ[:, aus.index(a)] = s.occ[:, j]
        for j, a in enumerate(s.intensity_aus):
            inten[:, int_aus.index(a)] = s.intensity[:, j]
        return occ, inten

    wide = [widen(s) for s in sets]
    return AlignedSet(
        images=np.concatenate([s.take_images(np.arange(len(s))) for s in sets]),
        landmarks=np.concatenate([s.landmarks for s in sets]),
        occ=np.concatenate([w[0] for w in wide]),
        intensity=np.concatenate([w[1] for w in wide]),
        expr=np.concatenate([s.expr for s in sets]),
        subjects=np.concatenate([s.subjects for s in sets]),
        aus=aus,
        intensity_aus=int_aus,
        frames=np.concatenate([s.frames for s in sets]),
        align=sets[0].align,
        source="+".join(dict.fromkeys(s.source for s in sets)),
    )
