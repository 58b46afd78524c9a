"""Stage 2 (and the generators of stage 3): AU motion model, person profile, grid design.

    from generators import fit_profile, design_grid, grid_balance
    profile = fit_profile("photo.jpg")                      # PersonProfile
    grid = design_grid(profile, n=500, strategy="balanced")  # pandas, one row per sample
    grid_balance(grid)                                       # per-AU / per-intensity / per-pose-bin counts
    Grid.from_table(grid).targets                            # typed view: (N, 68, 2) px, .intensities, .semantic...

Importing this package loads numpy, pandas and OpenCV only (no torch).
"""

from __future__ import annotations

from .aus import AU_CODES, AU_VOCABULARY, ActionUnit, au_code, intensity_level, letter_to_intensity, parse_au_spec
from .grid import (DEFAULT_AUS, DEFAULT_POSE_BINS, EXPRESSIONS, GRID_STRATEGIES, Grid, contact_sheet, design_grid, grid_balance,
                   source_fingerprint, write_grid)
from .motion import MotionModel, constrain_shapes, default_motion_model, fit_motion, load_motion_model
from .profile import PersonProfile, code_expression, fit_profile
from .semantic import SEMANTIC_AUS, semantic_masks
from .sheet import tile_sheet
# stage 3: synthesis (the refiner module registers 'warp+refiner'; torch loads only when it is used)
from .appearance import AppearanceModel, fit_appearance, load_appearance
from .render import GENERATORS, GeneratedBatch, generate
from . import refiner as _refiner  # noqa: E402,F401
from . import shading as _shading  # noqa: E402,F401  (registers 'warp+shading')
from . import mesh as _mesh  # noqa: E402,F401  (registers 'mesh')
from .store import SyntheticSet, open_synthetic, synthesize

__all__ = [
    "AU_CODES", "AU_VOCABULARY", "ActionUnit", "au_code", "intensity_level", "letter_to_intensity", "parse_au_spec",
    "DEFAULT_AUS", "DEFAULT_POSE_BINS", "EXPRESSIONS", "GRID_STRATEGIES", "Grid", "contact_sheet", "design_grid", "grid_balance",
    "source_fingerprint", "write_grid", "tile_sheet",
    "MotionModel", "constrain_shapes", "default_motion_model", "fit_motion", "load_motion_model",
    "PersonProfile", "code_expression", "fit_profile", "SEMANTIC_AUS", "semantic_masks",
    "AppearanceModel", "fit_appearance", "load_appearance", "GENERATORS", "GeneratedBatch", "generate",
    "SyntheticSet", "open_synthetic", "synthesize",
]
