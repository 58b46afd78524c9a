"""Write the AU motion model of the ICT-FaceKit expression shapes (``generators.facemodel.ict_motion_model``).

    python scripts/derive_ict_motion.py [--face-model generators/data/ict_face.npz] [--out generators/data/ict_motion.npz]

The file is a :class:`generators.motion.MotionModel` ``.npz`` (``MotionModel.save``), so it goes wherever
a fitted one does: ``fewshot design --motion generators/data/ict_motion.npz``, ``fewshot adapt --motion ...``
(``fewshot synthesize`` renders the targets its grid was designed with). Licence: ICT-FaceKit's MIT
licence, ``generators/data/ICT_FaceKit_LICENSE.txt``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from generators.facemodel import MODEL_PATH, ict_motion_model, load_face_model  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--face-model", type=Path, default=MODEL_PATH, help="face model .npz from scripts/derive_ict_face.py")
    ap.add_argument("--out", type=Path, default=ROOT / "generators/data/ict_motion.npz")
    a = ap.parse_args(argv)
    motion = ict_motion_model(load_face_model(a.face_model))
    motion.save(a.out)
    size = np.linalg.norm(motion.fields[..., :2], axis=2).max(axis=1)
    kept = ", ".join(motion.meta["facs_default_aus"]) or "none"
    print(f"{a.out}: {len(motion.aus)} AU fields ({motion.source}), inter-ocular distance {float(motion.meta['iod_mm']):.1f} mm; "
          f"FACS defaults kept for: {kept}")
    print("largest in-plane point displacement at E (IOD): " + ", ".join(f"{au} {s:.3f}" for au, s in zip(motion.aus, size)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
