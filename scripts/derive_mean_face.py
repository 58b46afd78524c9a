"""Derive the shipped 3D mean face (68 points, mm) and the MediaPipe 478 -> 68 mapping.

Run once by the maintainers (needs the optional mediapipe extra and ../shared/data):

    python scripts/derive_mean_face.py --data ../shared/data --out fewshot/data/mean_face_68.npz

Method. On the 80 frontal Face Research Lab London photos (neutral and smiling) we run dlib's 68-point
predictor and MediaPipe's 478-point face mesh (which estimates per-vertex depth). (1) Mapping: each
dlib point is written as a least-squares, sum-to-one combination of its 4 nearest mesh vertices.
(2) Mean face: the neutral faces' dlib points are similarity-aligned to a common frame and averaged
for x, y; depth is the same combination of mesh depths, averaged. The shape is scaled so that the
outer eye corners (points 36, 45) are 90 mm apart (adult biocular width) and centred on the nose tip.
Axes: x to the image right, y down, z away from the camera (the nose tip has the smallest z).
Data: FRL London Set, CC BY 4.0 (DeBruine & Jones 2017); MediaPipe face mesh, Apache-2.0.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fewshot.backends.dlib_backend import DlibBackend
from fewshot.io import read_image
from fewshot.landmarks import MIRROR, apply_affine, similarity_transform


def mesh_points(fm, img):
    res = fm.process(img)
    if not res.multi_face_landmarks:
        return None
    h, w = img.shape[:2]
    lm = res.multi_face_landmarks[0].landmark
    return np.array([(p.x * w, p.y * h, p.z * w) for p in lm])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", default="fewshot/data/mean_face_68.npz")
    ap.add_argument("--k", type=int, default=4)
    a = ap.parse_args()
    import mediapipe as mp

    fm = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=1)
    dl = DlibBackend()
    root = Path(a.data) / "frl_london"
    pairs = []
    for f in sorted((root / "neutral_front").glob("*.jpg")) + sorted((root / "smiling_front").glob("*.jpg")):
        img = read_image(f)
        det = max(dl.detect(img), key=lambda d: (d.bbox[2] - d.bbox[0]))
        p68 = dl.landmarks(img, det.bbox).landmarks
        m = mesh_points(fm, img)
        if m is not None:
            pairs.append((f.parent.name, p68, m))
    print(f"{len(pairs)} faces with both dlib and mesh landmarks")
    # nearest vertices in a normalized frame (by inter-ocular distance)
    dists = []
    for _, p68, m in pairs:
        iod = np.linalg.norm(p68[36:42].mean(0) - p68[42:48].mean(0))
        dists.append(np.linalg.norm(p68[:, None, :] - m[None, :, :2], axis=-1) / iod)
    mean_d = np.mean(dists, axis=0)  # (68, 478)
    idx = np.argsort(mean_d, axis=1)[:, : a.k]
    weights = np.zeros((68, a.k))
    for i in range(68):
        # rows: each face's x and y; solve w with sum(w)=1 via a heavily weighted constraint row
        A = np.concatenate([np.stack([m[idx[i], 0] for _, _, m in pairs]), np.stack([m[idx[i], 1] for _, _, m in pairs])])
        b = np.concatenate([[p[i, 0] for _, p, _ in pairs], [p[i, 1] for _, p, _ in pairs]])
        A = np.vstack([A, 1e4 * np.ones(a.k)])
        b = np.append(b, 1e4)
        w, *_ = np.linalg.lstsq(A, b, rcond=None)
        weights[i] = w
    # mean face from neutral photos
    neutral = [(p, m) for n, p, m in pairs if n == "neutral_front"]
    ref = neutral[0][0]
    xs, zs = [], []
    for p, m in neutral:
        t = similarity_transform(p, ref)
        s = np.sqrt(abs(np.linalg.det(t[:, :2])))
        xs.append(apply_affine(t, p))
        zs.append(s * (weights * m[idx, 2]).sum(1))
    xy = np.mean(xs, 0)
    z = np.mean(zs, 0)
    shape = np.column_stack([xy, z])
    shape -= shape[30]
    # level the eye line, then make the shape left-right symmetric (a mean face has no side bias)
    ang = np.arctan2(*(shape[45, :2] - shape[36, :2])[::-1])
    c, s_ = np.cos(-ang), np.sin(-ang)
    shape[:, :2] = shape[:, :2] @ np.array([[c, -s_], [s_, c]]).T
    mirrored = shape[MIRROR] * np.array([-1.0, 1.0, 1.0])
    shape = 0.5 * (shape + mirrored)
    shape -= shape[30]
    shape *= 90.0 / np.linalg.norm(shape[45, :2] - shape[36, :2])
    # MediaPipe's depth is only 'roughly the scale of x' and comes out deep: scale it so the outer eye
    # corners lie 35 mm behind the nose tip (adult anthropometric average, Farkas 1994).
    shape[:, 2] *= 35.0 / shape[[36, 45], 2].mean()
    # predicted-vs-dlib residual of the mapping, for the record
    err = np.mean([np.linalg.norm((weights[:, :, None] * m[idx, :2]).sum(1) - p, axis=1).mean() / np.linalg.norm(p[36:42].mean(0) - p[42:48].mean(0)) for _, p, m in pairs])
    print(f"mapping mean normalized error on the fit faces: {err:.4f}")
    np.savez(a.out, mean_face_mm=shape.astype(np.float64), mediapipe_index=idx.astype(np.int32), mediapipe_weight=weights)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
