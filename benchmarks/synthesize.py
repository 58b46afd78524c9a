"""Synthesis speed of a generator (default 'warp'), one process, on the shipped example photo.

    python benchmarks/synthesize.py [--n 400] [--size 256] [--photo PATH] [--generator NAME] [--motion M.npz] [--repeat 3] [--write-results]

Prints images/s for: rendering only (``generate``), rendering with every row carrying semantic AU
appearance, and the full ``synthesize`` path into HDF5 (gzip level 1, lzf and uncompressed); each the median of
``--repeat`` runs (a shared VM's speed varies by tens of percent from one run to the next). The
profile fit and the grid design are done once, outside the timings. ``--write-results`` replaces
the ``synthesize`` section of docs/results.md (``synthesize_<generator>`` for another generator)
with the table it prints. ``--motion``: the profile's AU motion model (e.g. ``generators/data/ict_motion.npz``).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from fewshot.data import example_photo
from fewshot.io import read_image
from generators import GENERATORS, design_grid, fit_profile, load_motion_model
from generators.store import synthesize


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--photo", type=Path, default=example_photo())
    ap.add_argument("--generator", default="warp", help="a registered generator (`fewshot backends` lists them)")
    ap.add_argument("--motion", type=Path, default=None, help="AU motion model .npz (default: the FACS fields)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is reported")
    ap.add_argument("--write-results", action="store_true", help="replace the 'synthesize' section of docs/results.md")
    a = ap.parse_args()
    image = read_image(a.photo)
    profile = fit_profile(image, motion=load_motion_model(a.motion) if a.motion else None)
    grid = design_grid(profile, n=a.n, strategy="balanced", seed=0)
    print(f"{platform.machine()} {os.cpu_count()} cores, {a.photo.name} {image.shape[1]}x{image.shape[0]}, {a.n} samples at {a.size}x{a.size}")
    gen = GENERATORS.create(a.generator)
    t = time.perf_counter()
    gen.render(profile, grid.iloc[:4], size=a.size)  # prepare the source once (cached per profile)
    print(f"first 4 rows, source prepared (and the face model fitted, where the generator has one): {time.perf_counter() - t:.2f} s")
    def median_seconds(fn) -> float:
        times = []
        for _ in range(max(a.repeat, 1)):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return float(np.median(times))

    dt = median_seconds(lambda: gen.render(profile, grid, size=a.size))
    n_sem = int((grid.filter(like='sem_').sum(axis=1) > 0).sum())
    print(f"generate (grid as designed, {n_sem} rows with semantic appearance): {a.n / dt:7.1f} images/s")
    rows = [[f"`generate`, balanced grid as designed ({n_sem} of {a.n} rows with semantic appearance)", f"{a.n / dt:.1f}", "-"]]
    full = grid.copy()
    full["sem_AU06"], full["sem_AU17"] = 0.6, 0.6
    dt = median_seconds(lambda: gen.render(profile, full, size=a.size))
    print(f"generate (every row with AU6 + AU17 appearance):           {a.n / dt:7.1f} images/s")
    rows.append(["`generate`, every row with AU6 + AU17 appearance", f"{a.n / dt:.1f}", "-"])
    for comp in ("gzip", "lzf", "none"):
        with tempfile.TemporaryDirectory() as d:
            out = Path(d) / "p.h5"

            def run() -> None:
                out.unlink(missing_ok=True)
                synthesize(profile, grid, out, size=a.size, chunk=64, compression=comp, progress=False, contact_sheet=False,
                           generator=a.generator)

            dt = median_seconds(run)
            print(f"synthesize -> HDF5 ({comp:4s}):                              {a.n / dt:7.1f} images/s, {out.stat().st_size / a.n / 1e3:.0f} kB/image")
            rows.append([f"`synthesize` into HDF5, {comp}" + (" (level 1, default)" if comp == "gzip" else ""), f"{a.n / dt:.1f}",
                         f"{out.stat().st_size / a.n / 1e3:.0f}"])
    if a.write_results:
        from experiments.results_doc import invocation, markdown_table, update_section

        note = (f"{a.n} samples of `{a.photo.name}` at {a.size}x{a.size}, one process, `{a.generator}` generator"
                + (f", motion `{a.motion.name}`" if a.motion else "") + f"; median of {a.repeat} runs.")
        section = "synthesize" if a.generator == "warp" else "synthesize_" + a.generator.replace("+", "_")
        update_section(section, note + "\n\n" + markdown_table(["path", "images/s", "kB/image"], rows), command=invocation())


if __name__ == "__main__":
    main()
