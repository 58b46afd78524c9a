"""Stage 1: face analysis of a photo, a folder of photos or a video.

    from fewshot import analyze
    result = analyze("clip.mp4")            # AnalysisResult
    result.table                            # one row per face per frame, OpenFace columns
    result.faces                            # Face objects (landmarks, pose, embedding...)

Every image is uint8 (H, W, 3) RGB. Landmarks are the 68-point iBUG scheme in pixels, pose angles in
radians (see :mod:`fewshot.pose`), translations in mm.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal

import cv2
import numpy as np
import pandas as pd

from . import backends as _backends  # noqa: F401  (registers the built-in backends)
from .backends.base import FACE_BACKENDS, Detection, FaceBackend
from .errors import ConfigError, MultipleFacesError, NoFaceError
from .io import Frame, FrameSource, atomic_path, write_image
from .landmarks import N_POINTS, bbox_of
from .pose import HeadPose, estimate_pose

FacesMode = Literal["largest", "all", "error"]
FACES_MODES = ("largest", "all", "error")

LANDMARK_COLUMNS = [f"x_{i}" for i in range(N_POINTS)] + [f"y_{i}" for i in range(N_POINTS)]
POSE_COLUMNS = ["pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz"]
FACE_COLUMNS = (
    ["frame", "face_id", "timestamp", "confidence", "success"]
    + LANDMARK_COLUMNS
    + POSE_COLUMNS
    + ["face_x0", "face_y0", "face_x1", "face_y1", "sharpness", "source", "error"]
)  # error: why a file of a folder could not be read (success=0), else empty


@dataclass(frozen=True)
class Face:
    """One detected face in one frame (pixels, radians, mm)."""

    frame: int
    face_id: int
    timestamp: float
    bbox: np.ndarray  # (4,) x0, y0, x1, y1 of the detector box
    confidence: float  # detector confidence in [0, 1]
    landmarks: np.ndarray  # (68, 2)
    pose: HeadPose
    image_size: tuple[int, int]  # (width, height) of the frame
    sharpness: float  # variance of the Laplacian of the face crop at 128 px
    source: str = ""
    embedding: np.ndarray | None = None  # identity descriptor (see AnalysisResult.embedding_name)
    dense: np.ndarray | None = None  # backend's dense landmarks, if any


@dataclass
class AnalysisResult:
    """Faces of every frame of an input, and the same as an OpenFace-style table."""

    table: pd.DataFrame
    faces: list[Face]
    n_frames: int
    backend: str
    embedding_name: str | None
    source: str
    fps: float = 0.0
    failed_frames: list[int] = field(default_factory=list)

    def embeddings(self) -> np.ndarray:
        """(n_faces, D) float32 matrix of the faces' embeddings (faces without one are skipped)."""
        e = [f.embedding for f in self.faces if f.embedding is not None]
        return np.stack(e) if e else np.zeros((0, 0), np.float32)

    def to_csv(self, path: str | Path, embeddings: bool = False) -> None:
        """Write the table atomically; ``embeddings`` adds ``emb_0..emb_{D-1}`` columns."""
        df = self.table
        if embeddings and self.faces and self.faces[0].embedding is not None:
            dim = len(self.faces[0].embedding)
            emb = np.full((len(df), dim), np.nan, np.float32)
            key = {(f.frame, f.face_id): f.embedding for f in self.faces}
            for i, (fr, fid, ok) in enumerate(zip(df.frame, df.face_id, df.success)):
                if ok:
                    emb[i] = key[(fr, fid)]
            df = pd.concat([df, pd.DataFrame(emb, columns=[f"emb_{i}" for i in range(dim)], index=df.index)], axis=1)
        with atomic_path(path) as tmp:
            df.to_csv(tmp, index=False, float_format="%.4f")


def _sharpness(image: np.ndarray, bbox: np.ndarray) -> float:
    h, w = image.shape[:2]
    x0, y0, x1, y1 = np.clip(np.round(bbox), 0, [w, h, w, h]).astype(int)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return 0.0
    crop = cv2.cvtColor(image[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY)
    crop = cv2.resize(crop, (128, 128), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(crop, cv2.CV_32F).var())


def _area(d: Detection) -> float:
    return float((d.bbox[2] - d.bbox[0]) * (d.bbox[3] - d.bbox[1]))


class Analyzer:
    """Detect faces, place 68 landmarks, estimate head pose and embed identity.

    backend: a registered face backend name (``fewshot.backends.available()``) or an instance.
    faces: 'largest' keeps the largest face per frame, 'all' keeps every face, 'error' raises
        MultipleFacesError when a frame holds more than one.
    embed: compute identity embeddings (dlib: ~10 ms a face).
    track: on videos, look for the face near its previous position first (much faster than a
        full-frame search; falls back to it when the face is lost).
    detect_max_side: full-frame detection runs on a copy downscaled to this size; a frame with no
        face found there is searched again at full resolution with upsampling.
    """

    def __init__(
        self,
        backend: str | FaceBackend = "dlib",
        faces: FacesMode = "largest",
        embed: bool = True,
        track: bool = True,
        detect_max_side: int = 800,
        backend_options: dict | None = None,
    ) -> None:
        if faces not in FACES_MODES:
            raise ConfigError(f"--faces must be one of {', '.join(FACES_MODES)}, not {faces!r}")
        self.backend = backend if isinstance(backend, FaceBackend) else FACE_BACKENDS.create(backend, **(backend_options or {}))
        self.faces_mode = faces
        self.embed = embed and self.backend.embedding_name is not None
        self.track = track and faces == "largest"
        self.detect_max_side = detect_max_side

    # -- detection -------------------------------------------------------------------------------
    def _detect_scaled(self, image: np.ndarray, max_side: int) -> list[Detection]:
        h, w = image.shape[:2]
        s = min(1.0, max_side / max(h, w))
        small = image if s == 1.0 else cv2.resize(image, (int(round(w * s)), int(round(h * s))), interpolation=cv2.INTER_AREA)
        return [Detection(d.bbox / s, d.confidence) for d in self.backend.detect(small)]

    def detect_faces(self, image: np.ndarray) -> list[Detection]:
        """Full-frame detection: fast downscaled pass, then a full-resolution, upsampled retry."""
        dets = self._detect_scaled(image, self.detect_max_side)
        if not dets:
            dets = self._detect_scaled(image, 2 * max(image.shape[:2]))  # 2x upsample
        return dets

    def _detect_near(self, image: np.ndarray, prev_box: np.ndarray) -> list[Detection]:
        """Detect inside a window around the previous face box, scaled so the face is ~1.5x the
        detector's minimum size."""
        h, w = image.shape[:2]
        x0, y0, x1, y1 = prev_box
        bw, bh = x1 - x0, y1 - y0
        m = 0.6 * max(bw, bh)
        wx0, wy0 = int(max(0, x0 - m)), int(max(0, y0 - m))
        wx1, wy1 = int(min(w, x1 + m)), int(min(h, y1 + m))
        if wx1 - wx0 < 16 or wy1 - wy0 < 16:
            return []
        crop = image[wy0:wy1, wx0:wx1]
        s = min(1.0, 1.5 * self.backend.min_face_size / max(bw, bh, 1.0))
        if s < 1.0:
            crop = cv2.resize(crop, (max(1, int((wx1 - wx0) * s)), max(1, int((wy1 - wy0) * s))), interpolation=cv2.INTER_AREA)
        off = np.array([wx0, wy0, wx0, wy0], float)
        return [Detection(d.bbox / s + off, d.confidence) for d in self.backend.detect(crop)]

    # -- per image ---------------------------------------------------------------------------------
    def _face(self, frame: Frame, det: Detection, face_id: int) -> Face:
        img = frame.image
        lr = self.backend.landmarks(img, det.bbox)
        lm = lr.landmarks
        size = (img.shape[1], img.shape[0])
        pose = estimate_pose(lm, size)
        emb = self.backend.embed(img, lm) if self.embed else None
        return Face(
            frame=frame.index,
            face_id=face_id,
            timestamp=frame.timestamp,
            bbox=np.asarray(det.bbox, float),
            confidence=det.confidence,
            landmarks=lm,
            pose=pose,
            image_size=size,
            sharpness=_sharpness(img, bbox_of(lm)),
            source=frame.source,
            embedding=emb,
            dense=lr.dense,
        )

    def analyze_frame(self, frame: Frame, prev: Face | None = None) -> list[Face]:
        """Faces of one frame, ordered largest first (``face_id`` = rank)."""
        dets: list[Detection] = []
        if prev is not None and self.track:
            dets = self._detect_near(frame.image, bbox_of(prev.landmarks))
        if not dets:
            dets = self.detect_faces(frame.image)
        dets = sorted(dets, key=_area, reverse=True)
        if len(dets) > 1 and self.faces_mode == "error":
            raise MultipleFacesError(
                f"{frame.source}: {len(dets)} faces in frame {frame.index}; crop the photo to one person "
                "or pass --faces largest (or all)"
            )
        if self.faces_mode == "largest":
            dets = dets[:1]
        return [self._face(frame, d, i) for i, d in enumerate(dets)]

    def analyze_image(self, image: np.ndarray, source: str = "<array>") -> list[Face]:
        """Faces of one uint8 RGB image (largest first)."""
        return self.analyze_frame(Frame(0, 0.0, image, source))

    # -- whole inputs ------------------------------------------------------------------------------
    def analyze(
        self,
        path: str | Path,
        overlay_dir: str | Path | None = None,
        progress: bool | None = None,
        require_face: bool = True,
    ) -> AnalysisResult:
        """Analyse an image, a folder of images or a video file.

        Every frame gets at least one row (success=0 where no face was found). A corrupt photo of a
        folder gets a success=0 row whose ``error`` says why; InputError only
        when no photo can be read. Raises NoFaceError when no frame of the input holds a face and
        ``require_face`` is set.
        """
        src = FrameSource(path, keep_unreadable=True)
        show = (src.kind != "image") if progress is None else progress
        faces: list[Face] = []
        rows: list[dict] = []
        failed: list[int] = []
        prev: Face | None = None
        n_frames = 0
        for frame in _progress(src, show, f"detect {Path(path).name}"):
            n_frames += 1
            if frame.error:
                failed.append(frame.index)
                rows.append(failed_row(frame))
                prev = None
                continue
            found = self.analyze_frame(frame, prev)
            prev = found[0] if found else None
            if not found:
                failed.append(frame.index)
                rows.append(failed_row(frame))
            for f in found:
                faces.append(f)
                rows.append(face_row(f))
            if overlay_dir is not None:
                write_image(Path(overlay_dir) / f"frame_{frame.index:06d}.png", draw_faces(frame.image, found))
        if require_face and not faces:
            what = "photo" if src.kind == "image" else src.kind
            raise NoFaceError(
                f"{path}: no face found in the {what} ({n_frames} frame(s)); use a well-lit, roughly frontal "
                "face at least 80 px wide"
            )
        table = pd.DataFrame(rows, columns=FACE_COLUMNS)
        return AnalysisResult(table, faces, n_frames, self.backend.name, self.backend.embedding_name if self.embed else None, str(path), src.fps, failed)


def face_row(f: Face) -> dict:
    """One row of the :data:`FACE_COLUMNS` table for a found face (landmarks in source px, pose in radians)."""
    row = {"frame": f.frame, "face_id": f.face_id, "timestamp": f.timestamp, "confidence": f.confidence, "success": 1}
    for i in range(N_POINTS):
        row[f"x_{i}"] = f.landmarks[i, 0]
    for i in range(N_POINTS):
        row[f"y_{i}"] = f.landmarks[i, 1]
    row.update(zip(POSE_COLUMNS, [*f.pose.translation, *f.pose.rotation]))
    row.update(zip(["face_x0", "face_y0", "face_x1", "face_y1"], f.bbox))
    row["sharpness"] = f.sharpness
    row["source"] = Path(f.source).name
    row["error"] = ""
    return row


def failed_row(frame: Frame) -> dict:
    """The success=0 row of the :data:`FACE_COLUMNS` table for a frame without a usable face (NaN landmarks)."""
    row = {c: np.nan for c in FACE_COLUMNS}
    row.update(frame=frame.index, face_id=0, timestamp=frame.timestamp, confidence=0.0, success=0, sharpness=0.0, source=Path(frame.source).name,
               error=frame.error)  # fmt: skip
    return row


def draw_faces(image: np.ndarray, faces: Iterable[Face]) -> np.ndarray:
    """A copy of an RGB image with each face's box, 68 points and pose axes drawn."""
    out = np.ascontiguousarray(image.copy())
    scale = max(1, int(round(max(image.shape[:2]) / 640)))
    for f in faces:
        x0, y0, x1, y1 = (int(v) for v in f.bbox)
        cv2.rectangle(out, (x0, y0), (x1, y1), (255, 200, 0), scale)
        for x, y in f.landmarks:
            cv2.circle(out, (int(round(x)), int(round(y))), scale + 1, (0, 255, 0), -1, cv2.LINE_AA)
        yaw, pitch, roll = np.degrees(f.pose.rotation[[1, 0, 2]])
        cv2.putText(out, f"yaw {yaw:+.0f} pitch {pitch:+.0f} roll {roll:+.0f}", (x0, max(12, y0 - 6)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45 * scale, (255, 255, 0), scale, cv2.LINE_AA)
    return out


def _progress(it, show: bool, desc: str):
    if not show:
        return it
    from tqdm import tqdm

    return tqdm(it, total=len(it) or None, desc=desc, unit="frame", file=sys.stderr, dynamic_ncols=True)


def analyze(path: str | Path, backend: str = "dlib", faces: FacesMode = "largest", embed: bool = True, **kwargs) -> AnalysisResult:
    """Analyse a photo, folder or clip with a fresh :class:`Analyzer` (see its arguments)."""
    overlay_dir = kwargs.pop("overlay_dir", None)
    progress = kwargs.pop("progress", None)
    return Analyzer(backend=backend, faces=faces, embed=embed, **kwargs).analyze(path, overlay_dir=overlay_dir, progress=progress)
