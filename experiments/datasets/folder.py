"""A generic labelled image folder, and the FRL London set (identity + expression, no AU codes).

``folder``: one CSV, one row per image::

    image_path,subject,AU01,AU12,AU12_int,expression
    alice/0001.jpg,alice,0,1,3,smiling

- ``image_path`` (required): relative paths are resolved against the CSV's folder.
- ``subject``: defaults to the name of the image's parent folder.
- occurrence columns ``AU1``/``AU01``/``au01``/``AU01_c`` (OpenFace): 0/1; empty, -1 or 9 = unknown.
- intensity columns ``AU01_int`` or ``AU01_r`` (OpenFace): 0..5; empty or 9 = unknown.
- optional ``sequence``, ``frame``, landmarks ``lm_x_i``/``lm_y_i`` or OpenFace ``x_i``/``y_i`` (68 points);
  any other column is kept as it is.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from fewshot.errors import ConfigError, DatasetFormatError
from fewshot.landmarks import N_POINTS

from .base import DATASETS, AUFrames, au_name, build_table, order_columns

_OCC = re.compile(r"^(?i:au)0*(\d+)(?:_c)?$")
_INT = re.compile(r"^(?i:au)0*(\d+)_(?:int|r)$")
_LM = re.compile(r"^(?:lm_)?([xy])_(\d+)$")


def _numbers(series: pd.Series, csv: Path, column: str) -> np.ndarray:
    """Column as floats (NaN for empty); DatasetFormatError naming the CSV line of a non-number."""
    vals = pd.to_numeric(series, errors="coerce")
    bad = vals.isna() & series.notna() & (series.astype(str).str.strip() != "")
    if bad.any():
        i = int(np.argmax(bad.to_numpy()))
        raise DatasetFormatError(f"{csv}:{i + 2}: column {column} = {series.iloc[i]!r} is not a number")
    return vals.to_numpy(np.float64, copy=True)


@DATASETS.register("folder", "Any labelled images: a CSV of image_path, subject, AU columns")
def load_folder(
    root,
    aus: Sequence | None = None,
    intensity_aus: Sequence | None = None,
    check_files: bool = True,
    name: str = "folder",
) -> AUFrames:
    """Load a CSV of labelled images (``root`` = the CSV, or a folder holding ``labels.csv``).

    aus / intensity_aus: protocol lists (default: every occurrence / intensity column found, by AU number).
    check_files: raise DatasetFormatError naming the line of a row whose image does not exist.
    """
    p = Path(root).expanduser()
    csv = p / "labels.csv" if p.is_dir() else p
    if not csv.is_file():
        raise ConfigError(f"{csv}: no such CSV; pass a CSV with columns image_path, subject, AU01... (or a folder holding labels.csv)")
    try:
        df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DatasetFormatError(f"{csv}: not a readable CSV ({e})") from None
    if "image_path" not in df.columns:
        raise DatasetFormatError(f"{csv}:1: no 'image_path' column (header: {', '.join(df.columns)})")
    paths = []
    for i, s in enumerate(df["image_path"]):
        if not s.strip():
            raise DatasetFormatError(f"{csv}:{i + 2}: empty image_path")
        q = Path(s.strip())
        q = q if q.is_absolute() else csv.parent / q
        if check_files and not q.is_file():
            raise DatasetFormatError(f"{csv}:{i + 2}: image {q} does not exist")
        paths.append(str(q))
    meta = pd.DataFrame({"image_path": paths})
    meta["subject"] = df["subject"].to_numpy() if "subject" in df else [Path(q).parent.name for q in paths]
    meta["sequence"] = df["sequence"].to_numpy() if "sequence" in df else ""
    meta["frame"] = _numbers(df["frame"], csv, "frame").astype(np.int64) if "frame" in df else np.arange(len(df))
    occ, inten, used = {}, {}, {"image_path", "subject", "sequence", "frame"}
    lm = np.full((len(df), N_POINTS, 2), np.nan, np.float32)
    for c in df.columns:
        if m := _OCC.match(c):
            v = _numbers(df[c], csv, c)
            ok = np.isin(v, (0, 1))
            bad = ~ok & ~np.isnan(v) & ~np.isin(v, (-1, 9))
            if bad.any():
                i = int(np.argmax(bad))
                raise DatasetFormatError(f"{csv}:{i + 2}: column {c} = {df[c].iloc[i]!r}, expected 0, 1 or empty/-1/9 for unknown")
            occ[au_name(m.group(1))] = np.where(ok, v, -1).astype(np.int8)
        elif m := _INT.match(c):
            v = _numbers(df[c], csv, c)
            v[v == 9] = np.nan
            bad = ~np.isnan(v) & ((v < 0) | (v > 5))
            if bad.any():
                i = int(np.argmax(bad))
                raise DatasetFormatError(f"{csv}:{i + 2}: column {c} = {df[c].iloc[i]!r} outside the FACS range 0..5")
            inten[au_name(m.group(1))] = v
        elif (m := _LM.match(c)) and int(m.group(2)) < N_POINTS:
            lm[:, int(m.group(2)), 0 if m.group(1) == "x" else 1] = _numbers(df[c], csv, c)
        else:
            continue
        used.add(c)
    extra = df[[c for c in df.columns if c not in used]]
    table = order_columns(build_table(meta, occ, inten, lm, extra))
    found_occ = sorted(occ, key=lambda a: int(a[2:]))
    protocol = [au_name(a) for a in aus] if aus is not None else found_occ
    missing = [a for a in protocol if a not in table.columns]
    if missing:
        raise ConfigError(f"{csv}: no column for {', '.join(missing)} (columns: {', '.join(df.columns)})")
    int_aus = [au_name(a) for a in intensity_aus] if intensity_aus is not None else sorted(inten, key=lambda a: int(a[2:]))
    return AUFrames(name, table, protocol, int_aus, csv.parent, {"csv": str(csv)})


@DATASETS.register("london", "FRL London set: 40 identities, neutral and smiling photos (expression labels, no AU codes)")
def load_london(root, proxy_au12: bool = False) -> AUFrames:
    """The Face Research Lab London set in the ../shared/data/frl_london layout (``root`` = that folder
    or its parent): ``neutral_front/<id>_03.jpg``, ``smiling_front/<id>_08.jpg``, ``london_info.csv``.

    Rows: subject = the 3-digit id, frame 0 = neutral, 1 = smiling; columns ``expression``
    ('neutral'/'smiling'), ``age``, ``gender``, ``ethnicity``, ``tem_path`` (the WebMorph template where
    one exists). No AU was coded: ``AU12`` is -1 unless ``proxy_au12`` fills it from the expression
    (1 smiling, 0 neutral) -- a posed-smile proxy, not a FACS code; landmarks are NaN.
    """
    p = Path(root).expanduser()
    base = p if (p / "neutral_front").is_dir() else p / "frl_london"
    if not (base / "neutral_front").is_dir():
        raise ConfigError(f"{p}: no neutral_front/ folder; expected the FRL London layout neutral_front/<id>_03.jpg, smiling_front/<id>_08.jpg")
    rows = []
    for expr, folder, suffix, frame in (("neutral", "neutral_front", "_03", 0), ("smiling", "smiling_front", "_08", 1)):
        for img in sorted((base / folder).glob(f"*{suffix}.jpg")):
            sid = img.stem[: -len(suffix)]
            tem = img.with_suffix(".tem")
            rows.append({"subject": sid, "frame": frame, "image_path": str(img), "expression": expr, "tem_path": str(tem) if tem.is_file() else ""})
    if not rows:
        raise ConfigError(f"{base}: no <id>_03.jpg / <id>_08.jpg photos found")
    meta = pd.DataFrame(rows).sort_values(["subject", "frame"], kind="stable").reset_index(drop=True)
    info_csv = base / "london_info.csv"
    demo = pd.DataFrame({"age": np.nan, "gender": "", "ethnicity": ""}, index=meta.index)
    if info_csv.is_file():
        inf = pd.read_csv(info_csv, dtype={"face_id": str})
        inf["face_id"] = inf["face_id"].str.zfill(3)
        inf = inf.set_index("face_id")
        demo["age"] = meta["subject"].map(inf["face_age"]).to_numpy(np.float64)
        demo["gender"] = meta["subject"].map(inf["face_gender"]).fillna("").to_numpy()
        demo["ethnicity"] = meta["subject"].map(inf["face_eth"]).fillna("").to_numpy()
    au12 = (meta["expression"] == "smiling").astype(int).to_numpy() if proxy_au12 else np.full(len(meta), -1)
    extra = pd.concat([meta[["expression"]], demo, meta[["tem_path"]]], axis=1)
    table = build_table(meta, {"AU12": au12}, {}, None, extra)
    return AUFrames("london", table, ["AU12"], [], base, {"proxy_au12": proxy_au12})
