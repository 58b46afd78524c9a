"""Head pose from 68 landmarks: PnP against the shipped 3D mean face.

Conventions (OpenFace's): the camera looks along +z, x to the image right, y down. The rotation is
R = Rx(pitch) @ Ry(yaw) @ Rz(roll), reported as ``pose_Rx, pose_Ry, pose_Rz`` in radians; with a
frontal face R = I, and ``pose_Rz`` > 0 turns the face clockwise in the image (same sign as the eye
line's angle with y down). Translation ``pose_T*`` is the nose tip in camera coordinates, in mm.
Without calibration the focal length is taken as max(H, W) pixels, principal point at the centre.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import cv2
import numpy as np

# Points used for PnP: brows, nose, eyes and the upper jaw line; the lower jaw and the mouth move with
# expression (AU25/26/27) and would bias the rigid fit.
PNP_POINTS = np.r_[0:5, 12:17, 17:48]


@lru_cache(maxsize=1)
def _mean_face_data() -> dict[str, np.ndarray]:
    with resources.files("fewshot.data").joinpath("mean_face_68.npz").open("rb") as f:
        d = np.load(f)
        return {k: d[k] for k in d.files}


def mean_face_3d() -> np.ndarray:
    """The shipped 3D mean face, (68, 3) in mm, nose tip at the origin (a copy)."""
    return _mean_face_data()["mean_face_mm"].copy()


@dataclass(frozen=True)
class HeadPose:
    """Rotation (pitch Rx, yaw Ry, roll Rz) in radians and translation (mm) of the head."""

    rotation: np.ndarray  # (3,) radians
    translation: np.ndarray  # (3,) mm

    @property
    def matrix(self) -> np.ndarray:
        return euler_to_matrix(*self.rotation)

    @property
    def degrees(self) -> np.ndarray:
        return np.degrees(self.rotation)


def euler_to_matrix(rx: float, ry: float, rz: float) -> np.ndarray:
    """R = Rx(rx) @ Ry(ry) @ Rz(rz) (radians)."""
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return Rx @ Ry @ Rz


def matrix_to_euler(R: np.ndarray) -> np.ndarray:
    """Inverse of :func:`euler_to_matrix`: (rx, ry, rz) radians."""
    ry = np.arcsin(np.clip(R[0, 2], -1.0, 1.0))
    rx = np.arctan2(-R[1, 2], R[2, 2])
    rz = np.arctan2(-R[0, 1], R[0, 0])
    return np.array([rx, ry, rz])


def camera_matrix(width: int, height: int, focal: float | None = None) -> np.ndarray:
    f = float(focal or max(width, height))
    return np.array([[f, 0, width / 2.0], [0, f, height / 2.0], [0, 0, 1.0]])


def project(points_3d: np.ndarray, pose: HeadPose, K: np.ndarray) -> np.ndarray:
    """Project (N, 3) model points (mm) with a head pose through intrinsics K -> (N, 2) pixels."""
    return camera_to_pixels(points_3d @ pose.matrix.T + pose.translation, K)


def camera_to_pixels(cam: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(N, 2) pixels of (N, 3) camera-frame points (mm) through intrinsics K (pinhole)."""
    return cam[:, :2] / cam[:, 2:3] * np.array([K[0, 0], K[1, 1]]) + K[:2, 2]


def estimate_pose(
    landmarks: np.ndarray,
    image_size: tuple[int, int],
    model: np.ndarray | None = None,
    focal: float | None = None,
    points: np.ndarray | None = None,
) -> HeadPose:
    """Head pose of a face from its 68 landmarks (pixels).

    image_size: (width, height) of the image the landmarks live in. ``model`` is a (68, 3) shape in mm
    (default: the mean face); a person-specific shape gives a better fit. ``points``: the landmark
    indices to fit (default ``PNP_POINTS``: contour, brows, nose, eyes).
    """
    model = mean_face_3d() if model is None else model
    idx = PNP_POINTS if points is None else np.asarray(points)
    K = camera_matrix(image_size[0], image_size[1], focal)
    obj = np.ascontiguousarray(model[idx], dtype=np.float64)
    img = np.ascontiguousarray(landmarks[idx], dtype=np.float64)
    # Initialise frontal at the distance implied by the face's size, then refine (Levenberg-Marquardt).
    iod_px = np.linalg.norm(landmarks[45] - landmarks[36])
    iod_mm = np.linalg.norm(model[45, :2] - model[36, :2])
    z0 = K[0, 0] * iod_mm / max(iod_px, 1e-6)
    nose = landmarks[30]
    t0 = np.array([(nose[0] - K[0, 2]) * z0 / K[0, 0], (nose[1] - K[1, 2]) * z0 / K[1, 1], z0])
    roll0 = np.arctan2(landmarks[45, 1] - landmarks[36, 1], landmarks[45, 0] - landmarks[36, 0])
    rvec0, _ = cv2.Rodrigues(euler_to_matrix(0.0, 0.0, roll0))
    ok, rvec, tvec = cv2.solvePnP(obj, img, K, None, rvec0, t0.reshape(3, 1), True, cv2.SOLVEPNP_ITERATIVE)
    if not ok:  # pragma: no cover - ITERATIVE with a guess practically always returns
        rvec, tvec = rvec0, t0.reshape(3, 1)
    R, _ = cv2.Rodrigues(rvec)
    return HeadPose(matrix_to_euler(R), tvec.ravel().astype(float))
