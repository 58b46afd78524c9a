"""The common frame table of every AU data set, its registry and the subject-exclusive splits.

    from experiments.datasets import load_dataset
    disfa = load_dataset("disfa", "/data/DISFA")       # AUFrames
    disfa.table                                         # one row per coded frame
    train, test = disfa.split(1)                        # ME-GraphAU fold1: test on part3
    rgb = disfa.load_image(disfa.table.iloc[0])         # uint8 (H, W, 3) RGB

Table columns (in this order; a loader may append extra columns after them):

- ``subject`` (str), ``sequence`` (str: BP4D task 'T1'..'T8', '' where a data set has none),
  ``frame`` (int: the data set's own frame number, e.g. DISFA's 1-based frameIdx),
- ``image_path`` (str: an extracted frame image, '' if none), ``video_path`` (str, '' if images),
  ``video_frame`` (int: 0-based index into ``video_path``, -1 when the frame comes from an image),
- occurrence ``AU01``, ``AU02``... (int8: 1 present, 0 absent, -1 unknown / not coded),
- intensity ``AU01_int``... (float32 FACS 0..5, NaN unknown),
- landmarks ``lm_x_0..lm_x_67, lm_y_0..lm_y_67`` (float32 pixels in the 68-point iBUG scheme, 0-based;
  NaN where the data set's scheme lacks a point or no landmark file exists).

``AUFrames.aus`` lists the occurrence columns of the evaluation protocol, in protocol order (the table
may hold more); ``AUFrames.intensity_aus`` the AUs whose ``_int`` columns are meaningful.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import cv2
import numpy as np
import pandas as pd

from fewshot.errors import ConfigError, InputError
from fewshot.io import read_image
from fewshot.landmarks import N_POINTS
from fewshot.registry import Registry

LM_X = [f"lm_x_{i}" for i in range(N_POINTS)]
LM_Y = [f"lm_y_{i}" for i in range(N_POINTS)]
LANDMARK_COLUMNS = LM_X + LM_Y
META_COLUMNS = ["subject", "sequence", "frame", "image_path", "video_path", "video_frame"]

# Where each dataset's own point set sits in the 68-point iBUG scheme (0-based).
# DISFA's 66 points: the 68 without the inner-mouth corners 60 and 64.
DISFA66_TO_68 = np.array([i for i in range(N_POINTS) if i not in (60, 64)])
# BP4D's 49 points: the 68 without the jaw line 0..16 and the inner-mouth corners 60 and 64.
BP4D49_TO_68 = np.array([i for i in range(17, N_POINTS) if i not in (60, 64)])

SHIPPED_SPLITS = Path(__file__).with_name("splits.json")
FOLD_TEST_PART = {1: "part3", 2: "part2", 3: "part1"}  # ME-GraphAU naming


def au_name(number: int | str) -> str:
    """'AU01' for 1, '1', 'AU1', 'au01'."""
    s = str(number).strip()
    m = re.fullmatch(r"(?i:au)?0*(\d+)", s)
    if not m:
        raise ConfigError(f"{number!r} is not an Action Unit name; use a number or AUxx")
    return f"AU{int(m.group(1)):02d}"


def au_number(name: str) -> int:
    return int(au_name(name)[2:])


def to_68(points: np.ndarray, index68: np.ndarray) -> np.ndarray:
    """Place a data set's (..., K, 2) points into (..., 68, 2) float32 at ``index68``; the rest NaN."""
    points = np.asarray(points, dtype=np.float32)
    out = np.full(points.shape[:-2] + (N_POINTS, 2), np.nan, np.float32)
    out[..., index68, :] = points
    return out


def landmark_frame(lm68: np.ndarray) -> pd.DataFrame:
    """(N, 68, 2) -> DataFrame with lm_x_0..lm_x_67, lm_y_0..lm_y_67 (float32)."""
    lm68 = np.asarray(lm68, np.float32).reshape(-1, N_POINTS, 2)
    return pd.DataFrame(np.concatenate([lm68[:, :, 0], lm68[:, :, 1]], axis=1), columns=LANDMARK_COLUMNS)


def build_table(
    meta: pd.DataFrame,
    occurrence: Mapping[str, np.ndarray],
    intensity: Mapping[str, np.ndarray],
    landmarks: np.ndarray | None,
    extra: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Assemble a table in the documented column order and dtypes.

    meta: the META_COLUMNS (missing ones get their defaults); occurrence: AU name -> (N,) ints with -1
    unknown; intensity: AU name -> (N,) floats with NaN unknown; landmarks: (N, 68, 2) or None (NaN).
    """
    n = len(meta)
    cols: dict[str, Any] = {
        "subject": meta["subject"].astype(str).to_numpy() if "subject" in meta else np.full(n, "", object),
        "sequence": meta["sequence"].astype(str).to_numpy() if "sequence" in meta else np.full(n, "", object),
        "frame": meta["frame"].to_numpy(np.int64) if "frame" in meta else np.arange(n, dtype=np.int64),
        "image_path": meta["image_path"].astype(str).to_numpy() if "image_path" in meta else np.full(n, "", object),
        "video_path": meta["video_path"].astype(str).to_numpy() if "video_path" in meta else np.full(n, "", object),
        "video_frame": meta["video_frame"].to_numpy(np.int64) if "video_frame" in meta else np.full(n, -1, np.int64),
    }
    for au in sorted(occurrence, key=au_number):
        cols[au] = np.asarray(occurrence[au]).astype(np.int8)
    for au in sorted(intensity, key=au_number):
        cols[f"{au}_int"] = np.asarray(intensity[au], dtype=np.float32)
    table = pd.DataFrame(cols)
    for c in ("subject", "sequence", "image_path", "video_path"):
        table[c] = table[c].astype(object)
    lm = landmark_frame(landmarks if landmarks is not None else np.full((n, N_POINTS, 2), np.nan, np.float32))
    parts = [table, lm]
    if extra is not None:
        parts.append(extra.reset_index(drop=True))
    return pd.concat(parts, axis=1)


def order_columns(table: pd.DataFrame) -> pd.DataFrame:
    """Documented column order and dtypes after concatenating parts with different AU sets (an AU
    column absent from a part is unknown there: -1 / NaN)."""
    occ = sorted((c for c in table.columns if re.fullmatch(r"AU\d+", c)), key=au_number)
    inten = sorted((c for c in table.columns if re.fullmatch(r"AU\d+_int", c)), key=lambda c: au_number(c[:-4]))
    for c in occ:
        table[c] = table[c].fillna(-1).astype(np.int8)
    for c in inten:
        table[c] = table[c].astype(np.float32)
    known = set(META_COLUMNS + occ + inten + LANDMARK_COLUMNS)
    rest = [c for c in table.columns if c not in known]
    return table[META_COLUMNS + occ + inten + LANDMARK_COLUMNS + rest].reset_index(drop=True)


def load_splits(splits: str | os.PathLike | Mapping | None = None) -> dict:
    """The JAA-Net / ME-GraphAU partitions: a mapping, a JSON path, or None for the shipped copy of
    ``../shared/data/splits.json``."""
    if isinstance(splits, Mapping):
        return dict(splits)
    p = Path(splits) if splits is not None else SHIPPED_SPLITS
    if not p.is_file():
        raise ConfigError(f"{p}: no splits file; pass a JSON file with <DATASET>.parts.part1..part3 subject lists")
    return json.loads(p.read_text())


def fold_number(fold: int | str) -> int:
    m = re.fullmatch(r"(?:fold)?([123])", str(fold).strip().lower())
    if not m:
        raise ConfigError(f"fold {fold!r}: use 1, 2 or 3 (ME-GraphAU fold1 tests part3, fold2 part2, fold3 part1)")
    return int(m.group(1))


class _VideoCache:
    """Open VideoCaptures by path, remembering the next frame index so sequential reads skip seeking."""

    def __init__(self) -> None:
        self.caps: dict[str, tuple[cv2.VideoCapture, int]] = {}

    def read(self, path: str, index: int) -> np.ndarray:
        cap, nxt = self.caps.get(path, (None, -1))
        if cap is None:
            cap = cv2.VideoCapture(path)
            if not cap.isOpened():
                raise InputError(f"{path}: cannot open video (missing, corrupt or unsupported codec)")
            nxt = 0
        if index != nxt:
            cap.set(cv2.CAP_PROP_POS_FRAMES, float(index))
        ok, bgr = cap.read()
        if not ok or bgr is None:
            self.caps[path] = (cap, -1)
            raise InputError(f"{path}: cannot read frame {index} (video shorter than the labels, or corrupt)")
        self.caps[path] = (cap, index + 1)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        for cap, _ in self.caps.values():
            cap.release()
        self.caps.clear()


@dataclass(frozen=True, eq=False)  # eq by identity: comparing DataFrames elementwise is never meant
class AUFrames:
    """A data set's coded frames as one table (see the module docstring for its columns).

    name: data set name ('disfa', 'bp4d', ...); aus: protocol occurrence columns in protocol order;
    intensity_aus: AUs with meaningful 0..5 ``_int`` columns; root: the data set folder;
    info: loader facts worth recording in results (options used, counts of filled landmarks...);
    image_reader: for stores without image files (HDF5), a function row -> uint8 RGB.
    """

    name: str
    table: pd.DataFrame
    aus: list[str]
    intensity_aus: list[str]
    root: Path
    info: dict = field(default_factory=dict, compare=False)
    image_reader: Callable[[pd.Series], np.ndarray] | None = field(default=None, compare=False, repr=False)
    _videos: _VideoCache = field(default_factory=_VideoCache, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.table)

    def __getstate__(self) -> dict:  # open VideoCaptures cannot be pickled (DataLoader workers)
        state = {k: v for k, v in self.__dict__.items() if k != "_videos"}
        return state

    def __setstate__(self, state: dict) -> None:
        for k, v in state.items():
            object.__setattr__(self, k, v)
        object.__setattr__(self, "_videos", _VideoCache())

    # -- pixels --------------------------------------------------------------------------------
    def load_image(self, row: pd.Series | Mapping | int) -> np.ndarray:
        """The frame of a table row (a row, or its positional index) as uint8 (H, W, 3) RGB."""
        if isinstance(row, (int, np.integer)):
            row = self.table.iloc[int(row)]
        if self.image_reader is not None:
            return self.image_reader(row)
        if row["image_path"]:
            return read_image(row["image_path"])
        if row["video_path"]:
            return self._videos.read(str(row["video_path"]), int(row["video_frame"]))
        raise InputError(
            f"{self.name}: no image or video for subject {row['subject']} sequence {row['sequence']!r} "
            f"frame {row['frame']}; extract the frames or place the videos in the documented layout"
        )

    def close(self) -> None:
        """Release open videos (also done when the object is garbage-collected)."""
        self._videos.close()

    # -- labels as arrays ----------------------------------------------------------------------
    def occurrence(self, aus: Iterable[str] | None = None) -> np.ndarray:
        """(N, n_aus) int8, 1/0, -1 unknown, in ``aus`` order (default the protocol order)."""
        return self.table[list(aus or self.aus)].to_numpy(np.int8)

    def intensity(self, aus: Iterable[str] | None = None) -> np.ndarray:
        """(N, n_aus) float32 FACS 0..5, NaN unknown (default ``intensity_aus``)."""
        return self.table[[f"{a}_int" for a in (aus or self.intensity_aus)]].to_numpy(np.float32)

    def landmarks(self) -> np.ndarray:
        """(N, 68, 2) float32 pixels, NaN where missing."""
        xs = self.table[LM_X].to_numpy(np.float32)
        ys = self.table[LM_Y].to_numpy(np.float32)
        return np.stack([xs, ys], axis=-1)

    # -- subsets -------------------------------------------------------------------------------
    def subjects(self) -> list[str]:
        return sorted(self.table["subject"].unique().tolist())

    def subset(self, subjects: Iterable[str]) -> "AUFrames":
        """Only the rows of ``subjects`` (ConfigError naming any subject not in the table)."""
        wanted = [str(s) for s in subjects]
        unknown = sorted(set(wanted) - set(self.subjects()))
        if unknown:
            raise ConfigError(f"{self.name}: subject(s) {', '.join(unknown)} not in the data set under {self.root}")
        return self._with_table(self.table[self.table["subject"].isin(wanted)])

    def where(self, mask: np.ndarray | pd.Series) -> "AUFrames":
        """Rows where ``mask`` is true (same metadata)."""
        return self._with_table(self.table[np.asarray(mask, bool)])

    def _with_table(self, table: pd.DataFrame) -> "AUFrames":
        return replace(self, table=table.reset_index(drop=True), info=dict(self.info), _videos=_VideoCache())

    def split(self, fold: int | str, splits: str | os.PathLike | Mapping | None = None) -> tuple["AUFrames", "AUFrames"]:
        """(train, test) of a standard subject-exclusive fold (ME-GraphAU naming: fold1 tests on
        part3 and trains on part1+part2, fold2 tests part2, fold3 tests part1).

        Subjects of the table that no part lists are left out of both, with a warning.
        """
        k = fold_number(fold)
        data = load_splits(splits)
        key = {"disfa": "DISFA", "bp4d": "BP4D"}.get(self.name, self.name)
        if key not in data or "parts" not in data[key]:
            raise ConfigError(f"{self.name}: the splits file has no '{key}' partition; pass splits= for this data set")
        parts = data[key]["parts"]
        test_part = FOLD_TEST_PART[k]
        test_subjects = set(parts[test_part])
        train_subjects = set().union(*(set(v) for p, v in parts.items() if p != test_part))
        have = set(self.subjects())
        orphans = sorted(have - test_subjects - train_subjects)
        if orphans:
            warnings.warn(f"{self.name}: subjects {', '.join(orphans)} are in no {key} part; left out of fold{k}", stacklevel=2)
        tab = self.table
        train = self._with_table(tab[tab["subject"].isin(train_subjects)])
        test = self._with_table(tab[tab["subject"].isin(test_subjects)])
        for part in (train, test):
            part.info["fold"] = k
        return train, test


DATASETS: Registry[AUFrames] = Registry("dataset")


def load_dataset(name: str, root: str | os.PathLike, **opts) -> AUFrames:
    """Load a registered data set (``DATASETS.names()``) from ``root``; options as its loader documents.

    Raises ConfigError for an unknown name or option, DatasetFormatError / ConfigError for a file or
    layout that does not match the documented format.
    """
    factory = DATASETS.get(name)
    try:
        inspect.signature(factory).bind(root, **opts)
    except TypeError as e:
        allowed = [p for p in inspect.signature(factory).parameters if p != "root"]
        raise ConfigError(f"dataset {name!r}: {e}; options: {', '.join(allowed)}") from None
    return factory(root, **opts)
