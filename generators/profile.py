"""A person's profile: their neutral 3D landmark shape, head pose and camera, from one photo or clip.

Pose convention of :meth:`PersonProfile.landmarks_for` (and of the grid's ``yaw, pitch, roll``
columns): the angles are the **absolute** head pose in the camera, in degrees, in the convention of
:mod:`fewshot.pose` (R = Rx(pitch) Ry(yaw) Rz(roll); OpenFace's ``pose_Ry, pose_Rx, pose_Rz``), and the
head stays where it was in the source photo (the source's translation and camera K). So
``landmarks_for(0, 0, 0)`` is the frontalised face at the source position, and asking for the source's
own angles with ``aus=None`` returns the source landmarks exactly (the shape reprojects onto them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from fewshot.analysis import AnalysisResult, Analyzer, Face
from fewshot.errors import ConfigError, NoFaceError
from fewshot.io import FrameSource, read_image
from fewshot.landmarks import N_POINTS, STABLE, aligned_error, interocular
from fewshot.pose import HeadPose, camera_matrix, estimate_pose, mean_face_3d

from .facemodel import FaceView
from .motion import MotionModel, default_motion_model


@dataclass(frozen=True)
class PersonProfile:
    """One person's neutral face.

    image: uint8 (H, W, 3) RGB source photo (the reference frame of a clip).
    landmarks: (68, 2) px, detected in ``image``.
    pose: head pose of ``image`` (radians, mm).
    shape3d: (68, 3) mm, head frame (x right, y down, z away from the camera, nose tip at 0): the mean
        face with x, y refitted so that it projects exactly onto the detected landmarks at ``pose``
        through ``camera``; depth is the mean face's.
    camera: 3x3 intrinsics K of ``image``.
    embedding: identity descriptor of the source face (None if not computed).
    views: the other faces of a clip or folder the profile was fitted on (their landmarks, image sizes
        and poses: :class:`generators.facemodel.FaceView`), for a face model fitted on every view.
    source_expression: FACS intensities {AU: 0..5} of the expression ``image`` shows that were taken out
        of ``shape3d`` (:func:`generators.neutral.neutralize_profile`: a source that is not neutral);
        empty when the source is taken as neutral. Generators that read it render a row's AUs as
        absolute (the mesh takes the source's shapes and learned skin of these AUs off first).
    """

    image: np.ndarray
    landmarks: np.ndarray
    pose: HeadPose
    shape3d: np.ndarray
    camera: np.ndarray
    embedding: np.ndarray | None = None
    source: str = ""
    motion: MotionModel = field(default_factory=default_motion_model, compare=False, repr=False)
    views: tuple = field(default=(), compare=False, repr=False)
    source_expression: Mapping[str, float] = field(default_factory=dict, compare=False)

    @property
    def iod_mm(self) -> float:
        """Inter-ocular distance of ``shape3d`` (mm): the unit of the motion fields."""
        return float(interocular(self.shape3d[:, :2]))

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.image.shape[1]), int(self.image.shape[0])

    def shapes_for(self, intensities: np.ndarray | None, constrain: bool = True) -> np.ndarray:
        """(n, n_aus) intensities in ``self.motion.aus`` order -> (n, 68, 3) head-frame shapes (mm)."""
        if intensities is None:
            return self.shape3d[None].copy()
        return self.motion.deform(self.shape3d, intensities, constrain)

    def project(self, shapes: np.ndarray, angles_deg: np.ndarray) -> np.ndarray:
        """Project (n, 68, 3) head-frame shapes at (n, 3) [yaw, pitch, roll] degrees -> (n, 68, 2) px."""
        ang = np.radians(np.atleast_2d(np.asarray(angles_deg, float)))
        R = rotation_matrices(ang[:, 1], ang[:, 0], ang[:, 2])  # (n, 3, 3)
        cam = np.einsum("nij,npj->npi", R, shapes) + self.pose.translation
        K = self.camera
        return cam[..., :2] / cam[..., 2:3] * np.array([K[0, 0], K[1, 1]]) + K[:2, 2]

    def landmarks_for(
        self, yaw_deg: float, pitch_deg: float, roll_deg: float, aus: Mapping[str, float] | None = None
    ) -> np.ndarray:
        """(68, 2) px in the source image frame of this face at an absolute head pose (degrees) with
        the given AU intensities ({'AU12': 3, ...}, FACS 0..5). ``aus=None``: rigid re-posing only (no
        motion, no constraints); a dict (even empty) applies the motion model and its constraints."""
        inten = None if aus is None else self.motion.intensity_matrix(aus)
        return self.landmarks_batch(np.array([[yaw_deg, pitch_deg, roll_deg]]), inten)[0]

    def landmarks_batch(self, angles_deg: np.ndarray, intensities: np.ndarray | None) -> np.ndarray:
        """Vectorised :meth:`landmarks_for`: (n, 3) [yaw, pitch, roll] degrees and (n, n_aus)
        intensities in ``self.motion.aus`` order (or None) -> (n, 68, 2) px."""
        angles_deg = np.atleast_2d(angles_deg)
        shapes = self.shapes_for(intensities)
        if len(shapes) == 1 and len(angles_deg) > 1:
            shapes = np.broadcast_to(shapes, (len(angles_deg), N_POINTS, 3))
        return self.project(shapes, angles_deg)

    @property
    def pose_degrees(self) -> tuple[float, float, float]:
        """The source head pose as (yaw, pitch, roll) degrees."""
        rx, ry, rz = np.degrees(self.pose.rotation)
        return float(ry), float(rx), float(rz)

    def pose_of(self, landmarks: np.ndarray, image_size: tuple[int, int] | None = None) -> tuple[float, float, float]:
        """Head pose (yaw, pitch, roll degrees) of another photo or frame of this person from its 68
        landmarks (px; ``image_size`` (width, height) of that image, default this profile's): PnP with
        this person's own 3D shape, so the angle between two photos is not biased by how far the person's
        face differs from the mean face. It fits the stable points (nose, eye corners, the ends of the
        contour), which an expression barely moves; brows and jaw, which it does move, are left out."""
        size = self.image_size if image_size is None else image_size
        focal = float(self.camera[0, 0]) if tuple(size) == self.image_size else None
        pose = estimate_pose(np.asarray(landmarks, float), size, self.shape3d, focal, STABLE)
        rx, ry, rz = np.degrees(pose.rotation)
        return float(ry), float(rx), float(rz)

    def with_motion(self, motion: MotionModel) -> "PersonProfile":
        from dataclasses import replace

        return replace(self, motion=motion)


def rotation_matrices(rx: np.ndarray, ry: np.ndarray, rz: np.ndarray) -> np.ndarray:
    """Batched :func:`fewshot.pose.euler_to_matrix`: (n,) radians each -> (n, 3, 3)."""
    rx, ry, rz = (np.atleast_1d(np.asarray(a, float)) for a in (rx, ry, rz))
    n = len(rx)
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    o, z = np.ones(n), np.zeros(n)
    Rx = np.stack([o, z, z, z, cx, -sx, z, sx, cx], -1).reshape(n, 3, 3)
    Ry = np.stack([cy, z, sy, z, o, z, -sy, z, cy], -1).reshape(n, 3, 3)
    Rz = np.stack([cz, -sz, z, sz, cz, z, z, z, o], -1).reshape(n, 3, 3)
    return Rx @ Ry @ Rz


def deposed_shape(landmarks: np.ndarray, pose: HeadPose, K: np.ndarray, depth: np.ndarray | None = None) -> np.ndarray:
    """Head-frame (68, 3) mm shape with the given depths (default: the mean face's z) whose projection
    at ``pose`` through K is exactly ``landmarks``: per point, two linear equations in (x, y)."""
    z = mean_face_3d()[:, 2] if depth is None else depth
    R, t = pose.matrix, pose.translation
    a = (landmarks - K[:2, 2]) / np.array([K[0, 0], K[1, 1]])  # normalised image coordinates (68, 2)
    # camera point c = R[:, :2] @ [x, y] + R[:, 2] z + t; require c_x - a_x c_z = 0, c_y - a_y c_z = 0
    A = np.stack([R[0, :2][None] - a[:, :1] * R[2, :2][None], R[1, :2][None] - a[:, 1:] * R[2, :2][None]], axis=1)
    rhs0 = -(R[0, 2] * z + t[0]) + a[:, 0] * (R[2, 2] * z + t[2])
    rhs1 = -(R[1, 2] * z + t[1]) + a[:, 1] * (R[2, 2] * z + t[2])
    xy = np.linalg.solve(A, np.stack([rhs0, rhs1], -1)[..., None])[..., 0]
    return np.column_stack([xy, z])


def fit_profile(
    source,
    backend: str = "dlib",
    embed: bool = False,
    motion: MotionModel | None = None,
    focal: float | None = None,
    image: np.ndarray | None = None,
    reference: int | None = None,
) -> PersonProfile:
    """Fit a :class:`PersonProfile` from a photo path, a uint8 RGB array, an ``AnalysisResult`` or a
    list of ``Face`` objects. ``image``: the uint8 RGB pixels of the reference (most frontal) face's
    frame, for Faces whose ``source`` is not a readable file (default: read back from the source).

    With several faces (a clip or a folder), their de-posed shapes are averaged (after scaling each to
    the mean inter-ocular distance); ``image``, ``landmarks`` and ``pose`` are those of the most frontal
    face (or of ``faces[reference]``), so ``landmarks_for`` at that pose reprojects the *averaged*
    shape, not the detected points.
    """
    name = ""
    if isinstance(source, (str, os.PathLike)):
        name, image = str(source), None
        src = FrameSource(source)
        if src.kind == "image":
            image = read_image(source)
            faces = Analyzer(backend=backend, embed=embed).analyze_image(image, name)
        else:
            faces = Analyzer(backend=backend, embed=embed).analyze(source).faces
    elif isinstance(source, np.ndarray):
        if source.ndim != 3 or source.shape[2] != 3 or source.dtype != np.uint8:
            raise ConfigError(f"expected a uint8 (H, W, 3) RGB image, got {source.dtype} {source.shape}")
        image, name = source, "<array>"
        faces = Analyzer(backend=backend, embed=embed).analyze_image(image, name)
    elif isinstance(source, AnalysisResult):
        faces, name = list(source.faces), source.source
    elif isinstance(source, Sequence) and all(isinstance(f, Face) for f in source):
        faces = list(source)
        name = faces[0].source if faces else ""
    else:
        raise ConfigError(f"fit_profile needs a photo path, an RGB array, an AnalysisResult or Faces, not {type(source).__name__}")
    faces = [f for f in faces if f.face_id == 0]
    if not faces:
        raise NoFaceError(f"{name or 'input'}: no face to build a profile from; use a well-lit, roughly frontal photo")
    ref = faces[reference] if reference is not None else min(faces, key=lambda f: float(np.abs(f.pose.rotation[:2]).sum()))
    K = camera_matrix(*ref.image_size, focal)
    shapes = [deposed_shape(f.landmarks, f.pose, camera_matrix(*f.image_size, focal)) for f in faces]
    if len(shapes) == 1:
        shape = shapes[0]
    else:
        iods = np.array([interocular(s[:, :2]) for s in shapes])
        target = iods.mean()
        xy = np.mean([s[:, :2] * (target / i) for s, i in zip(shapes, iods)], axis=0)
        shape = np.column_stack([xy, shapes[0][:, 2]])
    if image is None:
        image = _frame_image(ref, read_image, FrameSource)
    return PersonProfile(
        image=image,
        landmarks=np.asarray(ref.landmarks, float),
        pose=ref.pose,
        shape3d=shape,
        camera=K,
        embedding=ref.embedding,
        source=name or ref.source,
        motion=motion or default_motion_model(),
        views=tuple(FaceView(np.asarray(f.landmarks, float), tuple(f.image_size), f.pose) for f in faces if f is not ref),
    )


def _frame_image(face, read_image, FrameSource) -> np.ndarray:
    """The RGB pixels of the frame a Face came from (photo, folder or video)."""
    p = Path(face.source)
    if not p.exists():
        raise ConfigError(f"{face.source or '<no source>'}: cannot read the reference frame back; pass image= to fit_profile")
    src = FrameSource(p)
    if src.kind == "image":
        return read_image(p)
    for fr in src:
        if fr.index == face.frame:
            return fr.image
    raise NoFaceError(f"{p}: frame {face.frame} of the reference face could not be read back")


def code_expression(
    profile: PersonProfile,
    landmarks: np.ndarray,
    aus: Sequence[str] = ("AU06", "AU12", "AU25"),
    required: Sequence[str] = (),
    step: float = 1.0,
    fixed: Mapping[str, float] | None = None,
    tolerance: float = 0.0,
    pose: Sequence[float] | None = None,
) -> tuple[dict[str, float], float]:
    """Code a face of the same person with FACS intensities from its landmarks alone: the letters
    (0, A..E as 0..5) of ``aus`` whose motion-model landmarks, at the profile's pose, lie closest to
    ``landmarks`` ((68, 2) px) after a similarity fit on the stable points (the head moves between
    photos). ``required`` AUs are coded A or above. Exhaustive over the combinations (k <= 4 AUs);
    ``step`` 1 gives FACS letters, 0.5 half-letters (11^k combinations). ``fixed`` AUs ({AU: 0..5})
    are held at their value while the others are coded (e.g. AU6 at A for a posed smile).
    ``tolerance`` > 0 (IOD): the least intense combination (smallest sum of intensities) whose error is
    within ``tolerance`` of the best one's: a FACS coder scores a higher letter only on evidence, and
    where the landmarks barely tell the letters apart (AU6's error surface is nearly flat) the best fit
    alone picks a letter by noise. ``pose`` (yaw, pitch, roll degrees): the head pose of the face being
    coded, e.g. :meth:`PersonProfile.pose_of` its landmarks (default: the profile's own pose). Two photos
    of a person rarely share a head pose (the London pairs differ by up to 9 degrees), and a turn or nod
    the motion model is not told about is explained with AU motion instead.

    A stand-in for a FACS coder where photos come without codes (the London smiles): the landmark
    signature of some AUs is weak (AU6's is the lower lid), so such codes are noisier than a coder's.
    Returns ({AU: intensity}, normalised landmark error of the best combination).
    """
    from itertools import product

    aus = list(aus)
    if not 1 <= len(aus) <= 4:
        raise ConfigError(f"code_expression codes 1 to 4 AUs at once, not {len(aus)}")
    cols = [profile.motion.index(a) for a in aus]
    if not 0.1 <= step <= 1.0:
        raise ConfigError(f"code_expression step must be within 0.1..1, not {step}")
    grid = np.arange(0.0, 5.0 + 1e-9, step)
    combos = np.array(list(product(*[grid[grid >= (1.0 if a in required else 0.0)] for a in aus])), float)
    inten = np.zeros((len(combos), len(profile.motion.aus)))
    inten[:, cols] = combos
    for a, v in (fixed or {}).items():
        if a in aus:
            raise ConfigError(f"{a} is both coded and fixed")
        inten[:, profile.motion.index(a)] = float(v)
    angles = np.array(profile.pose_degrees if pose is None else pose, float)
    if angles.shape != (3,):
        raise ConfigError(f"code_expression pose must be (yaw, pitch, roll) degrees, not {pose!r}")
    pred = profile.landmarks_batch(np.tile(angles, (len(combos), 1)), inten)
    ref = np.asarray(landmarks, float)
    err = np.array([aligned_error(p, ref) for p in pred])
    k = int(np.nanargmin(err))
    if tolerance > 0:  # the least intense combination the landmarks cannot tell from the best one
        near = np.where(err <= err[k] + tolerance)[0]
        k = int(near[np.lexsort((err[near], combos[near].sum(1)))[0]])
    return {**{a: float(v) for a, v in (fixed or {}).items()}, **dict(zip(aus, combos[k].tolist()))}, float(err[k])
