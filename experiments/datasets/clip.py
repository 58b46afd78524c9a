"""One person's video clip with coarse frame-range labels (``clip``), described by a small YAML file.

    from experiments.datasets import load_dataset
    clip = load_dataset("clip", "experiments/datasets/pexels_clip.yaml")   # AUFrames, one row per frame

The description (``root`` = the YAML file)::

    video: WolfgangLanger_Pexels.mp4        # relative to the YAML file's folder; ~ and $VARS expanded
    subject: pexels_woman                   # default: the video's file stem
    ranges:                                 # 0-based frame numbers, both ends inclusive, no overlap
      - {frames: [0, 130], expression: sad, aus: {AU12: 0}}
      - {frames: [240, 471], expression: happy, aus: {AU12: 1, AU06: 1}}

- ``aus``: AU name (``AU12``, ``12``...) -> 1 present / 0 absent for every frame of the range; an AU a
  range does not name is unknown (-1) there. The protocol AUs are every AU some range names.
- ``expression`` (optional): one of the expression head's classes (``au_models.heads.EXPRESSIONS``:
  neutral, happy, sad, surprise, fear, disgust, anger, contempt).

Rows: *every* frame of the video, in order (``frame`` = ``video_frame`` = the 0-based index,
``sequence`` ''), so the protocol's ``reference: neutral`` searches the whole clip for its references
as ``fewshot adapt --clip`` does; a frame outside every range has every AU -1 and no expression and is
never scored. Extra columns: ``expression`` ('' outside the ranges), ``timestamp`` (seconds, from the
video's frame rate), ``label_range`` (index into ``ranges``, -1 outside). Landmarks are NaN: the
aligned cache detects them (:func:`au_models.cache.build_cache`, ``landmarks='auto'``).

A description that cannot be used (not YAML, an unknown key, a missing video, a range past the clip's
end or overlapping another, an unknown AU or expression) raises ConfigError naming the YAML file; a
video that exists but cannot be opened raises InputError naming the video.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from fewshot.errors import ConfigError, InputError

from .base import DATASETS, AUFrames, au_name, au_number, build_table

TOP_KEYS = ("video", "subject", "ranges")
RANGE_KEYS = ("frames", "expression", "aus")


@dataclass(frozen=True)
class LabelledRange:
    """Frames ``first..last`` (0-based, inclusive) of a clip and what is known of them."""

    first: int
    last: int
    expression: str  # '' = not labelled
    aus: dict[str, int]  # AU name -> 1 present / 0 absent


@dataclass(frozen=True)
class ClipDescription:
    """A parsed clip YAML: the video (resolved path), the person's name and the labelled ranges."""

    file: Path
    video: Path
    subject: str
    ranges: tuple[LabelledRange, ...]

    @property
    def aus(self) -> list[str]:
        """Every AU some range names, by AU number."""
        return sorted({a for r in self.ranges for a in r.aus}, key=au_number)


def _expressions() -> tuple[str, ...]:
    from au_models.heads import EXPRESSIONS  # deferred: it imports torch, which a loader does not need

    return EXPRESSIONS


def _frame_number(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: {value!r} is not a frame number (a 0-based integer)")
    if value < 0:
        raise ConfigError(f"{where}: frame {value} is negative; frames are 0-based")
    return int(value)


def _parse_range(raw: Any, where: str) -> LabelledRange:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping {{frames: [first, last], expression: ..., aus: {{AU12: 1}}}}")
    bad = sorted(set(raw) - set(RANGE_KEYS))
    if bad:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(str, bad))}; keys: {', '.join(RANGE_KEYS)}")
    frames = raw.get("frames")
    if not isinstance(frames, list) or len(frames) != 2:
        raise ConfigError(f"{where}.frames: {frames!r}; give [first, last] (0-based, both inclusive)")
    first, last = (_frame_number(v, f"{where}.frames") for v in frames)
    if last < first:
        raise ConfigError(f"{where}.frames: [{first}, {last}] ends before it starts")
    expression = raw.get("expression") or ""
    if expression:
        expression = str(expression).strip().lower()
        if expression not in _expressions():
            raise ConfigError(f"{where}.expression: {raw['expression']!r} is not one of {', '.join(_expressions())}")
    aus_raw = raw.get("aus") or {}
    if not isinstance(aus_raw, dict):
        raise ConfigError(f"{where}.aus: expected a mapping AU -> 0/1, e.g. {{AU12: 1}}")
    aus: dict[str, int] = {}
    for key, value in aus_raw.items():
        try:
            name = au_name(key)
        except ConfigError as e:
            raise ConfigError(f"{where}.aus: {e}") from None
        if isinstance(value, bool) or value not in (0, 1):
            raise ConfigError(f"{where}.aus.{key}: {value!r}; use 1 (present) or 0 (absent), or leave the AU out when unknown")
        if name in aus:
            raise ConfigError(f"{where}.aus: {name} given twice")
        aus[name] = int(value)
    if not aus and not expression:
        raise ConfigError(f"{where}: labels nothing; give aus {{AU12: 1, ...}} and/or an expression")
    return LabelledRange(first, last, expression, aus)


def read_description(path: str | os.PathLike, video: str | os.PathLike | None = None) -> ClipDescription:
    """Parse and check a clip YAML (see the module docstring) without opening the video.

    video: replaces the file's ``video`` (relative to the current folder). ConfigError names the YAML.
    """
    import yaml

    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{p}: no such clip description; pass a YAML file with video, subject and ranges")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a text file; pass the clip's YAML description (video, subject, ranges), not the video") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{p}: not valid YAML{at} ({getattr(e, 'problem', None) or str(e).splitlines()[0]})") from None
    try:
        return _parse_description(p, raw, video)
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None


def _parse_description(p: Path, raw: Any, video_override) -> ClipDescription:
    if not isinstance(raw, dict):
        raise ConfigError("expected a mapping with video, subject and ranges at the top level")
    bad = sorted(set(raw) - set(TOP_KEYS))
    if bad:
        raise ConfigError(f"unknown key(s) {', '.join(map(str, bad))}; keys: {', '.join(TOP_KEYS)}")
    if video_override is not None:
        video = Path(video_override).expanduser()
    else:
        if not raw.get("video"):
            raise ConfigError("video: required (the clip's path, relative to this file)")
        video = Path(os.path.expandvars(str(raw["video"]))).expanduser()
        video = video if video.is_absolute() else p.parent / video
    if not video.is_file():
        raise ConfigError(f"video {video} does not exist; fix the video path (relative to this file) or pass the video option")
    subject = str(raw.get("subject") or video.stem).strip()
    ranges_raw = raw.get("ranges")
    if not isinstance(ranges_raw, list) or not ranges_raw:
        raise ConfigError("ranges: give at least one labelled frame range, e.g. - {frames: [0, 130], aus: {AU12: 0}}")
    ranges = [_parse_range(r, f"ranges[{i}]") for i, r in enumerate(ranges_raw)]
    order = sorted(range(len(ranges)), key=lambda i: ranges[i].first)
    for a, b in zip(order, order[1:]):
        if ranges[b].first <= ranges[a].last:
            raise ConfigError(f"ranges[{a}] (frames {ranges[a].first}-{ranges[a].last}) and ranges[{b}] "
                              f"(frames {ranges[b].first}-{ranges[b].last}) overlap; a frame takes one label")  # fmt: skip
    if not any(r.aus for r in ranges):
        raise ConfigError("no range labels an AU; give aus {AU12: 1, ...} to at least one range")
    return ClipDescription(p, video.resolve(), subject, tuple(ranges))


def video_facts(video: Path) -> tuple[int, float]:
    """(frame count, frames per second) of a video; InputError when it cannot be opened or is empty.
    The count is the container's; when it has none the frames are counted by reading them."""
    cap = cv2.VideoCapture(str(video))
    try:
        if not cap.isOpened():
            raise InputError(f"{video}: cannot open video (corrupt or unsupported codec)")
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if n <= 0:
            n = 0
            while cap.grab():
                n += 1
    finally:
        cap.release()
    if n <= 0:
        raise InputError(f"{video}: the video holds no frame")
    return n, fps


def _digest(desc: ClipDescription, subject: str) -> str:
    """What identifies the labelled clip wherever it lies (and whatever the YAML's comments say): SHA-1
    over the subject, the ranges and the video's bytes (first 12 hex digits)."""
    labels = [subject] + [[r.first, r.last, r.expression, sorted(r.aus.items())] for r in desc.ranges]
    h = hashlib.sha1(json.dumps(labels).encode())
    with open(desc.video, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


@DATASETS.register("clip", "One person's video clip with coarse frame-range labels (a YAML description: video, subject, ranges)")
def load_clip(root, video: str | None = None, subject: str | None = None) -> AUFrames:
    """Load a clip description (``root`` = its YAML file; see the module docstring).

    video: another path for the clip (relative to the current folder) than the YAML's; subject:
    another name for the person. Raises ConfigError for a bad description or a range past the clip's
    end (naming the YAML), InputError for a video that cannot be read.
    """
    desc = read_description(root, video)
    n, fps = video_facts(desc.video)
    for i, r in enumerate(desc.ranges):
        if r.last >= n:
            raise ConfigError(f"{desc.file}: ranges[{i}].frames [{r.first}, {r.last}] run past the clip's end "
                              f"({desc.video.name} has {n} frames, 0..{n - 1})")  # fmt: skip
    person = str(subject) if subject else desc.subject
    aus = desc.aus
    occ = {a: np.full(n, -1, np.int8) for a in aus}
    expression = np.full(n, "", object)
    label_range = np.full(n, -1, np.int64)
    for i, r in enumerate(desc.ranges):
        sl = slice(r.first, r.last + 1)
        for a, v in r.aus.items():
            occ[a][sl] = v
        expression[sl] = r.expression
        label_range[sl] = i
    idx = np.arange(n, dtype=np.int64)
    meta = pd.DataFrame({"subject": person, "sequence": "", "frame": idx, "image_path": "", "video_path": str(desc.video), "video_frame": idx})
    extra = pd.DataFrame({"expression": expression, "timestamp": idx / fps if fps > 0 else np.full(n, np.nan), "label_range": label_range})
    table = build_table(meta, occ, {}, None, extra)
    labelled = int((label_range >= 0).sum())
    info = {"description": str(desc.file.resolve()), "video": str(desc.video), "frames": n, "fps": fps, "labelled_frames": labelled,
            "ranges": [[r.first, r.last] for r in desc.ranges], "digest": _digest(desc, person)}  # fmt: skip
    return AUFrames("clip", table, aus, [], desc.file, info)
