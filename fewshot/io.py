"""Reading photos, folders and videos as RGB frames, and writing outputs atomically.

All images crossing this module's boundary are ``uint8`` arrays of shape (H, W, 3) in **RGB** order;
OpenCV's BGR never leaks out.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from .errors import InputError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as uint8 RGB (H, W, 3). Raises InputError naming the file."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file; check the path")
    if p.is_dir():
        raise InputError(f"{p}: is a folder, expected an image file")
    data = np.fromfile(str(p), dtype=np.uint8)
    if data.size == 0:
        raise InputError(f"{p}: file is empty; supply a JPEG or PNG photo")
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"{p}: not a readable image (corrupt or unsupported format); supply a JPEG or PNG photo")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def write_image(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write a uint8 RGB image atomically (format from the extension)."""
    p = Path(path)
    ok, buf = cv2.imencode(p.suffix or ".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise InputError(f"{p}: could not encode image")
    with atomic_path(p) as tmp:
        buf.tofile(str(tmp))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    An exception or interrupt inside the block removes the temporary file, so a reader never sees a
    half-written output.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, p)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_table(df, path: str | os.PathLike) -> None:
    """Write a pandas DataFrame atomically as CSV or parquet (by extension)."""
    p = Path(path)
    with atomic_path(p) as tmp:
        if p.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False)


@dataclass(frozen=True)
class Frame:
    """One frame of an input: RGB pixels plus where it came from."""

    index: int  # 0-based frame number within the input
    timestamp: float  # seconds (0 for photos)
    image: np.ndarray  # uint8 (H, W, 3) RGB
    source: str  # file the frame came from


class FrameSource:
    """An image, a folder of images or a video file, iterated as :class:`Frame` objects.

    ``len()`` gives the (expected) number of frames, for progress bars.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"{self.path}: no such file or folder; check the path")
        if self.path.is_dir():
            self.kind = "folder"
            self.files = sorted(
                f for f in self.path.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith(".")
            )
            if not self.files:
                raise InputError(f"{self.path}: folder holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
            self.fps = 0.0
            self._n = len(self.files)
        elif self.path.suffix.lower() in VIDEO_EXTENSIONS:
            self.kind = "video"
            cap = cv2.VideoCapture(str(self.path))
            if not cap.isOpened():
                raise InputError(f"{self.path}: cannot open video (corrupt or unsupported codec); re-encode it as H.264 MP4")
            self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            self._n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            cap.release()
        else:
            self.kind = "image"
            self.files = [self.path]
            self.fps = 0.0
            self._n = 1

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[Frame]:
        if self.kind == "video":
            yield from self._iter_video()
        else:
            for i, f in enumerate(self.files):
                yield Frame(i, 0.0, read_image(f), str(f))

    def _iter_video(self) -> Iterator[Frame]:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise InputError(f"{self.path}: cannot open video (corrupt or unsupported codec)")
        fps = self.fps if self.fps > 0 else 25.0
        i = 0
        try:
            while True:
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    break
                yield Frame(i, i / fps, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), str(self.path))
                i += 1
        finally:
            cap.release()
        if i == 0:
            raise InputError(f"{self.path}: video holds no decodable frames (empty or corrupt); re-encode it")
        self._n = i
