"""Seconds to design a 5,000-row balanced grid (8 AUs x 15 pose bins, target landmarks included) for the
shipped example photo. Profile fitting (face detection) is timed separately.

    python benchmarks/design.py [--n 5000] [--strategy balanced]
"""

from __future__ import annotations

import argparse
import platform
import time

from fewshot.data import example_photo
from generators import design_grid, fit_profile


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--strategy", default="balanced")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    t0 = time.perf_counter()
    profile = fit_profile(example_photo())
    t_profile = time.perf_counter() - t0
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        grid = design_grid(profile, n=args.n, strategy=args.strategy, seed=0)
        times.append(time.perf_counter() - t0)
    print(f"machine: {platform.machine()} {platform.processor() or ''} python {platform.python_version()}")
    print(f"fit_profile: {t_profile:.2f} s")
    print(f"design_grid n={len(grid)} strategy={args.strategy}: best {min(times):.3f} s, mean {sum(times) / len(times):.3f} s "
          f"({grid.shape[1]} columns)")


if __name__ == "__main__":
    main()
