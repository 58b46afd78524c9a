"""The synthetic data set of one person as one HDF5 file, written chunk by chunk and resumable.

Layout (N samples, S = crop size, k semantic AUs)::

    images          (N, S, S, 3) uint8 RGB aligned crops, chunked (chunk, S, S, 3), gzip 1 or none
    landmarks       (N, 68, 2) float32, rendered landmarks in crop pixels
    targets         (N, 68, 2) float32, the grid's target landmarks in source-image pixels
    crop_transform  (N, 2, 3) float32, similarity source-image px -> crop px
    aus             (N, n_aus) float32 FACS 0..5, attribute au_names = ['AU01', ...]
    semantic        (N, k) float32 semantic appearance levels 0..1 (sem_* of the grid), attribute names
    pose            (N, 3) float32 degrees, attribute names = ['yaw', 'pitch', 'roll']
    expression      (N,) str
    sample_id, seed (N,) int64
    rendered        (N,) str, one JSON record per sample: landmark-driven AUs, semantic AUs and how
                    each was rendered (procedural / learned template), mouth interior, painted lids
    frames          (N, H, W, 3) uint8 RGB full frames (only with full_frame=True)
    done            (n_chunks,) uint8, 1 once a chunk is written and flushed
    root attributes: source, source_sha1, grid, grid_sha1, seeds (first/last/count), size, chunk,
                    generator, generator_options, appearance(_sha1), fewshot_version, subject, complete

A killed run leaves ``done`` marking the finished chunks; rerunning the same command skips them. A
file made from other inputs is never silently overwritten. With gzip, each image chunk is deflated in a
worker thread while the next one renders, then stored with ``write_direct_chunk`` (:class:`_ImageChunks`).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from fewshot.errors import ConfigError, InputError

from .render import AU_COLUMN, SEM_COLUMN, GENERATORS, parse_rows, records_json

FORMAT_VERSION = 1


def sha1_file(path: str | Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha1_table(df: pd.DataFrame) -> str:
    return hashlib.sha1(pd.util.hash_pandas_object(df.reset_index(drop=True), index=True).values.tobytes()
                        + ",".join(map(str, df.columns)).encode()).hexdigest()


def read_grid(path: str | Path) -> pd.DataFrame:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such grid file; make one with 'fewshot grid'")
    try:
        return pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
    except Exception as e:
        raise InputError(f"{p}: unreadable grid ({type(e).__name__}); expected the parquet/CSV written by 'fewshot grid'") from None


def _open_h5(path: Path, mode: str):
    import h5py

    try:
        return h5py.File(path, mode)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: corrupt or truncated HDF5 file ({str(e).splitlines()[0][:80]}); delete it and run synthesize again") from None


@dataclass
class SynthesisReport:
    """What one synthesize call did: chunks rendered now, chunks found done, wall time."""

    path: Path
    n: int
    chunks_total: int
    chunks_rendered: int
    chunks_skipped: int
    seconds: float
    contact_sheet: Path | None


def synthesize(
    profile: Any,
    grid: pd.DataFrame,
    out: str | Path,
    size: int = 256,
    chunk: int = 64,
    generator: str = "warp",
    generator_options: dict | None = None,
    full_frame: bool = False,
    compression: str | None = "gzip",
    source_path: str | Path | None = None,
    grid_path: str | Path | None = None,
    progress: bool = True,
    contact_sheet: bool = True,
    stop_after: int | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> SynthesisReport:
    """Render ``grid`` for ``profile`` into the HDF5 file ``out`` (layout in the module doc).

    Resumes an existing file made from the same inputs (source, grid, size, chunk, generator),
    rendering only chunks whose ``done`` flag is 0. ``stop_after`` renders at most that many chunks
    and returns (used to test resuming). ``compression``: 'gzip' (level 1), 'lzf' or None.
    """
    from fewshot import __version__

    out = Path(out)
    if chunk < 1:
        raise ConfigError(f"--chunk must be at least 1, not {chunk}")
    if compression not in (None, "none", "gzip", "lzf"):
        raise ConfigError(f"--compression must be gzip, lzf or none, not {compression!r}")
    compression = None if compression == "none" else compression
    opts = dict(generator_options or {})
    gen = GENERATORS.create(generator, **opts)
    targets = parse_rows(grid)  # validates columns
    n = len(grid)
    if n == 0:
        raise ConfigError("the grid has no rows")
    n_chunks = (n + chunk - 1) // chunk
    au_names = [c for c in grid.columns if AU_COLUMN.match(c)]
    sem_names = [c for c in grid.columns if SEM_COLUMN.match(c)]
    appearance = opts.get("appearance")
    expected = {
        "format_version": FORMAT_VERSION,
        "source_sha1": sha1_file(source_path) if source_path else hashlib.sha1(np.ascontiguousarray(profile.image).tobytes()).hexdigest(),
        "grid_sha1": sha1_table(grid),
        "size": int(size),
        "chunk": int(chunk),
        "generator": generator,
        "generator_options": json.dumps({k: str(v) for k, v in sorted(opts.items())}),
        "appearance_sha1": sha1_file(appearance) if isinstance(appearance, (str, Path)) and appearance else "",
        "full_frame": bool(full_frame),
    }
    t0 = time.time()
    if out.exists():
        f = _open_h5(out, "r+")
        mismatch = [k for k, v in expected.items() if _attr(f.attrs.get(k)) != v]
        if mismatch or "done" not in f or f["images"].shape[0] != n:
            f.close()
            raise InputError(f"{out}: exists but was made from other inputs ({', '.join(mismatch) or 'layout'} differ); choose another --out or delete it")
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        f = _create(out, grid, targets, n, size, chunk, au_names, sem_names, compression, full_frame, profile)
        for k, v in expected.items():
            f.attrs[k] = v
        f.attrs.update({
            "source": str(source_path or getattr(profile, "source", "")),
            "subject": Path(str(source_path or getattr(profile, "source", "") or "synthetic")).stem,
            "grid": str(grid_path or ""),
            "seeds": json.dumps({"first": int(targets.seeds[0]), "last": int(targets.seeds[-1]), "count": int(len(np.unique(targets.seeds)))}),
            "fewshot_version": __version__,
            "appearance": str(appearance or "procedural"),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "complete": False,
        })
        f.flush()
    rendered = skipped = 0
    writer = _ImageChunks(f["images"])
    try:
        done = f["done"][:]
        todo = [c for c in range(n_chunks) if not done[c]]
        skipped = n_chunks - len(todo)
        bar = _bar(progress, n, n - len(todo) * chunk if todo else n, out.name)

        def finish(c, lo, hi, batch, images):
            nonlocal rendered
            images()  # the image chunk is stored before anything marks it done
            f["landmarks"][lo:hi] = batch.landmarks
            f["crop_transform"][lo:hi] = batch.crop_transforms
            f["rendered"][lo:hi] = records_json(batch.records)
            if full_frame:
                f["frames"][lo:hi] = batch.frames
            f.flush()
            f["done"][c] = 1
            f.flush()
            rendered += 1
            if bar is not None:
                bar.update(hi - lo)
            if on_chunk is not None:
                on_chunk(c)

        # chunk c is compressed (in a worker thread) while chunk c + 1 renders
        pending = None
        for c in todo:
            if stop_after is not None and rendered + (pending is not None) >= stop_after:
                break
            lo, hi = c * chunk, min(n, (c + 1) * chunk)
            batch = gen.render(profile, grid.iloc[lo:hi], size=size, full_frame=full_frame)
            if pending is not None:
                finish(*pending)
            pending = (c, lo, hi, batch, writer.write(lo, batch.images))
        if pending is not None:
            finish(*pending)
        if bar is not None:
            bar.close()
        complete = bool(f["done"][:].all())
        f.attrs["complete"] = complete
        f.flush()
    finally:
        writer.close()
        f.close()
    sheet = None
    if contact_sheet and complete:
        sheet = write_contact_sheet(out)
    return SynthesisReport(out, n, n_chunks, rendered, skipped, time.time() - t0, sheet)


class _ImageChunks:
    """Writes whole chunks of the ``images`` dataset. With gzip, a chunk is deflated in a worker thread
    (zlib releases the GIL, so it overlaps the next chunk's rendering on the other core) and stored with
    ``write_direct_chunk``: the bytes HDF5's own deflate filter would write, read back the usual way.
    Other filters (lzf, none) are written through h5py at once."""

    def __init__(self, dset) -> None:
        self.dset = dset
        direct = dset.compression == "gzip" and dset.chunks is not None and dset.chunks[1:] == dset.shape[1:]
        self.level = int(dset.compression_opts) if direct else None
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="deflate") if direct else None

    def write(self, lo: int, images: np.ndarray) -> Callable[[], None]:
        """Start storing ``images`` as rows lo.. (a whole chunk, or the last one); returns the call that
        finishes it (h5py calls stay on the caller's thread; call it before marking the chunk done)."""
        rows = self.dset.chunks[0] if self.dset.chunks else len(images)
        if self.pool is None or lo % rows or len(images) > rows:
            self.dset[lo:lo + len(images)] = images
            return lambda: None
        full = np.ascontiguousarray(images, np.uint8)
        if len(images) < rows:  # the last chunk: HDF5 stores whole chunks (fill value 0)
            full = np.zeros((rows, *images.shape[1:]), np.uint8)
            full[: len(images)] = images
        packed = self.pool.submit(zlib.compress, full, self.level)  # the array's buffer: no copy
        offset = (lo,) + (0,) * (self.dset.ndim - 1)
        return lambda: self.dset.id.write_direct_chunk(offset, packed.result())

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _attr(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


def _bar(show: bool, total: int, initial: int, desc: str):
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=max(0, min(initial, total)), desc=f"synthesize {desc}", unit="img", file=sys.stderr, dynamic_ncols=True)


def _create(out, grid, targets, n, size, chunk, au_names, sem_names, compression, full_frame, profile):
    import h5py

    f = h5py.File(out, "w")
    comp = {"compression": "gzip", "compression_opts": 1} if compression == "gzip" else {"compression": compression} if compression else {}
    f.create_dataset("images", (n, size, size, 3), np.uint8, chunks=(min(chunk, n), size, size, 3), **comp)
    f.create_dataset("landmarks", (n, 68, 2), np.float32)
    f.create_dataset("targets", data=targets.landmarks.astype(np.float32))
    f.create_dataset("crop_transform", (n, 2, 3), np.float32)
    d = f.create_dataset("aus", data=grid[au_names].to_numpy(np.float32).reshape(n, len(au_names)))
    d.attrs["au_names"] = au_names
    d = f.create_dataset("semantic", data=grid[sem_names].to_numpy(np.float32).reshape(n, len(sem_names)))
    d.attrs["names"] = [s[len("sem_"):] for s in sem_names]
    d = f.create_dataset("pose", data=targets.pose.astype(np.float32))
    d.attrs["names"] = ["yaw", "pitch", "roll"]
    d.attrs["units"] = "degrees"
    str_t = h5py.string_dtype()
    expr = grid["expression"].astype(str).to_numpy() if "expression" in grid.columns else np.array([""] * n)
    f.create_dataset("expression", data=expr.astype(object), dtype=str_t)
    f.create_dataset("sample_id", data=(grid["sample_id"].to_numpy(np.int64) if "sample_id" in grid.columns else np.arange(n)))
    f.create_dataset("seed", data=targets.seeds.astype(np.int64))
    f.create_dataset("rendered", (n,), dtype=str_t)
    if full_frame:
        h, w = np.asarray(profile.image).shape[:2]
        s = min(1.0, 1024 / max(h, w))
        f.create_dataset("frames", (n, int(round(h * s)), int(round(w * s)), 3), np.uint8, chunks=(1, int(round(h * s)), int(round(w * s)), 3), **comp)
    f.create_dataset("done", data=np.zeros((n + chunk - 1) // chunk, np.uint8))
    return f


@dataclass
class SyntheticSet:
    """A synthetic store read back: arrays plus one table row per sample.

    images: (N, S, S, 3) uint8 RGB (an h5py dataset when opened with ``load_images=False``).
    table: sample_id, seed, yaw, pitch, roll (deg), AU columns, sem_* columns, expression,
        x_0..x_67, y_0..y_67 (crop px), rendered (JSON record).
    """

    images: Any
    landmarks: np.ndarray
    table: pd.DataFrame
    attrs: dict
    path: Path
    _file: Any = None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


REQUIRED = ("images", "landmarks", "aus", "pose", "semantic", "rendered", "done")


def open_synthetic(path: str | Path, load_images: bool = True, allow_partial: bool = False) -> SyntheticSet:
    """Read a store written by :func:`synthesize`. Raises InputError on a corrupt, truncated,
    foreign or (unless ``allow_partial``) unfinished file."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file; write it with 'fewshot synthesize'")
    f = _open_h5(p, "r")
    try:
        missing = [k for k in REQUIRED if k not in f]
        if missing:
            raise InputError(f"{p}: not a fewshot synthetic store (no {', '.join(missing)}); write it with 'fewshot synthesize'")
        done = f["done"][:]
        if not done.all() and not allow_partial:
            raise InputError(f"{p}: unfinished ({int(done.sum())}/{len(done)} chunks); rerun the same 'fewshot synthesize' command to finish it")
        n = f["images"].shape[0]
        try:
            images = f["images"][:] if load_images else f["images"]
            lm = f["landmarks"][:]
            aus = f["aus"][:]
            au_names = [_attr(a) for a in f["aus"].attrs["au_names"]]
            sem = f["semantic"][:]
            sem_names = [_attr(a) for a in f["semantic"].attrs["names"]]
            pose = f["pose"][:]
            rendered = [_attr(r) for r in f["rendered"][:]]
            expr = [_attr(e) for e in f["expression"][:]] if "expression" in f else [""] * n
            cols = {
                "sample_id": f["sample_id"][:] if "sample_id" in f else np.arange(n),
                "seed": f["seed"][:] if "seed" in f else np.arange(n),
                "yaw": pose[:, 0], "pitch": pose[:, 1], "roll": pose[:, 2],
            }
        except (OSError, KeyError, ValueError) as e:
            raise InputError(f"{p}: corrupt or truncated HDF5 data ({str(e).splitlines()[0][:80]}); delete it and run synthesize again") from None
        cols.update({a: aus[:, j] for j, a in enumerate(au_names)})
        cols.update({f"sem_{a}": sem[:, j] for j, a in enumerate(sem_names)})
        cols["expression"] = expr
        cols.update({f"x_{i}": lm[:, i, 0] for i in range(68)})
        cols.update({f"y_{i}": lm[:, i, 1] for i in range(68)})
        cols["rendered"] = rendered
        table = pd.DataFrame(cols)
        attrs = {k: _attr(v) for k, v in f.attrs.items()}
    except BaseException:
        f.close()
        raise
    if load_images:
        f.close()
        return SyntheticSet(images, lm, table, attrs, p)
    return SyntheticSet(images, lm, table, attrs, p, f)


def contact_sheet_image(images: np.ndarray, cols: int = 8, tile: int = 128, labels: list[str] | None = None) -> np.ndarray:
    """A uint8 RGB grid of (N, S, S, 3) images resized to ``tile`` px, optional label per tile."""
    import cv2

    n = len(images)
    rows = max(1, (n + cols - 1) // cols)
    sheet = np.full((rows * tile, cols * tile, 3), 255, np.uint8)
    for i, im in enumerate(images):
        t = cv2.resize(np.ascontiguousarray(im), (tile, tile), interpolation=cv2.INTER_AREA)
        if labels:
            cv2.putText(t, labels[i], (3, tile - 5), cv2.FONT_HERSHEY_SIMPLEX, tile / 400, (255, 255, 0), 1, cv2.LINE_AA)
        r, c = divmod(i, cols)
        sheet[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = t
    return sheet


def write_contact_sheet(h5_path: str | Path, max_images: int = 48, out: str | Path | None = None) -> Path:
    """PNG of the first ``max_images`` samples next to the store (``person.h5`` -> ``person_contact.png``)."""
    from fewshot.io import write_image

    p = Path(h5_path)
    f = _open_h5(p, "r")
    with f:
        k = min(max_images, f["images"].shape[0])
        imgs = f["images"][:k]
        pose = f["pose"][:k]
        expr = [_attr(e) for e in f["expression"][:k]] if "expression" in f else [""] * k
    labels = [f"{e[:9]} y{y:+.0f}" for e, (y, _, _) in zip(expr, pose)]
    target = Path(out) if out else p.with_name(p.stem + "_contact.png")
    write_image(target, contact_sheet_image(imgs, labels=labels))
    return target


def synthesize_files(
    grid: str | Path,
    out: str | Path,
    photo: str | Path | None = None,
    clip: str | Path | None = None,
    appearance: str | Path | None = None,
    refiner: str | Path | None = None,
    backend: str = "dlib",
    **kwargs,
) -> SynthesisReport:
    """``fewshot synthesize``: profile the photo (or the clip's best reference frame), read the grid,
    render it into ``out`` (see :func:`synthesize` for the other arguments)."""
    from .profile import fit_profile

    if (photo is None) == (clip is None):
        raise ConfigError("pass exactly one of --photo or --clip")
    source = Path(photo or clip)
    table = read_grid(grid)
    profile = fit_profile(source, backend=backend)
    opts = {}
    if appearance:
        opts["appearance"] = str(appearance)
    if refiner:
        opts["refiner"] = str(refiner)
    src_file = source if source.is_file() else None
    return synthesize(profile, table, out, generator_options=opts, source_path=src_file, grid_path=grid, **kwargs)
