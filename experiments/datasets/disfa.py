"""DISFA: per-AU intensity label files, per-frame landmark .mat files, left-camera videos or extracted frames.

Layout (see ../shared/formats/DISFA_BP4D.md)::

    DISFA/ActionUnit_Labels/SN001/SN001_au1.txt              'frameIdx,intensity', frameIdx 1-based
    DISFA/Landmark_Points/SN001/tmp_frame_lm/SN001_0000_lm.mat  variable 'pts' (66, 2), 0-based frame
                                     (or l00001_lm.mat: 'l0' + the 1-based frame, 4 digits)
    DISFA/Videos_LeftCamera/LeftVideoSN001_comp.avi          video_frame = frameIdx - 1
    DISFA/img/SN001/0.png                                    extracted frames (0-based), optional

Occurrence = intensity >= ``threshold`` (2 by convention). A frame whose landmark file is missing gets
the nearest frame's landmarks (the earlier one on a tie), as the reference loaders do; the count is
kept in ``info['landmarks_filled']``.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from fewshot.errors import ConfigError, DatasetFormatError

from ._files import frame_images, parse_int, resolve_root, text_lines
from .base import DATASETS, DISFA66_TO_68, AUFrames, au_name, build_table, order_columns, to_68

DISFA_SUBJECTS = [f"SN{i:03d}" for i in range(1, 33) if i not in (14, 15, 19, 20, 22)]
DISFA_CODED = [1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26]
DISFA_PROTOCOL = [1, 2, 4, 6, 9, 12, 25, 26]
LAYOUT = "DISFA/ActionUnit_Labels/SN001/SN001_au1.txt, DISFA/Landmark_Points/SN001/tmp_frame_lm/SN001_0000_lm.mat, DISFA/Videos_LeftCamera/LeftVideoSN001_comp.avi"
IMAGE_DIRS = ("img", "images", "Images", "Img", "frames", "Frames", ".")

_LABEL_FILE = re.compile(r"^(SN\d+)_au(\d+)\.txt$", re.IGNORECASE)
_LM_SUBJECT = re.compile(r"^SN\d+_(\d+)_lm\.mat$", re.IGNORECASE)
_LM_L0 = re.compile(r"^l(\d+)_lm\.mat$", re.IGNORECASE)


def read_label_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(frames 1-based int64, intensities int8 0..5) of one DISFA label file; DatasetFormatError naming
    file and line for anything else."""
    frames: list[int] = []
    values: list[int] = []
    seen: set[int] = set()
    for no, line in text_lines(path):
        parts = line.split(",")
        if len(parts) != 2:
            raise DatasetFormatError(f"{path}:{no}: expected 'frameIdx,intensity' (2 comma-separated integers), got {line!r}")
        fr = parse_int(parts[0], path, no, "frameIdx")
        v = parse_int(parts[1], path, no, "intensity")
        if fr < 1:
            raise DatasetFormatError(f"{path}:{no}: frameIdx {fr} < 1 (DISFA frame indices are 1-based)")
        if not 0 <= v <= 5:
            raise DatasetFormatError(f"{path}:{no}: intensity {v} outside the FACS range 0..5")
        if fr in seen:
            raise DatasetFormatError(f"{path}:{no}: frameIdx {fr} appears twice")
        seen.add(fr)
        frames.append(fr)
        values.append(v)
    if not frames:
        raise DatasetFormatError(f"{path}: empty label file (expected one 'frameIdx,intensity' line per frame)")
    return np.asarray(frames, np.int64), np.asarray(values, np.int8)


def read_landmark_mat(path: Path) -> np.ndarray:
    """(66, 2) float32 pixel x,y of one DISFA landmark file (variable 'pts'; v5 or v7.3 .mat)."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path), variable_names=["pts"])
        pts = mat.get("pts")
    except NotImplementedError:  # MATLAB v7.3 = HDF5
        import h5py

        with h5py.File(path, "r") as f:
            pts = np.asarray(f["pts"]).T if "pts" in f else None
    except Exception as e:  # scipy raises ValueError/TypeError/OSError variants on garbage
        raise DatasetFormatError(f"{path}: not a readable MATLAB .mat file ({e})") from None
    if pts is None:
        raise DatasetFormatError(f"{path}: no variable 'pts' (expected the 66x2 landmark array)")
    pts = np.asarray(pts, dtype=np.float32)
    if pts.shape == (2, 66):
        pts = pts.T
    if pts.shape != (66, 2):
        raise DatasetFormatError(f"{path}: 'pts' has shape {pts.shape}, expected (66, 2)")
    return pts


def landmark_files(folder: Path, l0_frame_base: int = 1) -> dict[int, Path]:
    """1-based frame -> landmark file, for either naming: SN001_{frame-1:04d}_lm.mat or l0{frame:04d}_lm.mat."""
    out: dict[int, Path] = {}
    if not folder.is_dir():
        return out
    for f in folder.iterdir():
        m = _LM_SUBJECT.match(f.name)
        if m:
            out[int(m.group(1)) + 1] = f
            continue
        m = _LM_L0.match(f.name)
        if m:
            out[int(m.group(1)) - l0_frame_base + 1] = f
    return out


def _nearest_fill(frames: np.ndarray, available: np.ndarray) -> np.ndarray:
    """For each frame, the nearest available frame number (earlier on a tie)."""
    pos = np.searchsorted(available, frames)
    lo = available[np.clip(pos - 1, 0, len(available) - 1)]
    hi = available[np.clip(pos, 0, len(available) - 1)]
    return np.where(np.abs(frames - lo) <= np.abs(hi - frames), lo, hi)


def _protocol_aus(aus: str | Sequence) -> list[str]:
    if aus == "protocol":
        return [au_name(a) for a in DISFA_PROTOCOL]
    if aus == "all":
        return [au_name(a) for a in DISFA_CODED]
    if isinstance(aus, str):
        raise ConfigError(f"aus={aus!r}: use 'protocol', 'all' or a list of AU numbers")
    return [au_name(a) for a in aus]


@DATASETS.register("disfa", "DISFA: 27 subjects, 12 AUs with 0..5 intensity (protocol: 8 AUs, >= 2 present)")
def load_disfa(
    root,
    aus: str | Sequence = "protocol",
    threshold: int = 2,
    frames: str = "auto",
    camera: str = "left",
    images_dir: str | None = None,
    landmarks: bool = True,
    l0_frame_base: int = 1,
    subjects: Sequence[str] | None = None,
) -> AUFrames:
    """Load DISFA from ``root`` (the folder holding ActionUnit_Labels, or its parent).

    aus: 'protocol' (1 2 4 6 9 12 25 26), 'all' (the 12 coded) or a list -> ``AUFrames.aus``; the table
        holds occurrence and intensity columns of every AU file found.
    threshold: intensity at or above which an AU counts as present.
    frames: 'auto' (extracted images where a subject has them, else the video), 'images', 'video',
        'none' (no pixels). camera: 'left' or 'right' video. images_dir: folder of ``SN001/0.png``
        frames, relative to root (default: first of img/, images/, frames/, root itself).
    landmarks: read the per-frame .mat files (~0.1 ms each). l0_frame_base: the number of the first
        frame in 'l0NNNN_lm.mat' names (1 by the documented convention).
    subjects: load only these subjects.
    """
    base = resolve_root(root, "ActionUnit_Labels", "DISFA", LAYOUT)
    if frames not in ("auto", "images", "video", "none"):
        raise ConfigError(f"frames={frames!r}: use auto, images, video or none")
    if camera not in ("left", "right"):
        raise ConfigError(f"camera={camera!r}: use left or right")
    if not 0 <= threshold <= 5:
        raise ConfigError(f"threshold={threshold}: use a FACS intensity 0..5 (2 by convention)")
    protocol = _protocol_aus(aus)
    label_root = base / "ActionUnit_Labels"
    subject_dirs = sorted(d for d in label_root.iterdir() if d.is_dir() and re.fullmatch(r"SN\d+", d.name, re.I))
    if subjects is not None:
        wanted = {str(s) for s in subjects}
        missing = sorted(wanted - {d.name for d in subject_dirs})
        if missing:
            raise ConfigError(f"{label_root}: no label folder for subject(s) {', '.join(missing)}")
        subject_dirs = [d for d in subject_dirs if d.name in wanted]
    if not subject_dirs:
        raise ConfigError(f"{label_root}: no subject folders (expected SN001/SN001_au1.txt ...; layout {LAYOUT})")

    video_dir = base / ("Videos_LeftCamera" if camera == "left" else "Videos_RightCamera")
    video_prefix = "LeftVideo" if camera == "left" else "RightVideo"
    tables = []
    filled: dict[str, int] = {}
    no_landmarks: list[str] = []
    sources: dict[str, str] = {}
    for sdir in subject_dirs:
        subj = sdir.name
        per_au: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for f in sorted(sdir.iterdir()):
            m = _LABEL_FILE.match(f.name)
            if m is None:
                continue
            if m.group(1).upper() != subj.upper():
                raise DatasetFormatError(f"{f}: label file of subject {m.group(1)} inside folder {subj}")
            per_au[au_name(m.group(2))] = read_label_file(f)
        missing = [a for a in protocol if a not in per_au]
        if missing:
            expect = ", ".join(f"{subj}_au{int(a[2:])}.txt" for a in missing)
            raise DatasetFormatError(f"{sdir}: missing label file(s) {expect} (one '{subj}_auN.txt' per coded AU)")
        frame_nums = np.unique(np.concatenate([fr for fr, _ in per_au.values()]))
        n = len(frame_nums)
        occ: dict[str, np.ndarray] = {}
        inten: dict[str, np.ndarray] = {}
        for a, (fr, val) in per_au.items():
            idx = np.searchsorted(frame_nums, fr)
            i_col = np.full(n, np.nan, np.float32)
            i_col[idx] = val
            o_col = np.full(n, -1, np.int8)
            o_col[idx] = (val >= threshold).astype(np.int8)
            occ[a], inten[a] = o_col, i_col

        meta = pd.DataFrame({"subject": subj, "sequence": "", "frame": frame_nums})
        meta["image_path"], meta["video_path"], meta["video_frame"] = "", "", -1
        imgs: dict[int, Path] = {}
        if frames in ("auto", "images"):
            for d in ([images_dir] if images_dir else IMAGE_DIRS):
                imgs = frame_images(Path(base, d, subj))
                if imgs:
                    break
            if frames == "images" and not imgs:
                where = images_dir or "/".join(IMAGE_DIRS[:3])
                raise ConfigError(f"{base}: no extracted frames for {subj} (expected {where}/{subj}/0.png ...)")
        video = video_dir / f"{video_prefix}{subj}_comp.avi"
        if imgs:
            meta["image_path"] = [str(imgs[f - 1]) if (f - 1) in imgs else "" for f in frame_nums]
            sources[subj] = "images"
        elif frames in ("auto", "video") and video.is_file():
            meta["video_path"] = str(video)
            meta["video_frame"] = frame_nums - 1
            sources[subj] = "video"
        elif frames == "video":
            raise ConfigError(f"{video}: no video for {subj} (expected {video_dir.name}/{video_prefix}{subj}_comp.avi)")
        else:
            sources[subj] = "none"

        lm68 = None
        if landmarks:
            lm_dir = base / "Landmark_Points" / subj / "tmp_frame_lm"
            files = landmark_files(lm_dir, l0_frame_base) or landmark_files(lm_dir.parent, l0_frame_base)
            if files:
                available = np.asarray(sorted(files), np.int64)
                src = _nearest_fill(frame_nums, available)
                filled[subj] = int((src != frame_nums).sum())
                cache: dict[int, np.ndarray] = {}
                pts = np.empty((n, 66, 2), np.float32)
                for i, s in enumerate(src):
                    if s not in cache:
                        cache[s] = read_landmark_mat(files[int(s)])
                    pts[i] = cache[s]
                lm68 = to_68(pts, DISFA66_TO_68)
            else:
                no_landmarks.append(subj)
        tables.append(build_table(meta, occ, inten, lm68))

    if no_landmarks and landmarks:
        warnings.warn(f"DISFA: no landmark files for {', '.join(no_landmarks)} under {base / 'Landmark_Points'}; their landmarks are NaN", stacklevel=2)
    table = pd.concat(tables, ignore_index=True)
    table = order_columns(table)
    info = {"threshold": threshold, "frames": sources, "landmarks_filled": filled, "no_landmarks": no_landmarks, "camera": camera}
    intensity_aus = [au_name(a) for a in DISFA_CODED if f"{au_name(a)}_int" in table.columns]
    return AUFrames("disfa", table, protocol, intensity_aus, base, info)

