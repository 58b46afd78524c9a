"""Time and peak memory of `fewshot adapt` with no options (shipped example photo, shipped base
model, default strategy), per stage.

    python benchmarks/adapt.py [--strategy S] [--repeat N]

Peak memory is the process's peak resident set size after each stage (it only grows).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--strategy", default=None)
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    t_import = time.perf_counter()
    from fewshot.adapt import AdaptConfig, adapt_person
    from fewshot.data import example_photo

    t_import = time.perf_counter() - t_import
    cfg = AdaptConfig() if a.strategy is None else AdaptConfig(strategy=a.strategy)
    print(f"{platform.machine()}, {os.cpu_count()} cores; strategy {cfg.strategy}; imports {t_import:.1f} s")
    for r in range(a.repeat):
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            res = adapt_person(str(example_photo()), config=cfg, out_dir=os.path.join(d, "out"), progress=False)
            total = time.perf_counter() - t
        print(f"run {r + 1}: {total:.1f} s in adapt_person (+ {t_import:.1f} s imports)")
        print(f"  {'stage':16s} {'seconds':>8s} {'peak RSS MB':>12s}")
        for s in res.report["stages"]:
            print(f"  {s['stage']:16s} {s['seconds']:8.2f} {s['peak_rss_mb']:12.0f}")


if __name__ == "__main__":
    main()
