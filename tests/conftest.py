from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FEWSHOT_SHARED", ROOT.parent / "shared")) / "data"
CLIP = SHARED / "pexels_clip" / "WolfgangLanger_Pexels.mp4"
LONDON = SHARED / "frl_london"


def _need_shared() -> None:
    if not SHARED.is_dir():
        pytest.skip(f"needs the real face data in {SHARED} (absent in a user's fresh clone)")


@pytest.fixture(scope="session")
def shared() -> Path:
    _need_shared()
    return SHARED


@pytest.fixture(scope="session")
def london() -> Path:
    _need_shared()
    return LONDON


@pytest.fixture(scope="session")
def clip() -> Path:
    _need_shared()
    return CLIP


@pytest.fixture(scope="session")
def analyzer():
    from fewshot.analysis import Analyzer

    return Analyzer(embed=False)


@pytest.fixture(scope="session")
def example_image() -> np.ndarray:
    from fewshot.data import example_photo
    from fewshot.io import read_image

    return read_image(example_photo())


def read_tem(path: Path) -> np.ndarray:
    """Points of a WebMorph .tem template: first line = count, then 'x<TAB>y' lines."""
    lines = path.read_text().split("\n")
    n = int(lines[0])
    return np.array([[float(v) for v in line.split()] for line in lines[1 : 1 + n]])
