"""face-alignment (FAN) backend: 2D-FAN-4 landmarks on boxes from dlib's detector.

The face-alignment package downloads its weights on first use; fewshot never does. Name the weight
file with ``backend_options={'weights': PATH}`` (CLI ``--weights``) or ``FEWSHOT_FAN_WEIGHTS``:
``2DFAN4-11f355bf06.pth.tar`` from https://www.adrianbulat.com/downloads/python-fan/ (the URL in
face_alignment/api.py). No embeddings.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import BackendUnavailableError, MissingWeightsError
from .base import FACE_BACKENDS, Detection, FaceBackend, LandmarkResult, resolve_weights
from .dlib_backend import DlibBackend

FAN_FILE = "2DFAN4-11f355bf06.pth.tar"
FAN_SOURCE = "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar"


@FACE_BACKENDS.register("face-alignment", "2D-FAN-4 landmarks (weights named by --weights / FEWSHOT_FAN_WEIGHTS)")
class FaceAlignmentBackend(FaceBackend):
    name = "face-alignment"
    embedding_name = None

    def __init__(self, weights: str | None = None, device: str = "cpu") -> None:
        path = resolve_weights(weights, "FEWSHOT_FAN_WEIGHTS", FAN_FILE, self.name, FAN_SOURCE)
        if path.is_dir():
            path = path / FAN_FILE
            if not path.exists():
                raise MissingWeightsError(f"face-alignment backend: {path} is missing (download it from {FAN_SOURCE})")
        try:
            import torch
            from face_alignment.models import FAN
            from face_alignment import utils as fa_utils
        except ImportError as e:
            raise BackendUnavailableError(f"face-alignment backend needs the face-alignment package ({e}); run: pip install face-alignment") from None
        try:
            with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files
                warnings.simplefilter("ignore")
                state = torch.load(str(path), map_location=device, weights_only=True)
            net = FAN(4)
            net.load_state_dict(state)
        except Exception as e:  # noqa: BLE001 - any failure here means the file is not FAN weights
            # only the exception's name: torch's text is lines of weights_only advice that do not apply
            raise MissingWeightsError(f"face-alignment backend: {path} is not a 2D-FAN-4 state dict ({type(e).__name__}); "
                                      f"get {FAN_SOURCE}") from None  # fmt: skip
        self._torch = torch
        self._utils = fa_utils
        self._net = net.eval().to(device)
        self._device = device
        self._boxes = DlibBackend()

    def detect(self, image: np.ndarray) -> list[Detection]:
        return self._boxes.detect(image)

    def landmarks(self, image: np.ndarray, bbox: np.ndarray) -> LandmarkResult:
        u = self._utils
        x0, y0, x1, y1 = bbox
        # dlib boxes are ~15% tighter than the S3FD boxes FAN's reference scale was set for.
        w, h = 1.15 * (x1 - x0), 1.15 * (y1 - y0)
        center = np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0 - h * u.CENTER_Y_OFFSET])
        scale = (w + h) / u.REFERENCE_SCALE
        inp = u.crop(image, center, scale).transpose(2, 0, 1).astype(np.float32) / 255.0
        with self._torch.no_grad():
            out = self._net(self._torch.from_numpy(inp)[None].to(self._device))
            out = out[-1] if isinstance(out, list) else out
        pts, _, _ = u.get_preds_fromhm(out.cpu().numpy(), center[None], np.array([scale]))
        return LandmarkResult(np.asarray(pts).reshape(68, 2).astype(float))
