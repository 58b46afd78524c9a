"""MediaPipe backend (optional extra ``fewshot[mediapipe]``): BlazeFace detection and the 478-point
face mesh, whose weights ship inside the mediapipe 0.10.x wheel (offline).

The mesh is also mapped to the 68-point scheme by a fixed linear map (each 68-point landmark is a
sum-to-one combination of 4 mesh vertices) fitted on the FRL London photos; see
``scripts/derive_mean_face.py``. ``LandmarkResult.dense`` holds the (478, 3) mesh (x, y pixels;
z relative depth in pixels).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import cv2
import numpy as np

from ..errors import BackendUnavailableError
from .base import FACE_BACKENDS, Detection, FaceBackend, LandmarkResult


@lru_cache(maxsize=1)
def mesh_to_68() -> tuple[np.ndarray, np.ndarray]:
    """(index (68, k), weight (68, k)) of the 478 -> 68 linear map."""
    with resources.files("fewshot.data").joinpath("mean_face_68.npz").open("rb") as f:
        d = np.load(f)
        return d["mediapipe_index"], d["mediapipe_weight"]


def _import_mediapipe():
    try:
        import mediapipe as mp
    except ImportError:
        raise BackendUnavailableError(
            "mediapipe backend is an optional extra; run: pip install 'fewshot[mediapipe]' (mediapipe 0.10.x)"
        ) from None
    if not hasattr(mp, "solutions"):
        raise BackendUnavailableError(
            f"mediapipe {mp.__version__} lacks the bundled face-mesh models; run: pip install 'mediapipe>=0.10.9,<0.10.22'"
        )
    return mp


@FACE_BACKENDS.register("mediapipe", "MediaPipe BlazeFace + 478-point face mesh mapped to 68 points (optional extra)")
class MediaPipeBackend(FaceBackend):
    name = "mediapipe"
    embedding_name = None

    def __init__(self, min_confidence: float = 0.5) -> None:
        mp = _import_mediapipe()
        self._detector = mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=min_confidence)
        self._mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True, min_detection_confidence=0.3)

    @property
    def min_face_size(self) -> int:
        return 48

    def detect(self, image: np.ndarray) -> list[Detection]:
        h, w = image.shape[:2]
        res = self._detector.process(np.ascontiguousarray(image))
        out = []
        for d in res.detections or []:
            b = d.location_data.relative_bounding_box
            box = np.array([b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h], float)
            out.append(Detection(box, float(d.score[0])))
        return out

    def landmarks(self, image: np.ndarray, bbox: np.ndarray) -> LandmarkResult:
        h, w = image.shape[:2]
        x0, y0, x1, y1 = bbox
        m = 0.5 * max(x1 - x0, y1 - y0)
        cx0, cy0 = int(max(0, x0 - m)), int(max(0, y0 - m))
        cx1, cy1 = int(min(w, x1 + m)), int(min(h, y1 + m))
        crop = np.ascontiguousarray(image[cy0:cy1, cx0:cx1])
        s = min(1.0, 480.0 / max(crop.shape[:2]))
        if s < 1.0:
            crop = cv2.resize(crop, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        res = self._mesh.process(crop)
        if not res.multi_face_landmarks:
            # keep the row: fall back to the whole image
            res = self._mesh.process(np.ascontiguousarray(image))
            s, cx0, cy0 = 1.0, 0, 0
            ch, cw = h, w
        else:
            ch, cw = crop.shape[:2]
        if not res.multi_face_landmarks:
            raise BackendUnavailableError("mediapipe face mesh found no face where the detector found one")
        pts = np.array([(p.x * cw, p.y * ch, p.z * cw) for p in res.multi_face_landmarks[0].landmark])
        pts[:, :2] = pts[:, :2] / s + [cx0, cy0]
        pts[:, 2] /= s
        idx, wts = mesh_to_68()
        lm68 = (pts[idx, :2] * wts[..., None]).sum(axis=1)
        return LandmarkResult(lm68, dense=pts)
