"""File helpers shared by the loaders: layout checks, strict line parsing, frame-image indexes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from fewshot.errors import ConfigError, DatasetFormatError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def resolve_root(root, marker: str, dataset: str, layout: str) -> Path:
    """The folder holding ``marker`` (``root`` itself or ``root/<dataset>``); ConfigError naming what
    is missing and the expected layout otherwise."""
    p = Path(root).expanduser()
    if not p.is_dir():
        raise ConfigError(f"{p}: no such folder; pass the {dataset} root folder ({layout})")
    for cand in (p, p / dataset, p / dataset.upper(), p / dataset.lower()):
        if (cand / marker).is_dir():
            return cand
    raise ConfigError(f"{p}: no '{marker}' folder; expected the {dataset} layout {layout}")


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, stripped line) of every non-blank line; DatasetFormatError if unreadable."""
    try:
        text = path.read_text(encoding="utf-8-sig", errors="strict")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetFormatError(f"{path}: cannot read as text ({e})") from None
    for no, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if s:
            yield no, s


def parse_int(value: str, path: Path, line_no: int, what: str) -> int:
    v = value.strip()
    try:
        return int(v)
    except ValueError:
        try:
            f = float(v)
        except ValueError:
            f = None
        if f is not None and f.is_integer():
            return int(f)
        raise DatasetFormatError(f"{path}:{line_no}: {what} {value.strip()!r} is not an integer") from None


def frame_images(folder: Path) -> dict[int, Path]:
    """Frame number -> image file for a folder of frames named by number (any zero padding)."""
    out: dict[int, Path] = {}
    if not folder.is_dir():
        return out
    for f in folder.iterdir():
        if f.suffix.lower() in IMAGE_SUFFIXES and re.fullmatch(r"\d+", f.stem):
            out.setdefault(int(f.stem), f)
    return out
