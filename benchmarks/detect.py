"""Face-analysis speed on the Pexels clip (472 frames, 640x360), for every backend that loads here.

    python benchmarks/detect.py [--clip PATH] [--frames N] [--write-results]

Prints frames per second for: tracking (default), full-frame detection on every frame, and tracking
with identity embeddings. Decoding the video is included (it is part of the job).
``--write-results`` replaces the ``detect`` section of docs/results.md with the table it prints.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

from fewshot.analysis import Analyzer
from fewshot.backends import FACE_BACKENDS
from fewshot.errors import FewshotError
from fewshot.io import FrameSource

DEFAULT_CLIP = Path(__file__).resolve().parents[1].parent / "shared/data/pexels_clip/WolfgangLanger_Pexels.mp4"


def bench(analyzer: Analyzer, clip: Path, n: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    prev, done, ok = None, 0, 0
    for frame in FrameSource(clip):
        found = analyzer.analyze_frame(frame, prev)
        prev = found[0] if found else None
        ok += bool(found)
        done += 1
        if done == n:
            break
    return done / (time.perf_counter() - t0), ok / done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    ap.add_argument("--frames", type=int, default=0, help="0 = the whole clip")
    ap.add_argument("--write-results", action="store_true", help="replace the 'detect' section of docs/results.md")
    a = ap.parse_args()
    n = a.frames or len(FrameSource(a.clip))

    print(f"clip {a.clip.name}, {n} frames; {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"{'backend':16s} {'mode':22s} {'frames/s':>9s} {'success':>8s}")
    rows, missing = [], []
    for name in FACE_BACKENDS.names():
        try:
            Analyzer(backend=name, embed=False)
        except FewshotError as e:
            print(f"{name:16s} {'(not available)':22s} {str(e)[:90]}")
            missing.append(name)
            continue
        modes = [("tracking", dict(track=True, embed=False)), ("full-frame detection", dict(track=False, embed=False))]
        if FACE_BACKENDS.get(name).embedding_name:
            modes.append(("tracking + embedding", dict(track=True, embed=True)))
        for label, kw in modes:
            fps, success = bench(Analyzer(backend=name, **kw), a.clip, n)
            print(f"{name:16s} {label:22s} {fps:9.1f} {100 * success:7.1f}%", flush=True)
            rows.append([name, label, f"{fps:.1f}", f"{100 * success:.1f}%"])
    if a.write_results:
        from experiments.results_doc import invocation, markdown_table, update_section

        if missing:
            rows.append([", ".join(missing), "not available on this machine (weights or extra not installed)", "-", "-"])
        note = f"Clip `{a.clip.name}`, {n} frames, decoding included."
        update_section("detect", note + "\n\n" + markdown_table(["backend", "mode", "frames/s", "face found"], rows), command=invocation())


if __name__ == "__main__":
    main()
