"""Stage 3: the optional neural refiner ('warp+refiner')."""

from __future__ import annotations

import numpy as np
import pytest

from fewshot.errors import CheckpointError


def test_refiner_trains_and_renders(tmp_path, example_image):
    torch = pytest.importorskip("torch")
    from generators import design_grid, fit_profile, generate
    from generators.refiner import COND_AUS, train_refiner

    profile = fit_profile(example_image)
    grid = design_grid(profile, n=6, strategy="balanced", seed=1)
    warped = generate(profile, grid, size=48)
    # a learnable target: the warped crops a little darker inside the face
    targets = (warped.images * 0.8).astype(np.uint8)
    aus = np.zeros((6, len(COND_AUS)), np.float32)
    out = tmp_path / "refiner.pt"
    rep = train_refiner(warped.images, warped.landmarks, aus, targets, out, epochs=10, batch=6, lr=3e-3, threads=1)
    assert out.exists() and rep["l1_refined"] < 0.7 * rep["l1_warp"], rep
    refined = generate(profile, grid, size=48, generator="warp+refiner", refiner=str(out))
    assert refined.images.shape == warped.images.shape and refined.records[0]["refiner"] == "refiner.pt"
    assert refined.records[0]["generator"] == "warp+refiner"
    assert np.abs(refined.images.astype(float) - targets).mean() < np.abs(warped.images.astype(float) - targets).mean()
    n_params = sum(p.numel() for p in torch.load(out, weights_only=True)["state_dict"].values())
    assert n_params < 200_000


def test_refiner_needs_weights(tmp_path, example_image):
    from generators import fit_profile, generate

    profile = fit_profile(example_image)
    import pandas as pd

    rows = pd.DataFrame()
    with pytest.raises(CheckpointError, match="--refiner"):
        generate(profile, rows, generator="warp+refiner")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"nope")
    with pytest.raises(CheckpointError, match="not a fewshot refiner"):
        generate(profile, rows, generator="warp+refiner", refiner=str(bad))
