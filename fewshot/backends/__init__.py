"""Face backends. Importing this package registers the built-in ones in :data:`FACE_BACKENDS`."""

from .base import FACE_BACKENDS, Detection, FaceBackend, LandmarkResult, resolve_weights
from . import dlib_backend, mediapipe_backend, face_alignment_backend, insightface_backend  # noqa: F401,E402

__all__ = ["FACE_BACKENDS", "Detection", "FaceBackend", "LandmarkResult", "resolve_weights", "available"]


def available() -> list[str]:
    """Names of registered backends."""
    return FACE_BACKENDS.names()
