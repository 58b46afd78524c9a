"""AU and expression prediction on a photo, a folder of photos or a video.

    from au_models.predict import predict
    df = predict("model.pt", "clip.mp4")

One row per face per frame (and one ``success=0`` row per frame without a face, or per unreadable photo
of a folder, whose ``error`` says why): stage 1's OpenFace columns (frame, face_id, timestamp,
confidence, success, x_0..y_67, pose_*..., error), then for each AU of the
model ``AUxx_r`` (intensity, FACS 0..5; only the model's intensity AUs), ``AUxx_c`` (occurrence 0/1 at
``threshold``) and ``AUxx_p`` (probability of occurrence), then ``expr_<name>`` probabilities for the
8 expressions and ``expression`` (the most probable). AU columns are NaN on failed rows.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fewshot.analysis import FACE_COLUMNS, Analyzer, face_row, failed_row
from fewshot.errors import NoFaceError
from fewshot.io import FrameSource

from .align import align_faces
from .checkpoint import load_checkpoint
from .model import AUModel, fused_for_inference


def output_columns(model: AUModel) -> list[str]:
    """The AU / expression columns :func:`predict` appends, in order."""
    cols = [f"{au}_r" for au in model.intensity_aus]
    cols += [f"{au}_c" for au in model.aus] + [f"{au}_p" for au in model.aus]
    cols += [f"expr_{e}" for e in model.expressions] + ["expression"]
    return cols


class Predictor:
    """A loaded model ready for aligned faces: ``Predictor(model_or_path)(images, landmarks)``."""

    def __init__(self, model: AUModel | str | os.PathLike, threshold: float = 0.5, threads: int | None = None) -> None:
        if not isinstance(model, AUModel):
            model, self.meta = load_checkpoint(model)
        else:
            self.meta = {}
        if threads:
            torch.set_num_threads(threads)
        self.model = model.eval()
        self.fast = fused_for_inference(model)
        self.threshold = threshold

    def faces(self, images: list[np.ndarray], landmarks: np.ndarray, batch_size: int = 128) -> tuple[dict, np.ndarray]:
        """Align the faces (each image uint8 RGB, landmarks (N, 68, 2) pixels) and run the model.
        Returns (outputs of :meth:`AUModel.predict_arrays`, ok (N,) bool)."""
        crops, crop_lm, ok = align_faces(images, landmarks, self.model.align)
        return self.fast.predict_arrays(crops, crop_lm, batch_size), ok

    def table(self, out: dict, ok: np.ndarray) -> pd.DataFrame:
        """Outputs -> the AU / expression columns (NaN where ``ok`` is False)."""
        m = self.model
        n = len(ok)
        cols: dict[str, np.ndarray] = {}
        for j, au in enumerate(m.intensity_aus):
            cols[f"{au}_r"] = np.where(ok, out["intensity"][:, j], np.nan)
        for j, au in enumerate(m.aus):
            cols[f"{au}_c"] = np.where(ok, (out["occ_prob"][:, j] >= self.threshold).astype(float), np.nan)
        for j, au in enumerate(m.aus):
            cols[f"{au}_p"] = np.where(ok, out["occ_prob"][:, j], np.nan)
        for j, e in enumerate(m.expressions):
            cols[f"expr_{e}"] = np.where(ok, out["expr_prob"][:, j], np.nan)
        best = out["expr_prob"].argmax(1) if n else np.zeros(0, int)
        cols["expression"] = np.array([m.expressions[b] if k else "" for b, k in zip(best, ok)], dtype=object)
        return pd.DataFrame(cols)


def predict(
    model: AUModel | str | os.PathLike,
    input: str | os.PathLike,
    analyzer=None,
    backend: str = "dlib",
    faces: str = "largest",
    batch_size: int = 64,
    threshold: float = 0.5,
    progress: bool | None = None,
) -> pd.DataFrame:
    """AU / expression table of an image, folder or video (see the module docstring for the columns).

    model: an AUModel or a checkpoint path (CheckpointError if unusable); analyzer: a stage-1
    :class:`fewshot.analysis.Analyzer` (default: ``backend`` with tracking, no embeddings).
    Raises NoFaceError when no frame of the input holds a face.
    """
    pred = Predictor(model, threshold)
    analyzer = analyzer or Analyzer(backend=backend, faces=faces, embed=False)  # type: ignore[arg-type]
    src = FrameSource(input, keep_unreadable=True)
    show = (src.kind != "image") if progress is None else progress
    rows: list[dict] = []
    parts: list[pd.DataFrame] = []
    pend_img: list[np.ndarray] = []
    pend_lm: list[np.ndarray] = []
    pend_row: list[int] = []

    def flush() -> None:
        if not pend_img:
            return
        out, ok = pred.faces(pend_img, np.stack(pend_lm), batch_size)
        tab = pred.table(out, ok)
        tab.index = pend_row
        parts.append(tab)
        pend_img.clear(), pend_lm.clear(), pend_row.clear()

    it = src
    if show:
        from tqdm import tqdm

        it = tqdm(src, total=len(src) or None, desc=f"AUs {Path(input).name}", unit="frame", file=sys.stderr, dynamic_ncols=True)
    prev = None
    n_faces = 0
    for frame in it:
        if frame.error:  # a corrupt photo of a folder: a success=0 row saying why
            rows.append(failed_row(frame))
            prev = None
            continue
        found = analyzer.analyze_frame(frame, prev)
        prev = found[0] if found else None
        if not found:
            rows.append(failed_row(frame))
        for f in found:
            pend_row.append(len(rows))
            rows.append(face_row(f))
            pend_img.append(frame.image)
            pend_lm.append(f.landmarks)
            n_faces += 1
        if len(pend_img) >= batch_size:
            flush()
    flush()
    if not n_faces:
        raise NoFaceError(f"{input}: no face found ({len(rows)} frame(s)); use a well-lit, roughly frontal face at least 80 px wide")
    base = pd.DataFrame(rows, columns=FACE_COLUMNS)
    au = pd.concat(parts).reindex(range(len(base))) if parts else pd.DataFrame(index=base.index, columns=output_columns(pred.model))
    au["expression"] = au["expression"].fillna("")
    return pd.concat([base, au[output_columns(pred.model)]], axis=1)
