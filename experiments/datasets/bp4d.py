"""BP4D-Spontaneous: per-sequence occurrence CSVs, per-AU intensity CSVs, MATLAB v7.3 landmark tracks, JPG frames.

Layout (see ../shared/formats/DISFA_BP4D.md)::

    BP4D/AUCoding/AU_OCC/F001_T1.csv            header '0,1,2,...' (col 0 = frame); 0/1, 9 = not coded
    BP4D/AUCoding/AU_INT/AU06/F001_T1_AU06.csv  no header, 'frame,intensity' 0..5, 9 = unknown
    BP4D/2DFeatures/F001_T1.mat                 HDF5: fit/pred = one object reference per frame -> 2x49
    BP4D/2D+3D/F001/T1/2440.jpg                 frame images (any zero padding: 0037.jpg)

Only rows of AU_OCC become table rows (the coded stretch of each sequence). ``fit/pred[i]`` is taken to
be frame ``i + lm_first_frame`` (1 by default: the tracks cover the whole video from its first frame;
less certain, hence the option).
"""

from __future__ import annotations

import csv
import io
import re
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from fewshot.errors import ConfigError, DatasetFormatError

from ._files import frame_images, parse_int, resolve_root, text_lines
from .base import BP4D49_TO_68, DATASETS, AUFrames, au_name, build_table, order_columns, to_68

BP4D_SUBJECTS = [f"F{i:03d}" for i in range(1, 24)] + [f"M{i:03d}" for i in range(1, 19)]
BP4D_PROTOCOL = [1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24]
BP4D_INTENSITY = [6, 10, 12, 14, 17]
LAYOUT = "BP4D/AUCoding/AU_OCC/F001_T1.csv, BP4D/AUCoding/AU_INT/AU06/F001_T1_AU06.csv, BP4D/2DFeatures/F001_T1.mat, BP4D/2D+3D/F001/T1/2440.jpg"
IMAGE_DIRS = ("2D+3D", "img", "images", "Images", "Sequences", "frames")
UNKNOWN = 9

_SEQ_FILE = re.compile(r"^(.+)_(T\d+)\.csv$", re.IGNORECASE)


def read_occurrence_csv(path: Path, strict_aus: Sequence[int] = BP4D_PROTOCOL) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(frames int64, AU name -> int8 with -1 for 9 = not coded) of one AU_OCC file.

    Values of ``strict_aus`` must be 0, 1 or 9 (DatasetFormatError naming file and line); other columns
    (some copies end with an occlusion flag) keep 0/1 and read anything else as unknown.
    """
    rows = list(text_lines(path))
    if not rows:
        raise DatasetFormatError(f"{path}: empty file (expected a header row '0,1,2,...' then one row per frame)")
    no, header_line = rows[0]
    header = next(csv.reader(io.StringIO(header_line)))
    try:
        numbers = [int(float(h)) for h in header]
    except ValueError:
        raise DatasetFormatError(f"{path}:{no}: header {header_line!r} is not the AU number row '0,1,2,...'") from None
    if numbers[0] != 0 or len(numbers) < 2:
        raise DatasetFormatError(f"{path}:{no}: header must start with column '0' (the frame number), got {header_line!r}")
    aus = [au_name(n) for n in numbers[1:]]
    strict = np.array([n in set(strict_aus) for n in numbers[1:]])
    width = len(header)
    data = np.empty((len(rows) - 1, width), np.int64)
    for r, (no, line) in enumerate(rows[1:]):
        cells = line.split(",")
        if len(cells) != width:
            raise DatasetFormatError(f"{path}:{no}: {len(cells)} columns, the header has {width}")
        data[r] = [parse_int(c, path, no, "value") for c in cells]
        bad = strict & ~np.isin(data[r, 1:], (0, 1, UNKNOWN))
        if bad.any():
            j = int(np.argmax(bad))
            raise DatasetFormatError(f"{path}:{no}: {aus[j]} = {data[r, 1 + j]}, expected 0, 1 or 9 (not coded)")
    frames = data[:, 0]
    if len(np.unique(frames)) != len(frames):
        dup = int(frames[np.argmax(np.bincount(frames - frames.min()))] if len(frames) else 0)
        raise DatasetFormatError(f"{path}: frame {dup} appears twice")
    occ: dict[str, np.ndarray] = {}
    for j, a in enumerate(aus):
        col = data[:, 1 + j]
        occ[a] = np.where(np.isin(col, (0, 1)), col, -1).astype(np.int8)
    return frames, occ


def read_intensity_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(frames int64, intensity float32 0..5 with NaN for 9 = unknown) of one AU_INT file."""
    frames, values = [], []
    for no, line in text_lines(path):
        cells = line.split(",")
        if len(cells) != 2:
            raise DatasetFormatError(f"{path}:{no}: expected 'frame,intensity' (2 comma-separated integers), got {line!r}")
        fr = parse_int(cells[0], path, no, "frame")
        v = parse_int(cells[1], path, no, "intensity")
        if not (0 <= v <= 5 or v == UNKNOWN):
            raise DatasetFormatError(f"{path}:{no}: intensity {v} outside 0..5 (9 = unknown)")
        frames.append(fr)
        values.append(np.nan if v == UNKNOWN else float(v))
    return np.asarray(frames, np.int64), np.asarray(values, np.float32)


def read_landmark_track(path: Path) -> np.ndarray:
    """(n_frames, 49, 2) float32 of a 2DFeatures .mat (v7.3: fit/pred object references to 2x49 arrays;
    NaN for frames where the tracker stored an empty array)."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError:
        return _read_landmark_track_v5(path)
    with f:
        if "fit" not in f or "pred" not in f["fit"]:
            raise DatasetFormatError(f"{path}: no 'fit/pred' dataset (expected MATLAB v7.3 struct fit with field pred)")
        refs = np.asarray(f["fit/pred"]).reshape(-1)
        out = np.full((len(refs), 49, 2), np.nan, np.float32)
        for i, ref in enumerate(refs):
            if not ref:
                continue
            ds = f[ref]
            arr = np.asarray(ds)
            if ds.attrs.get("MATLAB_empty", 0) or arr.size == 0:
                continue
            if arr.shape == (2, 49):
                out[i] = arr.T
            else:
                raise DatasetFormatError(f"{path}: fit/pred entry {i} (frame {i + 1}) has shape {arr.shape}, expected 2x49")
    return out


def _read_landmark_track_v5(path: Path) -> np.ndarray:
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path), variable_names=["fit"])
        pred = mat["fit"]["pred"][0, 0].reshape(-1)
    except Exception as e:
        raise DatasetFormatError(f"{path}: not a MATLAB file with fit.pred ({e}); expected v7.3 (HDF5)") from None
    out = np.full((len(pred), 49, 2), np.nan, np.float32)
    for i, p in enumerate(pred):
        p = np.asarray(p, np.float32)
        if p.size:
            out[i] = p if p.shape == (49, 2) else p.T
    return out


@DATASETS.register("bp4d", "BP4D-Spontaneous: 41 subjects x 8 tasks, 12 protocol AUs (0/1), 5 with intensity")
def load_bp4d(
    root,
    aus: str | Sequence = "protocol",
    intensity: bool = True,
    frames: str = "auto",
    images_dir: str | None = None,
    landmarks: bool = True,
    lm_first_frame: int = 1,
    subjects: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
) -> AUFrames:
    """Load BP4D from ``root`` (the folder holding AUCoding, or its parent).

    aus: 'protocol' (1 2 4 6 7 10 12 14 15 17 23 24) or a list -> ``AUFrames.aus``; the table keeps every
        AU column of the AU_OCC files. intensity: read AU_INT (AUs 6 10 12 14 17).
    frames: 'auto' / 'images' (frame JPGs under images_dir, default 2D+3D/) / 'none'.
    landmarks: read 2DFeatures; lm_first_frame: the frame number of fit/pred's first entry.
    subjects, tasks: load only these (e.g. ['F001'], ['T1']).
    """
    base = resolve_root(root, "AUCoding", "BP4D", LAYOUT)
    if frames not in ("auto", "images", "none"):
        raise ConfigError(f"frames={frames!r}: use auto, images or none (BP4D ships frame images)")
    occ_dir = base / "AUCoding" / "AU_OCC"
    if not occ_dir.is_dir():
        raise ConfigError(f"{base / 'AUCoding'}: no 'AU_OCC' folder; expected the BP4D layout {LAYOUT}")
    if aus == "protocol":
        protocol = [au_name(a) for a in BP4D_PROTOCOL]
    elif isinstance(aus, str):
        raise ConfigError(f"aus={aus!r}: use 'protocol' or a list of AU numbers")
    else:
        protocol = [au_name(a) for a in aus]

    seqs: list[tuple[str, str, Path]] = []
    for f in sorted(occ_dir.iterdir()):
        if f.suffix.lower() != ".csv":
            continue
        m = _SEQ_FILE.match(f.name)
        if m is None:
            raise DatasetFormatError(f"{f}: unexpected file name (AU_OCC files are named <subject>_<task>.csv, e.g. F001_T1.csv)")
        subj, task = m.group(1), m.group(2).upper()
        if subjects is not None and subj not in set(subjects):
            continue
        if tasks is not None and task not in {t.upper() for t in tasks}:
            continue
        seqs.append((subj, task, f))
    if subjects is not None:
        missing = sorted(set(subjects) - {s for s, _, _ in seqs})
        if missing:
            raise ConfigError(f"{occ_dir}: no AU_OCC files for subject(s) {', '.join(missing)}")
    if not seqs:
        raise ConfigError(f"{occ_dir}: no <subject>_<task>.csv files; expected the BP4D layout {LAYOUT}")

    int_dir = base / "AUCoding" / "AU_INT"
    lm_dir = base / "2DFeatures"
    img_root = None
    if frames != "none":
        for d in ([images_dir] if images_dir else IMAGE_DIRS):
            if Path(base, d).is_dir():
                img_root = Path(base, d)
                break
        if frames == "images" and img_root is None:
            raise ConfigError(f"{base}: no frame images folder (expected {images_dir or '2D+3D'}/F001/T1/2440.jpg)")

    tables = []
    missing_int: list[str] = []
    missing_lm: list[str] = []
    missing_img: list[str] = []
    for subj, task, occ_file in seqs:
        frame_nums, occ = read_occurrence_csv(occ_file, [int(a[2:]) for a in protocol])
        n = len(frame_nums)
        inten: dict[str, np.ndarray] = {}
        if intensity:
            for a in BP4D_INTENSITY:
                name = au_name(a)
                p = int_dir / name / f"{subj}_{task}_{name}.csv"
                col = np.full(n, np.nan, np.float32)
                if p.is_file():
                    fr, val = read_intensity_csv(p)
                    pos = {int(x): i for i, x in enumerate(frame_nums)}
                    for x, v in zip(fr, val):
                        if int(x) in pos:
                            col[pos[int(x)]] = v
                else:
                    missing_int.append(p.name)
                inten[name] = col
        meta = pd.DataFrame({"subject": subj, "sequence": task, "frame": frame_nums})
        meta["image_path"], meta["video_path"], meta["video_frame"] = "", "", -1
        if img_root is not None:
            imgs = frame_images(img_root / subj / task)
            if not imgs:
                missing_img.append(f"{subj}/{task}")
            meta["image_path"] = [str(imgs[int(f)]) if int(f) in imgs else "" for f in frame_nums]
        lm68 = None
        if landmarks:
            p = lm_dir / f"{subj}_{task}.mat"
            if p.is_file():
                track = read_landmark_track(p)
                idx = frame_nums - lm_first_frame
                ok = (idx >= 0) & (idx < len(track))
                pts = np.full((n, 49, 2), np.nan, np.float32)
                pts[ok] = track[idx[ok]]
                lm68 = to_68(pts, BP4D49_TO_68)
            else:
                missing_lm.append(p.name)
        tables.append(build_table(meta, occ, inten, lm68))

    if frames == "images" and missing_img:
        raise ConfigError(f"{img_root}: no frame images for {', '.join(missing_img[:5])} (expected {img_root.name}/F001/T1/2440.jpg)")
    for what, items in (("intensity files", missing_int), ("landmark files", missing_lm)):
        if items:
            warnings.warn(f"BP4D: {len(items)} {what} missing (e.g. {items[0]}); those values are NaN", stacklevel=2)
    table = order_columns(pd.concat(tables, ignore_index=True))
    for a in protocol:
        if a not in table.columns:
            raise DatasetFormatError(f"{occ_dir}: no AU_OCC file has a column for {a} (header numbers are AU numbers)")
    info = {"lm_first_frame": lm_first_frame, "missing_intensity_files": missing_int, "missing_landmark_files": missing_lm, "sequences_without_images": missing_img}
    intensity_aus = [au_name(a) for a in BP4D_INTENSITY] if intensity else []
    return AUFrames("bp4d", table, protocol, intensity_aus, base, info)
