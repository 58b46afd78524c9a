"""The face-backend interface and its registry.

A backend does three things on uint8 RGB images: find face boxes, place 68 landmarks in a box, and
(optionally) compute an identity embedding from the landmarks. The tracking, pose, selection and table
logic around them lives in :mod:`fewshot.analysis` and is shared by every backend.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MissingWeightsError
from ..registry import Registry


@dataclass(frozen=True)
class Detection:
    """A face box in pixels (x0, y0, x1, y1) with a detector confidence in [0, 1]."""

    bbox: np.ndarray
    confidence: float


@dataclass(frozen=True)
class LandmarkResult:
    """68 points (68, 2) in pixels; ``dense`` holds a backend's own denser scheme when it has one."""

    landmarks: np.ndarray
    dense: np.ndarray | None = None


class FaceBackend(ABC):
    """Interface every face backend implements. Images are uint8 (H, W, 3) RGB."""

    name: str = "?"
    embedding_name: str | None = None  # e.g. "dlib128", "arcface512"; None = no embeddings

    @abstractmethod
    def detect(self, image: np.ndarray) -> list[Detection]:
        """All faces in the image, any order."""

    @abstractmethod
    def landmarks(self, image: np.ndarray, bbox: np.ndarray) -> LandmarkResult:
        """68 landmarks of the face in ``bbox``."""

    def embed(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray | None:
        """Identity embedding (1-D float32) of the face with these 68 landmarks, or None."""
        return None

    @property
    def min_face_size(self) -> int:
        """Smallest face side (pixels) the detector reliably finds without upsampling."""
        return 80


FACE_BACKENDS: Registry[FaceBackend] = Registry("face backend")


def resolve_weights(
    option: str | os.PathLike | None,
    env_var: str,
    filename: str,
    backend: str,
    where: str,
) -> Path:
    """Find a weight file or folder the user names by option or environment variable.

    Never downloads: when nothing is named or the file is absent, raise MissingWeightsError with one
    line saying which file is missing and where to get it.
    """
    value = option or os.environ.get(env_var)
    if not value:
        raise MissingWeightsError(
            f"{backend} backend needs '{filename}' on disk; pass --weights PATH or set {env_var} "
            f"(obtain it from {where}); fewshot never downloads weights"
        )
    p = Path(value).expanduser()
    if not p.exists():
        raise MissingWeightsError(
            f"{backend} backend: {p} does not exist (expected '{filename}', from {where}); "
            f"fix --weights or {env_var}"
        )
    return p
