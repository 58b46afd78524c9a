"""AU data set loaders: DISFA, BP4D, a generic labelled folder, the FRL London set, synthetic stores,
a video clip with coarse frame-range labels.

Every loader returns an :class:`AUFrames` (one table, one row per coded frame, documented columns in
:mod:`experiments.datasets.base`); ``load_dataset(name, root, **options)`` picks one by name.
"""

from __future__ import annotations

from .base import (
    DATASETS,
    LANDMARK_COLUMNS,
    META_COLUMNS,
    AUFrames,
    au_name,
    load_dataset,
    load_splits,
)
from . import bp4d as _bp4d  # noqa: F401,E402  (registers 'bp4d')
from . import clip as _clip  # noqa: F401,E402  (registers 'clip')
from . import disfa as _disfa  # noqa: F401,E402  (registers 'disfa')
from . import folder as _folder  # noqa: F401,E402  (registers 'folder', 'london')
from . import synthetic as _synthetic  # noqa: F401,E402  (registers 'synthetic')
from .interop import export_me_graphau_lists, read_me_graphau_lists  # noqa: E402

__all__ = [
    "AUFrames",
    "DATASETS",
    "load_dataset",
    "load_splits",
    "au_name",
    "export_me_graphau_lists",
    "read_me_graphau_lists",
    "LANDMARK_COLUMNS",
    "META_COLUMNS",
]
