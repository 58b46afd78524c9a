"""Add a validation buffer to an existing base checkpoint without retraining it.

    python scripts/add_validation_buffer.py [--model au_models/data/base.pt] [--cache build/base_model/cache]

The buffer is drawn (``au_models.train.replay_buffer``, 128 samples, seed 0) from the aligned synthetic
grids of the checkpoint's own validation identities (``provenance.val_subjects``), which
``scripts/make_base_model.py`` leaves in ``<work>/cache``. New builds of the base model write the buffer
directly; this script upgraded the shipped model built before that. Weights are untouched.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=ROOT / "au_models/data/base.pt")
    ap.add_argument("--cache", type=Path, default=ROOT / "build/base_model/cache")
    ap.add_argument("--size", type=int, default=128)
    a = ap.parse_args()
    import torch

    from au_models.cache import concat_sets, load_aligned
    from au_models.checkpoint import _read, load_checkpoint, save_checkpoint
    from au_models.train import replay_buffer

    model, meta = load_checkpoint(a.model)
    val_ids = meta["provenance"]["val_subjects"]
    val = concat_sets([load_aligned(a.cache / f"synth_{i}.h5") for i in val_ids])
    blob = _read(a.model)
    keep = {k: v for k, v in blob["meta"].items()}
    keep["provenance"] = dict(keep["provenance"], validation_buffer=f"{a.size} samples of the synthetic grids of {', '.join(val_ids)}")
    replay = {k: v.numpy() for k, v in blob["replay"].items()} if "replay" in blob else None
    for k in ("model", "preprocessing"):
        keep.pop(k, None)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    save_checkpoint(a.model, model, keep, replay=replay, validation=replay_buffer(val, a.size, 0))
    m2, meta2 = load_checkpoint(a.model)
    assert all(torch.equal(before[k], v) for k, v in m2.state_dict().items())
    print(f"{a.model}: validation buffer of {len(meta2['validation']['images'])} samples added ({a.model.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
