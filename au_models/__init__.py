"""Stage 4: AU occurrence / intensity and expression models for aligned faces.

    from au_models import base_model_path
    from au_models.predict import predict
    df = predict(base_model_path(), "clip.mp4")      # one row per face per frame, AU01_r/_c/_p columns

Modules (import what you need; this package import stays light):

- :mod:`au_models.align`: 68 landmarks -> canonical crop (shared by training and inference),
- :mod:`au_models.cache`: align a data set once into ``aligned.h5``; :class:`AlignedSet`,
- :mod:`au_models.backbones` (registry ``BACKBONES``: compact, resnet18, geometry), :mod:`au_models.heads`,
  :mod:`au_models.model` (``AUModel``),
- :mod:`au_models.train`, :mod:`au_models.metrics`, :mod:`au_models.checkpoint`, :mod:`au_models.predict`.
"""

from __future__ import annotations

from pathlib import Path

# the stage's objects; they need torch, so they load on first use and `import au_models` stays light
# (the calls `predict` and `train` share their modules' names: `from au_models.predict import predict`)
_LAZY = {"Predictor": "predict", "AUModel": "model", "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
         "TrainConfig": "train"}


def base_model_path() -> Path:
    """Path of the shipped base model (``au_models/data/base.pt``; it may be absent in a dev checkout).
    The one place that knows where it lives."""
    return Path(__file__).with_name("data") / "base.pt"


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["base_model_path", *_LAZY]
