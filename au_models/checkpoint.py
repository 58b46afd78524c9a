"""The one model file format: weights + everything needed to rebuild and use the model.

    save_checkpoint("model.pt", model, meta={"provenance": {...}}, replay=replay_buffer)
    model, meta = load_checkpoint("model.pt")

The file is a ``torch.save`` dict read back with ``weights_only=True`` (no pickled code runs on load):

- ``format`` = 'fewshot-au-model', ``format_version`` = 1, ``state_dict``,
- ``meta``: ``model`` (:meth:`AUModel.config`: backbone, backbone_config, aus, intensity_aus,
  expressions, align), ``preprocessing`` (crop_size, face_width, center_y, template (68x2 crop pixels),
  template_hash, points), ``provenance`` (caller's: dataset, fold, seed, metrics...; always versions and
  date), and anything else the caller adds,
- ``replay`` (optional): a small buffer of base-training samples for continual learning: ``images``
  (M, S, S, 3) uint8 RGB aligned crops, ``landmarks`` (M, 68, 2) float32, ``occ`` (M, A) int8 -1/0/1,
  ``intensity`` (M, I) float32 NaN unknown, ``expr`` (M,) int64 -1 unknown.
"""

from __future__ import annotations

import datetime as _dt
import io
import platform
from pathlib import Path

import numpy as np
import torch

import fewshot
from fewshot.errors import CheckpointError
from fewshot.io import atomic_path
from fewshot.landmarks import STABLE

from .align import AlignConfig, canonical_template, template_hash
from .model import AUModel

FORMAT = "fewshot-au-model"
FORMAT_VERSION = 1
REPLAY_KEYS = ("images", "landmarks", "occ", "intensity", "expr")
MODEL_FILE = "model.pt"  # the model inside a `fewshot adapt` output folder


def versions() -> dict[str, str]:
    return {"fewshot": fewshot.__version__, "torch": str(torch.__version__), "numpy": np.__version__, "python": platform.python_version()}


def preprocessing_meta(align: AlignConfig) -> dict:
    tpl = canonical_template(align)
    return {**align.to_dict(), "template": tpl.round(4).tolist(), "template_hash": template_hash(tpl), "points": STABLE.tolist()}


def save_checkpoint(path: str | Path, model: AUModel, meta: dict | None = None, replay: dict | None = None,
                    validation: dict | None = None) -> Path:
    """Write ``model`` (+ caller ``meta``, + optional ``replay`` buffer of training samples and
    ``validation`` buffer of held-out samples, numpy arrays with :data:`REPLAY_KEYS`) atomically.
    Stage 5 rehearses the replay buffer and measures rigidity on the validation buffer."""
    meta = dict(meta or {})
    meta["model"] = model.config()
    meta["preprocessing"] = preprocessing_meta(model.align)
    prov = dict(meta.get("provenance") or {})
    prov.setdefault("versions", versions())
    prov.setdefault("date", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    meta["provenance"] = prov
    blob = {"format": FORMAT, "format_version": FORMAT_VERSION, "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "meta": _plain(meta)}
    if replay is not None:
        missing = [k for k in REPLAY_KEYS if k not in replay]
        if missing:
            raise ValueError(f"replay buffer lacks {missing}")
        blob["replay"] = {k: torch.from_numpy(np.ascontiguousarray(replay[k])) for k in REPLAY_KEYS}
    if validation is not None:
        missing = [k for k in REPLAY_KEYS if k not in validation]
        if missing:
            raise ValueError(f"validation buffer lacks {missing}")
        blob["validation"] = {k: torch.from_numpy(np.ascontiguousarray(validation[k])) for k in REPLAY_KEYS}
    # torch.save names the zip's root folder after the file it writes to (here a random temp name);
    # into a buffer it uses a fixed root, so the same model and meta always give the same bytes
    buf = io.BytesIO()
    torch.save(blob, buf)
    p = Path(path)
    with atomic_path(p) as tmp:
        tmp.write_bytes(buf.getbuffer())
    return p


def _plain(x):
    """JSON-like copy (numpy scalars/arrays -> Python) so ``weights_only`` loading accepts it."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, (Path, str)):  # str subclasses (torch.__version__) would need unpickling code
        return str(x)
    return x


def _read(path: str | Path) -> dict:
    p = Path(path)
    if p.is_dir():  # a `fewshot adapt` output folder
        if not (p / MODEL_FILE).is_file():
            raise CheckpointError(f"{p}: is a folder without {MODEL_FILE}; pass a model file or a `fewshot adapt` output folder")
        p = p / MODEL_FILE
    if not p.is_file():
        raise CheckpointError(f"{p}: no such model file; train one with `fewshot train-base` or pass the shipped base model")
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated, not a zip, pickled code...: all mean unusable
        raise CheckpointError(f"{p}: corrupt or not a fewshot model file ({type(e).__name__}); re-train or re-copy it") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not a fewshot AU model file (no '{FORMAT}' header); pass a file written by fewshot train-base")
    if blob.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{p}: model format version {blob.get('format_version')} but this fewshot reads {FORMAT_VERSION}; upgrade fewshot or re-train")
    return blob


def load_checkpoint(path: str | Path) -> tuple[AUModel, dict]:
    """(model in eval mode, meta). Raises CheckpointError (one line) for a missing, corrupt or
    incompatible file. ``meta['replay']`` / ``meta['validation']`` hold the buffers as numpy arrays when the
    file has them."""
    blob = _read(path)
    meta = blob["meta"]
    try:
        model = AUModel.from_config(meta["model"])
        model.load_state_dict(blob["state_dict"])
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path}: model does not match its recorded architecture ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    pre = meta.get("preprocessing", {})
    if pre.get("template_hash") and pre["template_hash"] != template_hash(canonical_template(model.align)):
        raise CheckpointError(f"{path}: alignment template {pre['template_hash']} differs from this fewshot's; re-train the model")
    for buf in ("replay", "validation"):
        if buf in blob:
            meta = dict(meta, **{buf: {k: v.numpy() for k, v in blob[buf].items()}})
    return model.eval(), meta


def load_replay(path: str | Path) -> dict[str, np.ndarray] | None:
    """Just the replay buffer of a checkpoint (None if it has none)."""
    blob = _read(path)
    return {k: v.numpy() for k, v in blob["replay"].items()} if "replay" in blob else None
