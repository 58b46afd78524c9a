"""Derive the neutral population the expression score compares faces with (generators/data/neutral_norms.json).

    python scripts/derive_neutral_norms.py [--canada ../shared/data/canada] [--out generators/data/neutral_norms.json]

Each of the 40 neutral frontal photos of the FRL Canada set (identity data, never used as expression
data) is analysed (dlib), its 68 landmarks fitted with the ICT-FaceKit model at its own pose and the
fitted expression read as FACS codes of the default grid AUs (``generators.neutral.fitted_codes``); the
file holds each AU's mean and spread and the near-neutral threshold of the expression score (the 95th
percentile of each photo's score against the other 39). No photo and no landmark is contained in it.
Attribution: ``generators/data/FRL_Canada_LICENSE.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from fewshot.analysis import Analyzer  # noqa: E402
from fewshot.io import atomic_path, read_image  # noqa: E402
from generators.facemodel import load_face_model  # noqa: E402
from generators.grid import DEFAULT_AUS  # noqa: E402
from generators.neutral import NORMS_PATH, SCORED_ONLY, fit_norms, fitted_codes  # noqa: E402

SHARED = Path(os.environ.get("FEWSHOT_SHARED", ROOT.parent / "shared"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--canada", type=Path, default=SHARED / "data" / "canada")
    ap.add_argument("--out", type=Path, default=NORMS_PATH)
    a = ap.parse_args(argv)
    photos = sorted(a.canada.glob("*.jpg"))
    if not photos:
        print(f"error: {a.canada}: no .jpg photos of the FRL Canada set; pass --canada", file=sys.stderr)
        return 2
    an, model, aus = Analyzer(embed=False), load_face_model(), [*DEFAULT_AUS, *SCORED_ONLY]
    codes = []
    for p in photos:
        faces = an.analyze_image(read_image(p), str(p))
        if len(faces) != 1:
            print(f"skip {p.name}: {len(faces)} faces", file=sys.stderr)
            continue
        c = fitted_codes(faces[0].landmarks, faces[0].image_size, faces[0].pose, aus, model)
        codes.append([c[x] for x in aus])
    norms = fit_norms(np.array(codes), aus, {
        "source": "FRL Canada neutral photos (DeBruine & Jones 2017, CC BY 4.0)", "detector": "dlib 68",
        "fit": "generators.facemodel.fit_landmarks defaults", "face_model": "ICT-FaceKit (generators/data/ict_face.npz)"})
    with atomic_path(a.out) as tmp:
        Path(tmp).write_text(json.dumps(norms.to_json(), indent=1) + "\n")
    print(f"{a.out}: {len(codes)} neutral faces, {len(aus)} AUs, near-neutral threshold {norms.threshold:.2f}; "
          + ", ".join(f"{x} {m:.1f}±{s:.1f}" for x, m, s in zip(aus, norms.mean, norms.sd)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
