"""AU-model speed: aligned faces per second per backbone, and end-to-end frames per second on a clip.

    python benchmarks/predict.py [--threads 2] [--crop 112] [--clip PATH] [--no-clip] [--model base.pt] [--write-results]

Aligned faces/s: random-init models (speed does not depend on the weights) in eval mode with conv+BN
folded (as ``predict`` runs them), batches of ``--batch`` 112 px crops, ``torch.set_num_threads``.
End to end: ``predict()`` on the Pexels clip: decode + stage-1 face analysis (dlib, tracking, no
embedding) + alignment + the model in batches of 64 faces. ``--write-results`` replaces the
``predict`` section of docs/results.md with the table it prints.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_CLIP = ROOT.parent / "shared/data/pexels_clip/WolfgangLanger_Pexels.mp4"


def faces_per_second(backbone: str, crop: int, batch: int, seconds: float = 3.0) -> float:
    from au_models.align import AlignConfig, canonical_template
    from au_models.model import AUModel, fused_for_inference, to_tensor

    torch.manual_seed(0)
    model = fused_for_inference(AUModel(backbone, align=AlignConfig(crop_size=crop)))
    crops = np.random.default_rng(0).integers(0, 256, (batch, crop, crop, 3), dtype=np.uint8)
    lm = torch.from_numpy(canonical_template(AlignConfig(crop_size=crop))).float().expand(batch, -1, -1)
    with torch.inference_mode():
        model(to_tensor(crops), lm)  # warm-up
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            model(to_tensor(crops), lm)
            n += batch
    return n / (time.perf_counter() - t0)


def end_to_end(model_path: Path | None, clip: Path) -> tuple[float, int]:
    """``au_models.predict.predict`` on the clip (decode + dlib tracking + align + batched model),
    model loading excluded."""
    from au_models.align import AlignConfig
    from au_models.model import AUModel
    from au_models.predict import predict
    from au_models.checkpoint import load_checkpoint

    model = load_checkpoint(model_path)[0] if model_path else AUModel("compact", align=AlignConfig())
    t0 = time.perf_counter()
    df = predict(model, clip, progress=False)
    return len(df) / (time.perf_counter() - t0), int(df.success.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--crop", type=int, default=112)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--backbones", default="compact,geometry,resnet18")
    ap.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    ap.add_argument("--no-clip", action="store_true", help="skip the end-to-end run")
    ap.add_argument("--model", type=Path, default=None, help="checkpoint for the end-to-end run (default: random compact)")
    ap.add_argument("--write-results", action="store_true", help="replace the 'predict' section of docs/results.md")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, torch threads {a.threads}, torch {torch.__version__}")
    print(f"{'backbone':10s} {'aligned faces/s':>16s}  (batch {a.batch}, {a.crop} px)")
    rows = []
    for name in a.backbones.split(","):
        fps = faces_per_second(name, a.crop, a.batch)
        print(f"{name:10s} {fps:16.0f}", flush=True)
        rows.append([f"`{name}`, aligned {a.crop} px faces, batch {a.batch}, conv+BN folded", f"{fps:.0f} faces/s"])
    if not a.no_clip and a.clip.is_file():
        fps, ok = end_to_end(a.model, a.clip)
        print(f"end to end, predict() on {a.clip.name} (decode + dlib tracking + align + batched model): {fps:.1f} frames/s, face in {ok} frames")
        rows.append([f"end to end, `predict()` on {a.clip.name} (decode + dlib tracking + align + model)", f"{fps:.1f} frames/s, face in {ok} frames"])
    if a.write_results:
        from experiments.results_doc import invocation, markdown_table, update_section

        update_section("predict", markdown_table(["measure", "result"], rows) + f"\n\ntorch {torch.__version__}, {a.threads} threads.",
                       command=invocation())


if __name__ == "__main__":
    main()
