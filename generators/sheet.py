"""Contact sheets: many uint8 RGB images tiled on one page, a caption strip under each.

    from generators.sheet import tile_sheet
    sheet = tile_sheet(batch.images, [f"#{i}" for i in range(len(batch))], n=24, cols=6)

One tiler serves every sheet the pipeline writes (the grid's landmark targets, the synthetic store,
adaptation's rendered crops), so they read alike.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import cv2
import numpy as np

from fewshot.errors import ConfigError

from .aus import intensity_to_letter

CAPTION_RGB = (0, 0, 0)
PAGE_RGB = (255, 255, 255)


def au_caption(intensities: Mapping[str, float]) -> str:
    """{'AU06': 3, 'AU12': 4.2, 'AU25': 0} -> '6C 12D' (the AUs on, FACS letters); 'neutral' when none is."""
    on = " ".join(f"{a[2:].lstrip('0')}{intensity_to_letter(v)}" for a, v in intensities.items() if v > 0)
    return on or "neutral"


def sheet_indices(total: int, n: int | None) -> np.ndarray:
    """Indices of ``n`` evenly spaced items out of ``total`` (first and last included; all when n is None)."""
    if n is None or n >= total:
        return np.arange(total)
    return np.unique(np.linspace(0, total - 1, max(n, 1)).round().astype(int))


def tile_sheet(images: np.ndarray | Sequence[np.ndarray], captions: Sequence[str] | None = None, n: int | None = None,
               cols: int = 6, tile: int | None = None) -> np.ndarray:
    """A uint8 (H, W, 3) RGB contact sheet of ``images``: (N, S, S, 3) uint8 RGB (or a list of such
    tiles), ``n`` of them evenly spaced (all when None), ``cols`` per row, each resized to ``tile`` px
    (default S) with its caption (``captions[i]`` for image i; lines split at '\\n', each trimmed to
    the tile's width) in a white strip under it. Row-major, the last row padded with white."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or len(images) == 0:
        raise ConfigError(f"a contact sheet needs (N, S, S, 3) uint8 RGB images, N >= 1; got {images.dtype} {images.shape}")
    if captions is not None and len(captions) != len(images):
        raise ConfigError(f"{len(captions)} captions for {len(images)} images; give one per image")
    if cols < 1:
        raise ConfigError(f"cols must be at least 1, not {cols}")
    size = int(tile or images.shape[1])
    idx = sheet_indices(len(images), n)
    lines = [str(captions[i]).split("\n") if captions is not None else [] for i in idx]
    scale = float(np.clip(size / 512, 0.3, 0.5))
    line_h = int(np.ceil(28 * scale))
    strip = max(len(x) for x in lines) * line_h + (4 if captions is not None else 0)
    cols = min(cols, len(idx))
    rows = -(-len(idx) // cols)
    cell_h = size + strip
    sheet = np.full((rows * cell_h, cols * size, 3), PAGE_RGB, np.uint8)
    for k, (i, text) in enumerate(zip(idx, lines)):
        r, c = divmod(k, cols)
        im = np.ascontiguousarray(images[i])
        if im.shape[:2] != (size, size):
            im = cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA if im.shape[0] > size else cv2.INTER_LINEAR)
        y0, x0 = r * cell_h, c * size
        sheet[y0:y0 + size, x0:x0 + size] = im
        for j, line in enumerate(text):
            line = _fit(line, size - 4, scale)
            cv2.putText(sheet, line, (x0 + 2, y0 + size + (j + 1) * line_h - 2), cv2.FONT_HERSHEY_SIMPLEX, scale,
                        CAPTION_RGB, 1, cv2.LINE_AA)
    return sheet


def _fit(text: str, width: int, scale: float) -> str:
    while text and cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > width:
        text = text[:-1]
    return text
