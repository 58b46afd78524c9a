"""dlib backend: HOG face detector, 68-point shape predictor and 128-D ResNet face descriptor.

Weights come from the ``face-recognition-models`` package (installed with fewshot), so this backend
works fully offline. The package's ``__init__`` imports ``pkg_resources``, which modern setuptools no
longer ships, so the files are located through the import system instead of importing it.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailableError, MissingWeightsError
from .base import FACE_BACKENDS, Detection, FaceBackend, LandmarkResult


def face_recognition_models_dir() -> Path:
    """Folder holding dlib's .dat weight files from the face-recognition-models package."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailableError(
            "dlib backend needs the 'face-recognition-models' package; run: pip install face-recognition-models"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def _import_dlib():
    try:
        import dlib
    except ImportError as e:  # pragma: no cover - dlib-bin is a core dependency
        raise BackendUnavailableError(f"dlib backend needs 'dlib-bin' ({e}); run: pip install dlib-bin") from None
    return dlib


@FACE_BACKENDS.register("dlib", "dlib HOG detector + 68-point shape predictor + 128-D descriptor (offline default)")
class DlibBackend(FaceBackend):
    name = "dlib"
    embedding_name = "dlib128"

    def __init__(self, models_dir: str | Path | None = None, upsample: int = 0, threshold: float = 0.0) -> None:
        dlib = _import_dlib()
        self._dlib = dlib
        d = Path(models_dir) if models_dir else face_recognition_models_dir()
        shape_file = d / "shape_predictor_68_face_landmarks.dat"
        rec_file = d / "dlib_face_recognition_resnet_model_v1.dat"
        for f in (shape_file, rec_file):
            if not f.exists():
                raise MissingWeightsError(
                    f"dlib backend: {f} is missing; reinstall with: pip install --force-reinstall face-recognition-models"
                )
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(shape_file))
        self._rec_file = rec_file
        self._encoder = None  # loaded on first embed(): 22 MB, not needed for landmarks only
        self.upsample = upsample
        self.threshold = threshold

    def detect(self, image: np.ndarray) -> list[Detection]:
        rects, scores, _ = self._detector.run(image, self.upsample, self.threshold)
        out = []
        for r, s in zip(rects, scores):
            bbox = np.array([r.left(), r.top(), r.right(), r.bottom()], dtype=float)
            # HOG SVM margin -> (0, 1): margin 0 (the default threshold) maps to 0.5.
            out.append(Detection(bbox, float(1.0 / (1.0 + math.exp(-2.0 * s)))))
        return out

    def landmarks(self, image: np.ndarray, bbox: np.ndarray) -> LandmarkResult:
        x0, y0, x1, y1 = (int(round(v)) for v in bbox)
        shape = self._predictor(image, self._dlib.rectangle(x0, y0, x1, y1))
        pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        return LandmarkResult(pts)

    def embed(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        dlib = self._dlib
        if self._encoder is None:
            self._encoder = dlib.face_recognition_model_v1(str(self._rec_file))
        x0, y0 = landmarks.min(0)
        x1, y1 = landmarks.max(0)
        rect = dlib.rectangle(int(x0), int(y0), int(x1), int(y1))
        shape = dlib.full_object_detection(rect, [dlib.point(int(round(x)), int(round(y))) for x, y in landmarks])
        return np.asarray(self._encoder.compute_face_descriptor(image, shape), dtype=np.float32)
