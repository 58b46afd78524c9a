"""Seconds to design a 5,000-row grid (8 AUs x 15 pose bins, target landmarks included) for the
shipped example photo, per grid strategy. Profile fitting (face detection) is timed separately.

    python benchmarks/design.py [--n 5000] [--strategy balanced,factorial,cooccurrence] [--write-results]

``--write-results`` replaces the ``design`` section of docs/results.md with the table it prints.
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
    ap.add_argument("--strategy", default="balanced,factorial,cooccurrence", help="comma-separated grid strategies")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--write-results", action="store_true", help="replace the 'design' section of docs/results.md")
    args = ap.parse_args()
    t0 = time.perf_counter()
    profile = fit_profile(example_photo())
    t_profile = time.perf_counter() - t0
    print(f"machine: {platform.machine()} {platform.processor() or ''} python {platform.python_version()}")
    print(f"fit_profile: {t_profile:.2f} s")
    rows = []
    for strategy in args.strategy.split(","):
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            grid = design_grid(profile, n=args.n, strategy=strategy, seed=0)
            times.append(time.perf_counter() - t0)
        print(f"design_grid n={len(grid)} strategy={strategy}: best {min(times):.3f} s, mean {sum(times) / len(times):.3f} s "
              f"({grid.shape[1]} columns)")
        rows.append([strategy, len(grid), grid.shape[1], f"{min(times):.3f}", f"{sum(times) / len(times):.3f}"])
    if args.write_results:
        from experiments.results_doc import invocation, markdown_table, update_section

        table = markdown_table(["strategy", "rows", "columns", "best s", "mean s"], rows)
        update_section("design", table + f"\n\n`fit_profile` on the example photo (face detection included): {t_profile:.2f} s; "
                                 f"best and mean of {args.repeat} runs.", command=invocation())


if __name__ == "__main__":
    main()
