"""Stage 4: AU occurrence / intensity and expression models for aligned faces.

    from au_models.predict import predict
    df = predict("model.pt", "clip.mp4")            # one row per face per frame, AU01_r/_c/_p columns

Modules (import what you need; this package import stays light):

- :mod:`au_models.align`: 68 landmarks -> canonical crop (shared by training and inference),
- :mod:`au_models.cache`: align a data set once into ``aligned.h5``; :class:`AlignedSet`,
- :mod:`au_models.backbones` (registry ``BACKBONES``: compact, resnet18, geometry), :mod:`au_models.heads`,
  :mod:`au_models.model` (``AUModel``),
- :mod:`au_models.train`, :mod:`au_models.metrics`, :mod:`au_models.checkpoint`, :mod:`au_models.predict`.
"""

from __future__ import annotations

BASE_MODEL = "data/base.pt"


def base_model_path():
    """Path of the shipped base model (``au_models/data/base.pt``; it may be absent in a dev checkout)."""
    from pathlib import Path

    return Path(__file__).with_name("data") / "base.pt"
