"""Reading photos, folders and videos as RGB frames, and writing outputs atomically.

All images crossing this module's boundary are ``uint8`` arrays of shape (H, W, 3) in **RGB** order;
OpenCV's BGR never leaks out.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from .errors import InputError

# FFmpeg's own log lines ("moov atom not found", h264 decoder errors, some from its decoding threads)
# would precede our one-line InputError. OpenCV reads this when it opens its first video, so setting it
# here (before any VideoCapture) is enough; a user's own setting wins.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET

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


def check_output_file(path: str | os.PathLike, option: str = "the output", example: str = "") -> Path:
    """Fail early (InputError, one line) when an output file path names an existing folder, before any
    work is done; ``example`` (a file name) is suggested inside that folder."""
    p = Path(path)
    if p.is_dir():
        hint = f", e.g. {p / example}" if example else ""
        raise InputError(f"{p}: is a folder, not a file; give {option} a file path{hint}")
    return p


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    An exception or interrupt inside the block removes the temporary file, so a reader never sees a
    half-written output.
    """
    p = Path(path)
    check_output_file(p)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600: outputs are shared data, not private temp files
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
    image: np.ndarray  # uint8 (H, W, 3) RGB; (0, 0, 3) when ``error`` is set
    source: str  # file the frame came from
    error: str = ""  # why the file could not be read (only with FrameSource(keep_unreadable=True))


class FrameSource:
    """An image, a folder of images or a video file, iterated as :class:`Frame` objects.

    ``len()`` gives the (expected) number of frames, for progress bars. ``keep_unreadable``: in a
    folder, a corrupt photo becomes a Frame with ``error`` set (and an empty image) instead of an
    InputError, so the other photos are still analysed; InputError only when no photo can be read.
    """

    def __init__(self, path: str | os.PathLike, keep_unreadable: bool = False) -> None:
        self.path = Path(path)
        self.keep_unreadable = keep_unreadable
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
            with _quiet_stderr():
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
            yield from self._iter_files()

    def _iter_files(self) -> Iterator[Frame]:
        errors: list[str] = []
        for i, f in enumerate(self.files):
            try:
                image = read_image(f)
            except InputError as e:
                if not (self.keep_unreadable and self.kind == "folder"):
                    raise
                errors.append(str(e))
                yield Frame(i, 0.0, np.zeros((0, 0, 3), np.uint8), str(f), error=str(e))
                continue
            yield Frame(i, 0.0, image, str(f))
        if errors and len(errors) == len(self.files):
            raise InputError(f"{self.path}: none of the {len(self.files)} images could be read (first: {errors[0]})")

    def _iter_video(self) -> Iterator[Frame]:
        with _quiet_stderr():
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


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 for the block: opening a video, OpenCV's backends may log from C
    straight to it before our own one-line InputError. Python's sys.stderr is flushed first so nothing
    of ours is lost."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
