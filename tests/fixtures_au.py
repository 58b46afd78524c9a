"""Tiny DISFA and BP4D trees in exactly the documented on-disk formats, for tests of anything that reads
those data sets (loaders, AU training, motion fitting).

    from tests.fixtures_au import make_disfa_tree, make_bp4d_tree
    planted = make_disfa_tree(tmp_path / "DISFA")        # writes the tree, returns what it planted
    planted["table"]                                      # the rows a correct loader must return

Frames are real faces (FRL London Set, one identity per subject, CC BY 4.0; the shipped example photo,
mirrored and tinted per subject, when ../shared/data is absent), ~160 px, with a grey marker square in
the top-left corner whose level encodes the frame (``marker_level``) so a test can tell frames apart
after JPEG/MJPG compression. Landmarks are dlib's 68 points on that face (detected once per image and
cached) plus a small per-frame jitter, written in each data set's own point scheme. Labels are random
with a seed, including BP4D's 9 = not coded / unknown.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FEWSHOT_SHARED", ROOT.parent / "shared")) / "data"

DISFA_CODED = [1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26]
BP4D_OCC_HEADER = list(range(1, 28))  # AU_OCC header: '0' (frame) then AU numbers 1..27, contiguous
BP4D_INTENSITY = [6, 10, 12, 14, 17]
DISFA66 = [i for i in range(68) if i not in (60, 64)]
BP4D49 = [i for i in range(17, 68) if i not in (60, 64)]
FACE_SIZE = 160
MARKER = 12  # side (px) of the frame-marker square


def marker_level(frame_index: int) -> int:
    """Grey level of the top-left marker square of the ``frame_index``-th frame of a sequence (0-based)."""
    return int(30 + (frame_index * 37) % 200)


def read_marker(rgb: np.ndarray) -> float:
    """Mean grey level inside the marker square (compare with :func:`marker_level`, tolerance ~6)."""
    return float(rgb[2 : MARKER - 2, 2 : MARKER - 2].mean())


@lru_cache(maxsize=1)
def _analyzer():
    from fewshot.analysis import Analyzer

    return Analyzer(embed=False, track=False)


def _source_photos() -> list[tuple[Path, bool, int]]:
    """(photo, mirror, tint) per identity: the London set if present, else variants of the shipped photo."""
    london = SHARED / "frl_london" / "neutral_front"
    if london.is_dir():
        return [(p, False, 0) for p in sorted(london.glob("*_03.jpg"))]
    from fewshot.data import example_photo

    out = []
    for k in range(16):
        out.append((example_photo("neutral" if k % 2 == 0 else "smiling"), bool(k // 2 % 2), k // 4))
    return out


@lru_cache(maxsize=64)
def face_sample(identity: int, size: int = FACE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 (size, size, 3) RGB face crop, (68, 2) float64 dlib landmarks in that crop) of the
    ``identity``-th source photo; cached."""
    from fewshot.io import read_image

    photos = _source_photos()
    path, mirror, tint = photos[identity % len(photos)]
    img = read_image(path)
    det_size = 2 * size
    found = _analyzer().analyze_image(cv2.resize(img, (det_size, det_size), interpolation=cv2.INTER_AREA))
    if not found:
        raise RuntimeError(f"{path}: dlib found no face to build a fixture from")
    lm = found[0].landmarks * (img.shape[1] / det_size, img.shape[0] / det_size)
    # square crop around the face, ~1.9x the landmark extent, so the face fills most of the frame
    c = (lm.min(0) + lm.max(0)) / 2
    side = 1.9 * float((lm.max(0) - lm.min(0)).max())
    x0, y0 = c - side / 2
    m = np.array([[size / side, 0, -x0 * size / side], [0, size / side, -y0 * size / side]])
    crop = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
    found = _analyzer().analyze_image(crop)
    if not found:
        raise RuntimeError(f"{path}: dlib found no face in the {size}px fixture crop")
    lm = found[0].landmarks.astype(np.float64)
    if mirror:
        from fewshot.landmarks import MIRROR

        crop = crop[:, ::-1].copy()
        lm = lm[MIRROR].copy()
        lm[:, 0] = size - 1 - lm[:, 0]
    if tint:
        crop = np.clip(crop.astype(int) + np.array([12, -6, -10]) * tint, 0, 255).astype(np.uint8)
    return crop, lm


def _frame(face: np.ndarray, index: int) -> np.ndarray:
    out = face.copy()
    out[:MARKER, :MARKER] = marker_level(index)
    return out


def _jittered(lm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.round(lm + rng.normal(0, 0.7, lm.shape), 3)


def _expected_row(subject, sequence, frame, lm68) -> dict:
    row = {"subject": subject, "sequence": sequence, "frame": int(frame)}
    for i in range(68):
        row[f"lm_x_{i}"] = lm68[i, 0]
    for i in range(68):
        row[f"lm_y_{i}"] = lm68[i, 1]
    return row


# -- DISFA ----------------------------------------------------------------------------------------
def make_disfa_tree(
    root: str | os.PathLike,
    subjects: Sequence[str] = ("SN001", "SN002"),
    n_frames: int = 12,
    variant: str = "video",
    lm_naming: str = "subject",
    missing_landmark: int | None = 5,
    images_dir: str = "img",
    seed: int = 0,
) -> dict:
    """Write a DISFA tree under ``root`` (root/ActionUnit_Labels, root/Landmark_Points, ...).

    variant: 'video' (Videos_LeftCamera/LeftVideoSN001_comp.avi, MJPG, 20 fps), 'images'
        (``images_dir``/SN001/0.png, 0-based) or 'both'.
    lm_naming: 'subject' (SN001_{frame-1:04d}_lm.mat) or 'l0' (l0{frame:04d}_lm.mat, 1-based).
    missing_landmark: a 1-based frame whose .mat file is left out (None: none); the expected table
        gives it the previous frame's points (the next one's for frame 1), as a loader copies the
        nearest neighbour.

    Returns {'root', 'table' (expected rows: subject, sequence='', frame (1-based), AUxx_int for the 12
    coded AUs, AUxx = int_ >= 2, lm_x_*/lm_y_* in the 68 scheme with NaN at 60 and 64), 'intensity'
    {subject: {au_number: (n_frames,) int}}, 'landmarks66' {subject: (n_frames, 66, 2) as written},
    'missing_landmarks' {subject: [frame]}, 'faces' {subject: identity index}}.
    """
    import scipy.io

    if variant not in ("video", "images", "both"):
        raise ValueError(f"variant={variant!r}")
    if lm_naming not in ("subject", "l0"):
        raise ValueError(f"lm_naming={lm_naming!r}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    rows, intensity, written, missing, faces = [], {}, {}, {}, {}
    for k, subj in enumerate(subjects):
        faces[subj] = k
        face, lm = face_sample(k)
        frames = np.arange(1, n_frames + 1)
        lab_dir = root / "ActionUnit_Labels" / subj
        lab_dir.mkdir(parents=True, exist_ok=True)
        intensity[subj] = {}
        for au in DISFA_CODED:
            vals = np.where(rng.random(n_frames) < 0.5, 0, rng.integers(1, 6, n_frames))
            intensity[subj][au] = vals
            (lab_dir / f"{subj}_au{au}.txt").write_text("".join(f"{f},{v}\n" for f, v in zip(frames, vals)))
        lm_dir = root / "Landmark_Points" / subj / "tmp_frame_lm"
        lm_dir.mkdir(parents=True, exist_ok=True)
        pts66 = np.stack([_jittered(lm, rng)[DISFA66] for _ in frames])
        written[subj] = pts66
        missing[subj] = [missing_landmark] if missing_landmark else []
        for f, pts in zip(frames, pts66):
            if f == missing_landmark:
                continue
            name = f"{subj}_{f - 1:04d}_lm.mat" if lm_naming == "subject" else f"l0{f:04d}_lm.mat"
            scipy.io.savemat(lm_dir / name, {"pts": pts})
        if variant in ("video", "both"):
            vdir = root / "Videos_LeftCamera"
            vdir.mkdir(parents=True, exist_ok=True)
            vw = cv2.VideoWriter(str(vdir / f"LeftVideo{subj}_comp.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 20.0, (face.shape[1], face.shape[0]))
            for i in range(n_frames):
                vw.write(cv2.cvtColor(_frame(face, i), cv2.COLOR_RGB2BGR))
            vw.release()
        if variant in ("images", "both"):
            idir = root / images_dir / subj
            idir.mkdir(parents=True, exist_ok=True)
            for i in range(n_frames):
                cv2.imwrite(str(idir / f"{i}.png"), cv2.cvtColor(_frame(face, i), cv2.COLOR_RGB2BGR))
        for i, f in enumerate(frames):
            src = (i - 1 if i > 0 else i + 1) if f == missing_landmark else i  # nearest, earlier on a tie
            lm68 = np.full((68, 2), np.nan)
            lm68[DISFA66] = pts66[src]
            row = _expected_row(subj, "", f, lm68)
            for au in DISFA_CODED:
                v = int(intensity[subj][au][i])
                row[f"AU{au:02d}"] = int(v >= 2)
                row[f"AU{au:02d}_int"] = float(v)
            rows.append(row)
    return {"root": root, "table": pd.DataFrame(rows), "intensity": intensity, "landmarks66": written, "missing_landmarks": missing, "faces": faces}


# -- BP4D -----------------------------------------------------------------------------------------
MATLAB_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."


def write_matlab73_landmark_track(path: Path, track: list[np.ndarray | None]) -> None:
    """A 2DFeatures file as MATLAB -v7.3 lays it out: a 512-byte user block with the MATLAB header,
    struct group 'fit' whose 'pred' is an (n, 1) dataset of object references into '#refs#', each a
    2x49 double (MATLAB's 49x2 stored transposed), or a MATLAB empty (uint64 [0, 0], MATLAB_empty=1)."""
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", userblock_size=512, libver="earliest") as f:
        refs = f.create_group("#refs#")
        fit = f.create_group("fit")
        fit.attrs["MATLAB_class"] = np.bytes_("struct")
        pred = fit.create_dataset("pred", (len(track), 1), dtype=h5py.ref_dtype)
        pred.attrs["MATLAB_class"] = np.bytes_("cell")
        for i, pts in enumerate(track):
            name = f"r{i}"
            if pts is None:
                ds = refs.create_dataset(name, data=np.zeros(2, np.uint64))
                ds.attrs["MATLAB_class"] = np.bytes_("double")
                ds.attrs["MATLAB_empty"] = np.uint8(1)
            else:
                ds = refs.create_dataset(name, data=np.asarray(pts, np.float64).T)
                ds.attrs["MATLAB_class"] = np.bytes_("double")
            pred[i, 0] = ds.ref
    with open(path, "r+b") as fh:
        fh.write(MATLAB_HEADER.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02IM")


def make_bp4d_tree(
    root: str | os.PathLike,
    subjects: Sequence[str] = ("F001", "M001"),
    tasks: Sequence[str] = ("T1",),
    n_frames: int = 12,
    pad: bool = False,
    start_frame: int = 40,
    seed: int = 0,
) -> dict:
    """Write a BP4D tree under ``root`` (root/AUCoding, root/2DFeatures, root/2D+3D).

    Each sequence is coded on frames start_frame .. start_frame + n_frames - 1; its landmark track
    covers frames 1 .. start_frame + n_frames + 2 (fit/pred[i] = frame i + 1) with one coded frame left
    empty (MATLAB empty array -> NaN). Frame images are '{frame}.jpg', or '{frame:04d}.jpg' with ``pad``.
    AU_OCC has header 0,1,...,27 with ~10% 9s; AU_INT has AUs 6 10 12 14 17 with ~10% 9s.

    Returns {'root', 'table' (expected rows: subject, sequence, frame, AU01..AU27 with -1 for 9,
    AU06_int.. with NaN for 9, lm_x_*/lm_y_* with NaN at jaw 0-16, 60, 64 and on the empty frame),
    'occ_raw' {(subject, task): (n, 28) ints as written}, 'empty_landmark' {(subject, task): frame},
    'faces' {subject: identity index}}.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    rows, occ_raw, empty, faces = [], {}, {}, {}
    occ_dir = root / "AUCoding" / "AU_OCC"
    occ_dir.mkdir(parents=True, exist_ok=True)
    for k, subj in enumerate(subjects):
        faces[subj] = k
        face, lm = face_sample(k)
        for task in tasks:
            frames = np.arange(start_frame, start_frame + n_frames)
            occ = (rng.random((n_frames, len(BP4D_OCC_HEADER))) < 0.3).astype(int)
            occ[rng.random(occ.shape) < 0.1] = 9
            raw = np.concatenate([frames[:, None], occ], axis=1)
            occ_raw[(subj, task)] = raw
            header = ",".join(str(h) for h in [0, *BP4D_OCC_HEADER])
            (occ_dir / f"{subj}_{task}.csv").write_text(header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in raw))
            ints = {}
            for au in BP4D_INTENSITY:
                vals = rng.integers(0, 6, n_frames)
                vals[rng.random(n_frames) < 0.1] = 9
                ints[au] = vals
                d = root / "AUCoding" / "AU_INT" / f"AU{au:02d}"
                d.mkdir(parents=True, exist_ok=True)
                (d / f"{subj}_{task}_AU{au:02d}.csv").write_text("".join(f"{f},{v}\n" for f, v in zip(frames, vals)))
            n_track = start_frame + n_frames + 2
            empty_frame = int(frames[n_frames // 2])
            empty[(subj, task)] = empty_frame
            track: list[np.ndarray | None] = []
            for fr in range(1, n_track + 1):
                track.append(None if fr == empty_frame else _jittered(lm, rng)[BP4D49])
            write_matlab73_landmark_track(root / "2DFeatures" / f"{subj}_{task}.mat", track)
            idir = root / "2D+3D" / subj / task
            idir.mkdir(parents=True, exist_ok=True)
            for i, fr in enumerate(frames):
                name = f"{fr:04d}.jpg" if pad else f"{fr}.jpg"
                cv2.imwrite(str(idir / name), cv2.cvtColor(_frame(face, i), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
            for i, fr in enumerate(frames):
                lm68 = np.full((68, 2), np.nan)
                if track[fr - 1] is not None:
                    lm68[BP4D49] = track[fr - 1]
                row = _expected_row(subj, task, fr, lm68)
                for j, au in enumerate(BP4D_OCC_HEADER):
                    v = int(occ[i, j])
                    row[f"AU{au:02d}"] = -1 if v == 9 else v
                for au in BP4D_INTENSITY:
                    v = int(ints[au][i])
                    row[f"AU{au:02d}_int"] = np.nan if v == 9 else float(v)
                rows.append(row)
    return {"root": root, "table": pd.DataFrame(rows), "occ_raw": occ_raw, "empty_landmark": empty, "faces": faces}
