"""Learn the mesh generator's expression texture on the 40 FRL London neutral / smiling pairs.

    python scripts/derive_london_texture.py [--london ../shared/data/frl_london] [--out generators/data/london_smile_texture.npz]

Each smile is coded with FACS intensities (AU6, AU12, AU25: ``generators.checks.code_smiles``, the
combination of the motion model whose landmarks lie closest to the smile's); the log-luminance change
from each neutral photo to its smile in the shape-normalised face space is regressed on those codes
(``generators.appearance.fit_expression_texture``: AU6's region above the nostrils, AU12's below). The
file (two 256 x 256 float16 fields, ~0.2 MB) is what ``generator="mesh"`` draws by default
(``texture="london"``). Checks on the London identities never use it: they learn one per fold on the
other identities (``generators.checks.texture_folds``). Attribution: ``generators/data/FRL_London_LICENSE.txt``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from generators import checks  # noqa: E402
from generators.mesh import LONDON_TEXTURE  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--london", type=Path, default=checks.LONDON)
    ap.add_argument("--out", type=Path, default=LONDON_TEXTURE)
    a = ap.parse_args(argv)
    if not (a.london / "neutral_front").is_dir():
        print(f"error: {a.london}: no neutral_front/ folder of the FRL London set; pass --london", file=sys.stderr)
        return 2
    identities = checks.ids(a.london)
    lmc = checks.london_landmarks(identities, checks.Analyzer(embed=False), a.london)
    texture = checks.london_texture(identities, lmc, london=a.london)
    texture.save(a.out)
    m = texture.meta
    print(f"{a.out}: {', '.join(m['aus'])} from {m['n_pairs']} pairs (mean levels "
          f"{', '.join(f'{k} {v:.2f}' for k, v in m['mean_level'].items())}); "
          + ", ".join(f"{k} |gain| max {abs(v).max():.3f}" for k, v in texture.fields.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
