"""Small files shipped with fewshot (see ATTRIBUTION.md)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def data_path(name: str) -> Path:
    """Filesystem path of a shipped data file (the package is installed unzipped)."""
    return Path(str(resources.files(__name__).joinpath(name)))


def example_photo(kind: str = "neutral") -> Path:
    """The shipped example photo (London Set identity 001, CC BY 4.0): 'neutral' or 'smiling'."""
    return data_path(f"examples/london_001_{kind}.jpg")
