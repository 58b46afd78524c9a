"""A synthetic data set written by stage 3 as one HDF5 file.

Expected contents (stage 3's store is not fixed yet; this is the minimal agreed shape)::

    images      (N, H, W, 3) uint8 RGB
    aus         (N, n_aus) float FACS intensities 0..5, attribute au_names = ['AU01', ...]
    landmarks   (N, 68, 2) float pixels                   (optional)
    pose        (N, 3) float degrees yaw, pitch, roll (stage 3's store; attribute names)  (optional -> pose_Rx/Ry/Rz radians)
    expression  (N,) str                                  (optional)
    subject     (N,) str                                  (optional; else the root attribute 'subject')
    root attributes (seed, generator, source photo...)    -> AUFrames.info

Occurrence columns are ``intensity >= threshold``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fewshot.errors import ConfigError, DatasetFormatError

from generators.aus import PRESENT_FROM, occurrence_from_intensity

from .base import DATASETS, AUFrames, au_name, build_table


class _H5Images:
    """row -> images[row.frame], opening the file once per process (picklable for DataLoader workers)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = None

    def __getstate__(self) -> dict:
        return {"path": self.path, "_file": None}

    def __call__(self, row) -> np.ndarray:
        if self._file is None:
            import h5py

            self._file = h5py.File(self.path, "r")
        return np.asarray(self._file["images"][int(row["frame"])], np.uint8)


def _strings(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values).reshape(-1)]


@DATASETS.register("synthetic", "An HDF5 synthetic set from stage 3 (images, AU intensities, landmarks, pose)")
def load_synthetic(root, threshold: float = PRESENT_FROM) -> AUFrames:
    """Load a stage-3 HDF5 store (``root`` = the .h5 file). ``frame`` is the row index into ``images``.
    Occurrence labels follow the FACS / DISFA convention (:func:`generators.aus.occurrence_from_intensity`):
    present from ``threshold`` (B = 2), absent at 0, unknown (-1) for a trace A in between."""
    import h5py

    p = Path(root).expanduser()
    if not p.is_file():
        raise ConfigError(f"{p}: no such HDF5 file; pass the synthetic store written by stage 3")
    try:
        f = h5py.File(p, "r")
    except OSError as e:
        raise DatasetFormatError(f"{p}: not an HDF5 file ({e})") from None
    with f:
        for key in ("images", "aus"):
            if key not in f:
                raise DatasetFormatError(f"{p}: no '{key}' dataset (has: {', '.join(f.keys())})")
        images, aus = f["images"], np.asarray(f["aus"], np.float32)
        n = images.shape[0]
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise DatasetFormatError(f"{p}: 'images' is {images.dtype} {images.shape}, expected uint8 (N, H, W, 3)")
        if aus.ndim != 2 or aus.shape[0] != n:
            raise DatasetFormatError(f"{p}: 'aus' has shape {aus.shape}, expected ({n}, n_aus)")
        if "au_names" not in f["aus"].attrs:
            raise DatasetFormatError(f"{p}: 'aus' has no attribute au_names")
        names = [au_name(a) for a in _strings(f["aus"].attrs["au_names"])]
        if len(names) != aus.shape[1]:
            raise DatasetFormatError(f"{p}: {len(names)} au_names for {aus.shape[1]} 'aus' columns")
        lm = np.asarray(f["landmarks"], np.float32) if "landmarks" in f else None
        if lm is not None and lm.shape != (n, 68, 2):
            raise DatasetFormatError(f"{p}: 'landmarks' has shape {lm.shape}, expected ({n}, 68, 2)")
        attrs = {k: (v.decode() if isinstance(v, bytes) else v.tolist() if isinstance(v, np.ndarray) else v) for k, v in f.attrs.items()}
        subject = _strings(f["subject"]) if "subject" in f else [str(attrs.get("subject", "synthetic"))] * n
        extra = pd.DataFrame(index=range(n))
        if "expression" in f:
            extra["expression"] = _strings(f["expression"])
        if "pose" in f:
            pose = np.asarray(f["pose"], np.float32).reshape(n, 3)
            pose_names = [str(v) for v in f["pose"].attrs.get("names", ["pitch", "yaw", "roll"])]
            col = {nm: pose[:, j] for j, nm in enumerate(pose_names)}
            if "yaw" in col:  # stage 3's store: degrees, yaw/pitch/roll -> OpenFace radians Rx=pitch, Ry=yaw, Rz=roll
                extra["pose_Rx"], extra["pose_Ry"], extra["pose_Rz"] = (np.radians(col[k]).astype(np.float32) for k in ("pitch", "yaw", "roll"))
            else:
                extra["pose_Rx"], extra["pose_Ry"], extra["pose_Rz"] = pose[:, 0], pose[:, 1], pose[:, 2]
    meta = pd.DataFrame({"subject": subject, "frame": np.arange(n)})
    occ = {a: np.nan_to_num(occurrence_from_intensity(aus[:, j], threshold), nan=-1).astype(np.int8) for j, a in enumerate(names)}
    inten = {a: aus[:, j] for j, a in enumerate(names)}
    table = build_table(meta, occ, inten, lm, extra)
    info = {"threshold": threshold, "occurrence": f"present from intensity {threshold:g}, trace below it unknown", **attrs}
    return AUFrames("synthetic", table, names, names, p.parent, info, image_reader=_H5Images(p))
