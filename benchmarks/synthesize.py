"""Synthesis speed of the default 'warp' generator, one process, on the shipped example photo.

    python benchmarks/synthesize.py [--n 400] [--size 256] [--photo PATH]

Prints images/s for: rendering only (``generate``), rendering with every row carrying semantic AU
appearance, and the full ``synthesize`` path into HDF5 (gzip level 1, lzf and uncompressed). The
profile fit and the grid design are done once, outside the timings.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from fewshot.data import example_photo
from fewshot.io import read_image
from generators import design_grid, fit_profile
from generators.render import WarpGenerator
from generators.store import synthesize


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--photo", type=Path, default=example_photo())
    a = ap.parse_args()
    image = read_image(a.photo)
    profile = fit_profile(image)
    grid = design_grid(profile, n=a.n, strategy="balanced", seed=0)
    print(f"{platform.machine()} {os.cpu_count()} cores, {a.photo.name} {image.shape[1]}x{image.shape[0]}, {a.n} samples at {a.size}x{a.size}")
    gen = WarpGenerator()
    gen.render(profile, grid.iloc[:4], size=a.size)  # prepare the source once (cached per profile)
    t = time.perf_counter()
    gen.render(profile, grid, size=a.size)
    dt = time.perf_counter() - t
    print(f"generate (grid as designed, {int((grid.filter(like='sem_').sum(axis=1) > 0).sum())} rows with semantic appearance): {a.n / dt:7.1f} images/s")
    full = grid.copy()
    full["sem_AU06"], full["sem_AU17"] = 0.6, 0.6
    t = time.perf_counter()
    gen.render(profile, full, size=a.size)
    dt = time.perf_counter() - t
    print(f"generate (every row with AU6 + AU17 appearance):           {a.n / dt:7.1f} images/s")
    for comp in ("gzip", "lzf", "none"):
        with tempfile.TemporaryDirectory() as d:
            out = Path(d) / "p.h5"
            t = time.perf_counter()
            synthesize(profile, grid, out, size=a.size, chunk=64, compression=comp, progress=False, contact_sheet=False)
            dt = time.perf_counter() - t
            print(f"synthesize -> HDF5 ({comp:4s}):                              {a.n / dt:7.1f} images/s, {out.stat().st_size / a.n / 1e3:.0f} kB/image")


if __name__ == "__main__":
    main()
