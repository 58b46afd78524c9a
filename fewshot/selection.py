"""Choosing the best reference frames of a clip: sharp, confidently detected, frontal and neutral.

``select_frames(result, k)`` scores every successful face of an :class:`~fewshot.analysis.AnalysisResult`
and returns the best k rows (a table with the score and its four terms), at least ``min_gap`` frames
apart so a clip's picks are not k copies of one moment.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .analysis import AnalysisResult
from .errors import ConfigError
from .landmarks import INNER_LIPS, LEFT_BROW, LEFT_EYE, OUTER_LIPS, RIGHT_BROW, RIGHT_EYE, interocular
from .pose import HeadPose, camera_matrix, estimate_pose, mean_face_3d, project

EXPRESSIVE_POINTS = np.concatenate([RIGHT_BROW, LEFT_BROW, RIGHT_EYE, LEFT_EYE, OUTER_LIPS, INNER_LIPS])
DEFAULT_WEIGHTS = {"confidence": 0.15, "sharpness": 0.2, "frontal": 0.3, "neutral": 0.35}


def expression_residual(landmarks: np.ndarray, pose: HeadPose, image_size: tuple[int, int]) -> float:
    """How far a face's brows, eyes and mouth are from the mean neutral face seen at the same pose,
    after removing scale and translation (units: inter-ocular distances)."""
    K = camera_matrix(*image_size)
    ref = project(mean_face_3d(), pose, K)
    a, b = landmarks[EXPRESSIVE_POINTS], ref[EXPRESSIVE_POINTS]
    a = (a - a.mean(0)) / interocular(landmarks)
    b = (b - b.mean(0)) / interocular(ref)
    return float(np.linalg.norm(a - b, axis=1).mean())


def score_frames(result: AnalysisResult, weights: dict[str, float] | None = None, frontal_sigma_deg: float = 15.0) -> pd.DataFrame:
    """One row per successful face: frame, face_id, the four terms in [0, 1] and their weighted score."""
    w = {**DEFAULT_WEIGHTS, **(weights or {})}
    faces = [f for f in result.faces if f.face_id == 0]
    if not faces:
        return pd.DataFrame(columns=["frame", "face_id", "confidence", "sharpness", "frontal", "neutral", "residual", "score"])
    sharp = np.array([f.sharpness for f in faces])
    # Relative to the clip: the sharpest frame scores 1 (robust to outliers via the 95th percentile).
    sharp_term = np.clip(sharp / max(np.percentile(sharp, 95), 1e-6), 0, 1)
    rot = np.array([f.pose.rotation for f in faces])
    # roll is harmless (it is undone by alignment); yaw and pitch are not
    ang = np.degrees(np.hypot(rot[:, 0], rot[:, 1]))
    frontal = np.exp(-0.5 * (ang / frontal_sigma_deg) ** 2)
    resid = np.array([expression_residual(f.landmarks, f.pose, f.image_size) for f in faces])
    # Person-specific face shape adds a constant to the residual: measure it from the clip's calmest frames.
    base = np.percentile(resid, 10)
    neutral = np.exp(-np.maximum(resid - base, 0) / 0.04)
    conf = np.array([f.confidence for f in faces])
    table = pd.DataFrame(
        {
            "frame": [f.frame for f in faces],
            "face_id": 0,
            "confidence": conf,
            "sharpness": sharp_term,
            "frontal": frontal,
            "neutral": neutral,
            "residual": resid,
        }
    )
    table["score"] = weighted_score(table, w)
    return table


def weighted_score(table: pd.DataFrame, weights: dict[str, float] | None = None) -> np.ndarray:
    """The weighted sum of a :func:`score_frames` table's four terms (e.g. after a caller replaced the
    ``neutral`` term with a better measure of expression)."""
    w = {**DEFAULT_WEIGHTS, **(weights or {})}
    return sum(w[t] * table[t].to_numpy(float) for t in ("confidence", "sharpness", "frontal", "neutral"))


def check_k(k: int, source: str = "", option: str = "-k") -> None:
    """ConfigError unless at least one frame is asked for (call it before analysing ``source``)."""
    if k < 1:
        raise ConfigError(f"{source + ': ' if source else ''}{option} {k} picks no frame; pass {option} 1 or more")


def select_frames(result: AnalysisResult, k: int = 5, min_gap: int | None = None, weights: dict[str, float] | None = None) -> pd.DataFrame:
    """The k best-scoring frames, best first, pairwise at least ``min_gap`` frames apart
    (default: half a second of video, 0 for photos)."""
    check_k(k, result.source)
    scores = score_frames(result, weights)
    if min_gap is None:
        min_gap = int(round(0.5 * result.fps)) if result.fps > 0 else 0
    return pick_frames(scores, k, min_gap)


def pick_frames(scores: pd.DataFrame, k: int, min_gap: int = 0) -> pd.DataFrame:
    """The k rows of a scored table with the best ``score``, best first, pairwise at least ``min_gap``
    frames apart."""
    scores = scores.reset_index(drop=True)
    chosen: list[int] = []
    order = scores.sort_values("score", ascending=False, kind="stable")
    for i, fr in zip(order.index, order.frame):
        if all(abs(fr - scores.frame[j]) >= min_gap for j in chosen) or min_gap == 0:
            chosen.append(i)
        if len(chosen) == k:
            break
    return scores.loc[chosen].reset_index(drop=True)


def reference_faces(result: AnalysisResult, k: int = 1):
    """The Face objects of the k best frames (the 'neutral reference' later stages ask for)."""
    best = select_frames(result, k)
    by_frame = {f.frame: f for f in result.faces if f.face_id == 0}
    return [by_frame[fr] for fr in best.frame]


__all__ = ["check_k", "score_frames", "select_frames", "pick_frames", "weighted_score", "reference_faces", "expression_residual", "estimate_pose"]
