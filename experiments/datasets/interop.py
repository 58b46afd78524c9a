"""List files exchanged with the reference implementations (ME-GraphAU), so their code and ours can run
on the very same frames.

ME-GraphAU: ``{NAME}_{train,test}_img_path_fold{k}.txt`` (one relative image path a line:
``F007/T1/643.jpg`` for BP4D, ``SN003/0.png`` for DISFA) and ``{NAME}_{train,test}_label_fold{k}.txt``
(one row per image, space-separated 0/1 in the protocol AU order).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from fewshot.errors import ConfigError, DatasetFormatError
from fewshot.io import atomic_path

from .base import AUFrames, build_table, fold_number


def me_graphau_path(row: pd.Series, dataset: str) -> str:
    """ME-GraphAU's relative image path of a table row."""
    if dataset == "bp4d":
        return f"{row['subject']}/{row['sequence']}/{int(row['frame'])}.jpg"
    if dataset == "disfa":
        return f"{row['subject']}/{int(row['frame']) - 1}.png"
    raise ConfigError(f"ME-GraphAU lists exist for bp4d and disfa, not {dataset!r}")


def export_me_graphau_lists(frames: AUFrames, out_dir: str | os.PathLike, fold: int | str, unknown: str = "drop") -> dict[str, Path]:
    """Write ME-GraphAU's four list files of ``fold`` for a DISFA or BP4D :class:`AUFrames`.

    unknown: 'drop' leaves out frames with any unknown (-1) protocol AU, 'zero' writes them as 0
    (their lists hold 0/1 only). Returns {'train_img', 'train_label', 'test_img', 'test_label'} paths.
    """
    if unknown not in ("drop", "zero"):
        raise ConfigError(f"unknown={unknown!r}: use drop or zero")
    k = fold_number(fold)
    prefix = {"bp4d": "BP4D", "disfa": "DISFA"}.get(frames.name)
    if prefix is None:
        raise ConfigError(f"ME-GraphAU lists exist for bp4d and disfa, not {frames.name!r}")
    out = Path(out_dir)
    written: dict[str, Path] = {}
    for part_name, part in zip(("train", "test"), frames.split(k)):
        labels = part.occurrence()
        keep = (labels >= 0).all(axis=1) if unknown == "drop" else np.ones(len(labels), bool)
        rows = part.table[keep]
        labels = np.clip(labels[keep], 0, 1)
        img_file = out / f"{prefix}_{part_name}_img_path_fold{k}.txt"
        lab_file = out / f"{prefix}_{part_name}_label_fold{k}.txt"
        with atomic_path(img_file) as tmp:
            tmp.write_text("".join(me_graphau_path(r, frames.name) + "\n" for _, r in rows.iterrows()))
        with atomic_path(lab_file) as tmp:
            tmp.write_text("".join(" ".join(str(int(v)) for v in lab) + "\n" for lab in labels))
        written[f"{part_name}_img"], written[f"{part_name}_label"] = img_file, lab_file
    return written


def read_me_graphau_lists(img_list: str | os.PathLike, label_list: str | os.PathLike, image_root: str | os.PathLike, aus: list[str], name: str = "me-graphau") -> AUFrames:
    """An :class:`AUFrames` of one ME-GraphAU image/label list pair (images under ``image_root``;
    subject, sequence and frame parsed from the relative paths)."""
    img_list, label_list = Path(img_list), Path(label_list)
    paths = [ln.strip() for ln in img_list.read_text().splitlines() if ln.strip()]
    lab_lines = [ln for ln in label_list.read_text().splitlines() if ln.strip()]
    if len(paths) != len(lab_lines):
        raise DatasetFormatError(f"{label_list}: {len(lab_lines)} label rows for {len(paths)} paths in {img_list}")
    labels = np.zeros((len(paths), len(aus)), np.int8)
    for i, line in enumerate(lab_lines):
        cells = line.split()
        if len(cells) != len(aus) or any(c not in ("0", "1") for c in cells):
            raise DatasetFormatError(f"{label_list}:{i + 1}: expected {len(aus)} space-separated 0/1 values, got {line!r}")
        labels[i] = [int(c) for c in cells]
    parts = [p.split("/") for p in paths]
    meta = pd.DataFrame({
        "subject": [q[0] for q in parts],
        "sequence": [q[1] if len(q) > 2 else "" for q in parts],
        "frame": [int(Path(q[-1]).stem) for q in parts],
        "image_path": [str(Path(image_root) / p) for p in paths],
    })
    table = build_table(meta, {a: labels[:, j] for j, a in enumerate(aus)}, {}, None)
    return AUFrames(name, table, list(aus), [], Path(image_root), {"img_list": str(img_list), "label_list": str(label_list)})
