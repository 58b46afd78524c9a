"""Derive the shipped compact face model ``generators/data/ict_face.npz`` from ICT-FaceKit (MIT).

Run once by the maintainers (needs a copy of ICT-FaceKit: a bare git mirror or a checkout):

    python scripts/derive_ict_face.py [--repo /work/.mirror/ICT-VGL+ICT-FaceKit/repo] [--rev HEAD]
                                      [--identity-modes 25] [--out generators/data/ict_face.npz]

What is kept. ICT-FaceKit "Light" is one generic neutral mesh (26,719 vertices, mostly quads), 100
identity PCA modes and 53 ARKit-style expression shapes, each an OBJ of the same topology; a mode is
the OBJ minus the neutral mesh, and the toolkit draws identity weights from N(0, 1), so one unit of an
identity weight is one standard deviation. We keep the parts a renderer of a face needs, with their
vertex ranges taken from the README's topology tables: the full face area (which includes the ears and
the front of the neck; the README's narrow face area is its first vertices), the mouth socket, the eye
sockets, gums and tongue, teeth, and the eyeballs split into sclera and iris. The back of the head,
the eyelashes and the Unreal-style eye helper meshes (lacrimal fluid, blend, occlusion) are dropped.
Quads are split into two triangles, and triangles are re-indexed to the kept vertices.

Frame and units. ICT is in centimetres, y up, z towards the viewer. We store millimetres in the
project's head frame (:mod:`fewshot.pose`, the mean face of ``fewshot/data/mean_face_68.npz``): x to the
image right, y down, z away from the camera, origin at the neutral nose tip (landmark 30). That is a
180-degree turn about x, a proper rotation, so the triangles keep their winding.

Precision. The neutral mesh is float32. The bases are float16, stored with axes (K, 3, V) because
that order compresses better; deltas under 1 micrometre (sculpting noise, e.g. the teeth in
``eyeBlink_L``) are set to zero first. The script prints, and stores, the largest absolute error of the
stored bases against the source in mm. Landmarks: the README's Multi-PIE 68 vertex indices (equal to
``idx_to_landmark_verts`` of ``FaceXModel/vertex_indices.json``, which is checked), its jawline
substitutes for points 0-7 and 9-16, and its extended jawlines. The FACS AU -> shape table is parsed
from the README as data.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
from pathlib import Path

import numpy as np

DEFAULT_REPO = "/work/.mirror/ICT-VGL+ICT-FaceKit/repo"
SOURCE_URL = "https://github.com/ICT-VGL/ICT-FaceKit"
# our part name -> the README's geometry name (topology and eyeball tables); kept in source order
KEPT_PARTS = (
    ("face", "Face"),
    ("mouth_socket", "Mouth socket"),
    ("eye_socket_left", "Eye socket left"),
    ("eye_socket_right", "Eye socket right"),
    ("gums_tongue", "Gums and tongue"),
    ("teeth", "Teeth"),
    ("sclera_left", "Sclera left"),
    ("iris_left", "Iris left"),
    ("sclera_right", "Sclera right"),
    ("iris_right", "Iris right"),
)
NARROW_FACE = "Narrow face area"
CM_TO_MM = 10.0
FLIP = np.array([1.0, -1.0, -1.0])  # ICT (x, y up, z to viewer) -> head frame (x, y down, z away)
ZERO_BELOW_MM = 1e-3
NOSE_TIP = 30


class Source:
    """Files of ICT-FaceKit at one revision, from a bare git directory or a checked-out folder."""

    def __init__(self, repo: str | Path, rev: str = "HEAD"):
        self.repo = Path(repo)
        self.checkout = (self.repo / "FaceXModel").is_dir()
        if self.checkout:
            self.commit = self._git("-C", str(self.repo), "rev-parse", rev, check=False) or "unknown"
        else:
            self.commit = self._git("--git-dir", str(self.repo), "rev-parse", rev)
        self.rev = rev

    @staticmethod
    def _git(*args: str, check: bool = True) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True)
        if done.returncode and check:
            raise SystemExit(f"git {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout.strip() if not done.returncode else ""

    def text(self, path: str) -> str:
        if self.checkout:
            return (self.repo / path).read_text()
        done = subprocess.run(["git", "--git-dir", str(self.repo), "show", f"{self.commit}:{path}"],
                              capture_output=True, check=True)
        return done.stdout.decode()


def obj_vertices(text: str) -> np.ndarray:
    """(N, 3) float64 positions of the ``v`` records of an OBJ."""
    rows = [line[2:] for line in text.splitlines() if line.startswith("v ")]
    return np.array(" ".join(rows).split(), float).reshape(-1, 3)


def obj_polygons(text: str) -> list[list[int]]:
    """0-based vertex indices of each ``f`` record (``v/vt`` corners), in file order."""
    return [[int(c.split("/")[0]) - 1 for c in line.split()[1:]] for line in text.splitlines() if line.startswith("f ")]


def readme_ranges(readme: str) -> dict[str, tuple[int, int, int, int]]:
    """Geometry name -> (first vertex, last vertex, first polygon, last polygon), inclusive, from every
    ``| #n | name | [a:b] | [c:d] | nv | nf |`` row of the README's tables (counts checked)."""
    out = {}
    row = re.compile(r"^\|\s*#\d+\s*\|\s*([^|]+?)\s*\|\s*\[(\d+):(\d+)\]\s*\|\s*\[(\d+):(\d+)\]\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|")
    for line in readme.splitlines():
        m = row.match(line)
        if m:
            a, b, c, d, nv, nf = map(int, m.groups()[1:])
            if b - a + 1 != nv or d - c + 1 != nf:
                raise SystemExit(f"README row {m.group(1)!r}: ranges and counts disagree")
            out[m.group(1)] = (a, b, c, d)
    return out


def readme_index_list(readme: str, heading: str) -> list[int]:
    """The comma-separated integers of the indented block that follows the line starting ``heading``."""
    lines = readme.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(heading))
    block = next(line for line in lines[start + 1:] if line.strip())
    return [int(v) for v in block.split(",")]


def readme_au_table(readme: str, expressions: list[str]) -> list[tuple[str, str, list[str]]]:
    """(code, FACS name, shapes) rows of the README's "FACS unit | Our shapes" table. AU30 comes in two
    rows, jaw sideways to the left and to the right: they become AU30L and AU30R."""
    rows = []
    pattern = re.compile(r"^\|\s*AU(\d+)\s+([^|]+?)\s*\|\s*([^|]+?)\s*\|\s*$")
    for line in readme.splitlines():
        m = pattern.match(line)
        if not m:
            continue
        number, name, shapes = int(m.group(1)), m.group(2), [s.strip() for s in m.group(3).split("+")]
        side = re.search(r"\((left|right)\)", name)
        code = f"AU{number:02d}" + ("" if side is None else side.group(1)[0].upper())
        name = re.sub(r"\s*\((left|right)\)", "", name).lower() + ("" if side is None else f", to the {side.group(1)}")
        unknown = [s for s in shapes if s not in expressions]
        if unknown:
            raise SystemExit(f"README AU table: {code} names unknown shapes {unknown}")
        rows.append((code, name, shapes))
    if not rows:
        raise SystemExit("README: no FACS AU table found")
    return sorted(rows, key=lambda r: (int(r[0][2:4]), r[0][4:]))


def derive(source: Source, identity_modes: int) -> tuple[dict[str, np.ndarray], dict]:
    readme = source.text("README.md")
    config = json.loads(source.text("FaceXModel/vertex_indices.json"))
    ranges = readme_ranges(readme)
    expressions = list(config["expressions"])

    neutral_text = source.text("FaceXModel/generic_neutral_mesh.obj")
    neutral_cm = obj_vertices(neutral_text)
    polygons = obj_polygons(neutral_text)
    n_all = len(neutral_cm)

    # kept vertices: the parts' ranges in source order; old index -> new index
    bounds, keep = [], []
    for name, readme_name in KEPT_PARTS:
        a, b, _, _ = ranges[readme_name]
        bounds.append((name, a, b + 1))
        keep.append(np.arange(a, b + 1))
    keep = np.concatenate(keep)
    if np.any(np.diff(keep) <= 0):
        raise SystemExit("kept parts overlap or are out of order")
    new_index = np.full(n_all, -1, np.int64)
    new_index[keep] = np.arange(len(keep))

    # triangles: split each polygon into a fan, keep those whose vertices are all kept, part by polygon range
    part_of_polygon = np.full(len(polygons), -1)
    for p, (_, readme_name) in enumerate(KEPT_PARTS):
        _, _, c, d = ranges[readme_name]
        part_of_polygon[c:d + 1] = p
    triangles, tri_part = [], []
    for i, poly in enumerate(polygons):
        p = part_of_polygon[i]
        if p < 0:
            continue
        idx = new_index[poly]
        if (idx < 0).any():
            raise SystemExit(f"polygon {i} of part {KEPT_PARTS[p][0]} uses a vertex outside the kept parts")
        for j in range(1, len(idx) - 1):
            triangles.append((idx[0], idx[j], idx[j + 1]))
            tri_part.append(p)
    triangles = np.array(triangles, np.int64)
    tri_part = np.array(tri_part)
    if np.any(np.diff(tri_part) < 0):
        raise SystemExit("triangles are not grouped by part")
    vstart = np.cumsum([0] + [b - a for _, a, b in bounds])
    part_vertex_bounds = np.stack([vstart[:-1], vstart[1:]], 1)
    part_triangle_bounds = np.array([[np.searchsorted(tri_part, p), np.searchsorted(tri_part, p, "right")]
                                     for p in range(len(KEPT_PARTS))])
    # the sockets are stitched to the face: their rim triangles use face vertices; nothing else is shared
    face_end = part_vertex_bounds[0, 1]
    for p, (v0, v1) in enumerate(part_vertex_bounds):
        t = triangles[part_triangle_bounds[p, 0]:part_triangle_bounds[p, 1]]
        if (((t < v0) | (t >= v1)) & (t >= face_end)).any():
            raise SystemExit(f"part {KEPT_PARTS[p][0]}: a triangle uses another part's vertex")
    # narrow face area: the first vertices and polygons of the face part
    na, nb, nc, nd = ranges[NARROW_FACE]
    fa, _, fc, _ = ranges["Face"]
    if na != fa or nc != fc:
        raise SystemExit("the narrow face area no longer starts the face part")
    n_narrow_tris = sum(len(polygons[i]) - 2 for i in range(nc, nd + 1))
    narrow_face_bounds = np.array([[0, nb - na + 1], [0, n_narrow_tris]])

    def to_head(delta_cm: np.ndarray) -> np.ndarray:
        return delta_cm * CM_TO_MM * FLIP

    neutral = to_head(neutral_cm)
    origin = neutral[config["idx_to_landmark_verts"][NOSE_TIP]].copy()
    neutral = (neutral - origin)[keep]

    # winding: the nose-tip triangles must face the camera (normal with negative z in the head frame)
    tip = new_index[config["idx_to_landmark_verts"][NOSE_TIP]]
    around = triangles[(triangles == tip).any(1)]
    normals = np.cross(neutral[around[:, 1]] - neutral[around[:, 0]], neutral[around[:, 2]] - neutral[around[:, 0]])
    if not (normals[:, 2] < 0).all():
        raise SystemExit("the nose-tip triangles do not face the camera: the winding changed")

    n_modes = min(identity_modes, 100)
    identity_full = np.stack([to_head(obj_vertices(source.text(f"FaceXModel/identity{k:03d}.obj")) - neutral_cm)
                              for k in range(100)])
    kept_full = identity_full[:, keep]
    power = np.einsum("kvc,kvc->k", kept_full, kept_full)  # each mode's variance on the kept vertices (unit-SD weights)
    variance_kept = float(power[:n_modes].sum() / power.sum())
    identity = kept_full[:n_modes]
    exact = np.stack([to_head(obj_vertices(source.text(f"FaceXModel/{name}.obj")) - neutral_cm)[keep]
                      for name in expressions])
    expression = np.where(np.linalg.norm(exact, axis=2, keepdims=True) < ZERO_BELOW_MM, 0.0, exact)

    identity16 = identity.astype(np.float16)
    expression16 = expression.astype(np.float16)
    id_err = float(np.abs(identity16.astype(np.float64) - identity).max())
    ex_err = float(np.abs(expression16.astype(np.float64) - exact).max())  # rounding and the zeroing together

    landmarks = list(config["idx_to_landmark_verts"])
    if landmarks != readme_index_list(readme, "Multi-PIE 68 point facial landmarks indices"):
        raise SystemExit("README and vertex_indices.json disagree on the 68 landmark vertices")
    right = readme_index_list(readme, "Right jawline (substitutes 0-7")
    left = readme_index_list(readme, "Left jawline (substitutes 9-16")
    jawline = list(landmarks)
    jawline[0:8], jawline[9:17] = right, left
    extended_right = readme_index_list(readme, "Right extended jawline")
    extended_left = readme_index_list(readme, "Left extended jawline")

    def reindex(ids) -> np.ndarray:
        out = new_index[np.asarray(ids)]
        if (out < 0).any():
            raise SystemExit("a landmark vertex is outside the kept parts")
        return out.astype(np.int32)

    au_rows = readme_au_table(readme, expressions)
    if len(keep) >= 2 ** 16:
        raise SystemExit("too many vertices for uint16 triangles")
    license_text = source.text("LICENSE")
    meta = {
        "source": SOURCE_URL, "commit": source.commit, "license": "MIT", "copyright": license_text.splitlines()[2].strip(),
        "script": "scripts/derive_ict_face.py", "source_units": "cm", "units": "mm",
        "frame": "head frame of fewshot.pose: x image right, y down, z away from the camera, origin at the neutral nose tip (landmark 30)",
        "identity_weights": "unit = one standard deviation of the identity PCA (ICT samples N(0, 1))",
        "identity_modes": n_modes, "identity_variance_kept": variance_kept,
        "stored_axes": "bases stored as (K, 3, V); the loader returns (K, V, 3)",
        "zero_below_mm": ZERO_BELOW_MM, "float16_max_error_mm": {"identity": id_err, "expression": ex_err},
        "triangle_winding": "(b - a) x (c - a) points out of the surface (towards the camera at the nose tip)",
        "dropped": "head and neck (back of the head), lacrimal fluid, eye blend, eye occlusion, eyelashes; UVs and materials",
    }
    data = {
        "vertices_neutral": neutral.astype(np.float32),
        "identity_basis": np.ascontiguousarray(identity16.transpose(0, 2, 1)),
        "expression_basis": np.ascontiguousarray(expression16.transpose(0, 2, 1)),
        "expression_names": np.array(expressions),
        "au_codes": np.array([r[0] for r in au_rows]),
        "au_names": np.array([r[1] for r in au_rows]),
        "au_expressions": np.array(["+".join(r[2]) for r in au_rows]),
        "triangles": triangles.astype(np.uint16),
        "part_names": np.array([name for name, _ in KEPT_PARTS]),
        "part_vertex_bounds": part_vertex_bounds.astype(np.int32),
        "part_triangle_bounds": part_triangle_bounds.astype(np.int32),
        "narrow_face_bounds": narrow_face_bounds.astype(np.int32),
        "landmark_index": reindex(landmarks),
        "landmark_index_jawline": reindex(jawline),
        "jawline_extended_right": reindex(extended_right),
        "jawline_extended_left": reindex(extended_left),
        "source_vertex_index": keep.astype(np.int32),
        "float16_max_error_mm": np.array([id_err, ex_err], np.float32),
        "identity_variance_kept": np.float32(variance_kept),
        "meta": np.array(json.dumps(meta)),
        "license": np.array(license_text),
    }
    return data, meta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repo", default=DEFAULT_REPO, help="ICT-FaceKit: a bare git directory or a checkout")
    ap.add_argument("--rev", default="HEAD")
    ap.add_argument("--identity-modes", type=int, default=25)
    ap.add_argument("--out", default="generators/data/ict_face.npz")
    ap.add_argument("--license-out", default="generators/data/ICT_FaceKit_LICENSE.txt")
    a = ap.parse_args()
    source = Source(a.repo, a.rev)
    data, meta = derive(source, a.identity_modes)
    buf = io.BytesIO()
    np.savez_compressed(buf, **data)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_bytes(buf.getvalue())
    Path(a.license_out).write_text(str(data["license"]))
    v = len(data["vertices_neutral"])
    print(f"{a.out}: {len(buf.getvalue()) / 1e6:.2f} MB, {v} vertices, {len(data['triangles'])} triangles, "
          f"K={meta['identity_modes']} identity modes ({100 * meta['identity_variance_kept']:.1f}% of the variance), "
          f"{len(data['expression_names'])} expressions, commit {source.commit}")
    print(f"float16 max error (mm): identity {meta['float16_max_error_mm']['identity']:.4f}, "
          f"expression {meta['float16_max_error_mm']['expression']:.4f}")


if __name__ == "__main__":
    main()
