"""InsightFace backend: SCRFD detection, 68-point 3D landmarks and ArcFace (512-D) embeddings from
a local model pack.

insightface downloads its model packs into a hidden home folder; fewshot never does. Name the pack
folder (e.g. an unpacked ``buffalo_l``) with ``backend_options={'weights': DIR}`` (CLI ``--weights``)
or ``FEWSHOT_INSIGHTFACE_DIR``. It must hold ``det_10g.onnx``, ``1k3d68.onnx`` and ``w600k_r50.onnx``
(from the buffalo_l release of https://github.com/deepinsight/insightface, python-package model zoo).
"""

from __future__ import annotations

import numpy as np

from ..errors import BackendUnavailableError, MissingWeightsError
from .base import FACE_BACKENDS, Detection, FaceBackend, LandmarkResult, resolve_weights

PACK_FILES = {"detection": "det_10g.onnx", "landmark_3d_68": "1k3d68.onnx", "recognition": "w600k_r50.onnx"}
PACK_SOURCE = "the buffalo_l model pack of https://github.com/deepinsight/insightface (python-package)"


@FACE_BACKENDS.register("insightface", "SCRFD + 68-point 3D landmarks + ArcFace (model pack named by --weights / FEWSHOT_INSIGHTFACE_DIR)")
class InsightFaceBackend(FaceBackend):
    name = "insightface"
    embedding_name = "arcface512"

    def __init__(self, weights: str | None = None, det_size: int = 640) -> None:
        root = resolve_weights(weights, "FEWSHOT_INSIGHTFACE_DIR", "buffalo_l/ (det_10g.onnx, 1k3d68.onnx, w600k_r50.onnx)", self.name, PACK_SOURCE)
        missing = [f for f in PACK_FILES.values() if not (root / f).exists()]
        if missing:
            raise MissingWeightsError(f"insightface backend: {root} lacks {', '.join(missing)}; get them from {PACK_SOURCE}")
        try:
            from insightface.model_zoo import get_model
            from insightface.app.common import Face as _IFace
        except ImportError as e:
            raise BackendUnavailableError(f"insightface backend needs insightface and onnxruntime ({e}); run: pip install insightface onnxruntime") from None
        self._face_cls = _IFace
        self._det = get_model(str(root / PACK_FILES["detection"]), providers=["CPUExecutionProvider"])
        self._det.prepare(ctx_id=-1, input_size=(det_size, det_size))
        self._lmk = get_model(str(root / PACK_FILES["landmark_3d_68"]), providers=["CPUExecutionProvider"])
        self._lmk.prepare(ctx_id=-1)
        self._rec = get_model(str(root / PACK_FILES["recognition"]), providers=["CPUExecutionProvider"])
        self._rec.prepare(ctx_id=-1)
        self._kps: dict[tuple, np.ndarray] = {}

    @property
    def min_face_size(self) -> int:
        return 40

    def detect(self, image: np.ndarray) -> list[Detection]:
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        boxes, kps = self._det.detect(bgr, max_num=0)
        return [Detection(np.asarray(b[:4], float), float(b[4])) for b in boxes]

    def landmarks(self, image: np.ndarray, bbox: np.ndarray) -> LandmarkResult:
        face = self._face_cls(bbox=np.asarray(bbox, np.float32))
        pts = self._lmk.get(np.ascontiguousarray(image[:, :, ::-1]), face)
        return LandmarkResult(np.asarray(pts)[:, :2].astype(float), dense=np.asarray(pts))

    def embed(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        # ArcFace aligns on 5 points: eye centres, nose tip, mouth corners.
        kps = np.stack([landmarks[36:42].mean(0), landmarks[42:48].mean(0), landmarks[30], landmarks[48], landmarks[54]]).astype(np.float32)
        face = self._face_cls(kps=kps)
        return np.asarray(self._rec.get(np.ascontiguousarray(image[:, :, ::-1]), face), np.float32)
