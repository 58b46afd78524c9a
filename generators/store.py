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
    root attributes: source, source_sha1, grid, grid_sha1, grid_source (the photo the grid was designed
                    on), seeds (first/last/count), size, chunk, generator, generator_options,
                    appearance(_sha1), fewshot_version, subject, complete

A grid's targets are its design photo's landmarks: rendering it from another photo is refused
(:func:`check_source`) unless asked for (``allow_other_source``, ``--allow-other-source``).

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

from fewshot import __version__ as fewshot_version
from fewshot.errors import ConfigError, InputError, Interrupted
from fewshot.io import check_output_file, write_image

from .aus import PRESENT_FROM
from .grid import TARGET_OFFSET_LIMIT, Grid, as_grid, file_sha1, read_grid_attrs, source_fingerprint, target_offset
from .profile import fit_profile
from .render import GENERATORS, records_json
from .sheet import au_caption, sheet_indices, tile_sheet

FORMAT_VERSION = 1
SIZE_RANGE = (32, 1024)  # crop side in px: the renderer's smallest; 1024 x --chunk 1024 stays under HDF5's 4 GiB chunk limit
CHUNK_RANGE = (1, 1024)  # samples per HDF5 chunk
COMPRESSIONS = (None, "none", "gzip", "lzf")


def sha1_table(df: pd.DataFrame) -> str:
    return hashlib.sha1(pd.util.hash_pandas_object(df.reset_index(drop=True), index=True).values.tobytes()
                        + ",".join(map(str, df.columns)).encode()).hexdigest()


def read_grid(path: str | Path) -> pd.DataFrame:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such grid file; make one with 'fewshot design'")
    try:
        table = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
    except Exception as e:
        raise InputError(f"{p}: unreadable grid ({type(e).__name__}); expected the parquet/CSV written by 'fewshot design'") from None
    table.attrs.update(read_grid_attrs(p))  # a CSV grid's sidecar (parquet keeps attrs itself)
    return table


def _open_h5(path: Path, mode: str):
    import h5py

    try:
        return h5py.File(path, mode)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: corrupt or truncated HDF5 file ({str(e).splitlines()[0][:80]}); delete it and run synthesize again") from None


def check_options(out: str | Path, size: int, chunk: int, compression: str | None) -> None:
    """InputError / ConfigError (one line naming ``out``) for options a store cannot be made with;
    called before any work, so a bad option never leaves a stub file behind."""
    check_output_file(out, "--out", "person.h5")
    for option, value, (lo, hi), unit in (("--size", size, SIZE_RANGE, " px (the aligned crop side)"), ("--chunk", chunk, CHUNK_RANGE, " samples")):
        if not lo <= value <= hi:
            raise ConfigError(f"{out}: {option} {value} is out of range; allowed {lo}..{hi}{unit}")
    if compression not in COMPRESSIONS:
        raise ConfigError(f"{out}: --compression must be gzip, lzf or none, not {compression!r}")


def check_source(grid: Grid, profile: Any, source_path: str | Path | None = None, source_sha1: str = "",
                 grid_path: str | Path | None = None) -> None:
    """ConfigError (one line naming both photos) when ``grid`` was designed on another photo than the
    one ``profile`` renders from (its targets are that face's landmarks, in that photo's pixels).

    The grid's record decides: same file (``source_sha1`` of ``source_path`` against the grid's
    ``source_sha1``) or same pixels (:func:`generators.grid.source_fingerprint`). A grid that records
    neither (a CSV without its sidecar, an older grid) is judged by where its targets lie
    (:func:`generators.grid.target_offset` above ``TARGET_OFFSET_LIMIT``)."""
    photo = str(source_path or getattr(profile, "source", "") or "the given photo")
    name = str(grid_path or "the grid")
    remedy = f"design a grid on {photo} ('fewshot design --photo {photo}') or pass --allow-other-source"
    want_sha1, want_pixels = str(grid.attrs.get("source_sha1") or ""), grid.source_fingerprint
    if want_sha1 or want_pixels:
        same_file = bool(want_sha1) and want_sha1 == source_sha1
        if not same_file and not (want_pixels and want_pixels == source_fingerprint(profile.image)):
            raise ConfigError(f"{name}: designed on {grid.source or 'another photo'}, not on {photo}: its targets are the "
                              f"other face's landmarks, so the identity would drift; {remedy}")
        return
    if hasattr(profile, "landmarks_batch") and len(grid):
        off = target_offset(grid, profile)
        if off > TARGET_OFFSET_LIMIT:
            was = f" (recorded source {grid.source})" if grid.source else ""
            raise ConfigError(f"{name}: its targets do not fit the face in {photo} (off by {off:.2f} inter-ocular distances), "
                              f"so it was designed on another photo{was}; {remedy}")


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
    grid: Grid | pd.DataFrame,
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
    allow_other_source: bool = False,
) -> SynthesisReport:
    """Render ``grid`` for ``profile`` into the HDF5 file ``out`` (layout in the module doc).

    Refuses (ConfigError) a grid designed on another photo than ``profile``'s (:func:`check_source`)
    unless ``allow_other_source``.

    Resumes an existing file made from the same inputs (source, grid, size, chunk, generator),
    rendering only chunks whose ``done`` flag is 0. ``stop_after`` renders at most that many chunks
    and returns (used to test resuming). ``compression``: 'gzip' (level 1), 'lzf' or None.
    """
    out = Path(out)
    check_options(out, size, chunk, compression)
    compression = None if compression == "none" else compression
    opts = dict(generator_options or {})
    gen = GENERATORS.create(generator, **opts)
    rows = as_grid(grid, grid_path)  # validated once; each chunk renders a slice of it
    table = grid if isinstance(grid, pd.DataFrame) else rows.to_table()
    n = len(rows)
    if n == 0:
        raise ConfigError("the grid has no rows")
    source_sha1 = file_sha1(source_path) if source_path else ""
    if not allow_other_source:
        check_source(rows, profile, source_path, source_sha1, grid_path)
    n_chunks = (n + chunk - 1) // chunk
    appearance = opts.get("appearance")
    expected = {
        "format_version": FORMAT_VERSION,
        "source_sha1": source_sha1 or hashlib.sha1(np.ascontiguousarray(profile.image).tobytes()).hexdigest(),
        "grid_sha1": sha1_table(table),
        "size": int(size),
        "chunk": int(chunk),
        "generator": generator,
        "generator_options": json.dumps({k: str(v) for k, v in sorted(opts.items())}),
        "appearance_sha1": file_sha1(appearance) if isinstance(appearance, (str, Path)) and appearance else "",
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
        try:
            f = _create(out, rows, size, chunk, compression, full_frame, profile)
        except BaseException:  # a half-made file would block the next run as "made from other inputs"
            out.unlink(missing_ok=True)
            raise
        for k, v in expected.items():
            f.attrs[k] = v
        f.attrs.update({
            "source": str(source_path or getattr(profile, "source", "")),
            "subject": Path(str(source_path or getattr(profile, "source", "") or "synthetic")).stem,
            "grid": str(grid_path or ""),
            "grid_source": rows.source,
            "seeds": json.dumps({"first": int(rows.seeds[0]), "last": int(rows.seeds[-1]), "count": int(len(np.unique(rows.seeds)))}),
            "fewshot_version": fewshot_version,
            "appearance": str(appearance or "procedural"),
            "occurrence": f"aus are FACS intensities 0..5; occurrence is present from {PRESENT_FROM:g} (B), absent at 0, "
                          "unknown for a trace A (generators.aus.occurrence_from_intensity)",
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
            batch = gen.render(profile, rows[lo:hi], size=size, full_frame=full_frame)
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
    except KeyboardInterrupt:
        kept = skipped + rendered
        raise Interrupted(f"{out}: the store keeps {kept} of {n_chunks} finished chunk(s); run the same command again to resume") from None
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


def _create(out, rows: Grid, size, chunk, compression, full_frame, profile):
    import h5py

    n = len(rows)
    f = h5py.File(out, "w")
    comp = {"compression": "gzip", "compression_opts": 1} if compression == "gzip" else {"compression": compression} if compression else {}
    f.create_dataset("images", (n, size, size, 3), np.uint8, chunks=(min(chunk, n), size, size, 3), **comp)
    f.create_dataset("landmarks", (n, 68, 2), np.float32)
    f.create_dataset("targets", data=rows.targets.astype(np.float32))
    f.create_dataset("crop_transform", (n, 2, 3), np.float32)
    d = f.create_dataset("aus", data=rows.intensities.astype(np.float32).reshape(n, len(rows.aus)))
    d.attrs["au_names"] = list(rows.aus)
    d = f.create_dataset("semantic", data=rows.semantic.astype(np.float32).reshape(n, len(rows.semantic_aus)))
    d.attrs["names"] = list(rows.semantic_aus)
    d = f.create_dataset("pose", data=rows.pose.astype(np.float32))
    d.attrs["names"] = ["yaw", "pitch", "roll"]
    d.attrs["units"] = "degrees"
    str_t = h5py.string_dtype()
    expr = rows.expressions if rows.expressions is not None else np.array([""] * n)
    f.create_dataset("expression", data=expr.astype(object), dtype=str_t)
    f.create_dataset("sample_id", data=rows.sample_ids.astype(np.int64))
    f.create_dataset("seed", data=rows.seeds.astype(np.int64))
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
    """Every one of (N, S, S, 3) uint8 RGB ``images`` on one uint8 RGB sheet, ``tile`` px each, ``labels``
    as captions: :func:`generators.sheet.tile_sheet` (kept for callers of this older name)."""
    return tile_sheet(images, labels, cols=cols, tile=tile)


def write_contact_sheet(h5_path: str | Path, max_images: int = 48, out: str | Path | None = None) -> Path:
    """PNG of ``max_images`` evenly spaced samples of the store (:func:`generators.sheet.tile_sheet`,
    captioned with sample id, pose and the AUs on), next to it: ``person.h5`` -> ``person_contact.png``."""
    p = Path(h5_path)
    f = _open_h5(p, "r")
    with f:
        idx = sheet_indices(f["images"].shape[0], max_images)
        imgs = f["images"][idx]
        pose = f["pose"][idx]
        aus = f["aus"][idx]
        names = [_attr(a) for a in f["aus"].attrs["au_names"]]
        ids = f["sample_id"][idx] if "sample_id" in f else idx
    captions = [f"#{i} y{y:+.0f} p{pt:+.0f}\n{au_caption(dict(zip(names, row)))}" for i, (y, pt, _), row in zip(ids, pose, aus)]
    target = Path(out) if out else p.with_name(p.stem + "_contact.png")
    write_image(target, tile_sheet(imgs, captions, cols=8, tile=128))
    return target


def synthesize_files(
    grid: str | Path,
    out: str | Path,
    photo: str | Path | None = None,
    clip: str | Path | None = None,
    appearance: str | Path | None = None,
    refiner: str | Path | None = None,
    texture: str | Path | None = None,
    backend: str = "dlib",
    size: int = 256,
    chunk: int = 64,
    compression: str | None = "gzip",
    **kwargs,
) -> SynthesisReport:
    """``fewshot synthesize``: profile the photo (or the clip's best reference frame), read the grid,
    render it into ``out`` (see :func:`synthesize` for the other arguments)."""
    check_options(out, size, chunk, compression)
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
    if texture:
        opts["texture"] = str(texture)
    src_file = source if source.is_file() else None
    return synthesize(profile, table, out, size=size, chunk=chunk, compression=compression, generator_options=opts, source_path=src_file,
                      grid_path=grid, **kwargs)  # fmt: skip
