"""The 'warp+shading' generator: the warp's crops relit by the ICT face model's expression shading."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

SIZE = 128


@pytest.fixture(scope="module")
def profile(example_image):
    from generators import fit_profile

    return fit_profile(example_image)


@pytest.fixture(scope="module")
def shading_gen():
    from generators.shading import ShadingGenerator

    return ShadingGenerator()


@pytest.fixture(scope="module")
def plain_gen():
    from generators.render import WarpGenerator
    from generators.shading import GeometryOnly

    return WarpGenerator(GeometryOnly())


def rows(profile, aus: list[str], levels: tuple[float, ...], pose=(0.0, 0.0, 0.0)) -> pd.DataFrame:
    """The factorial over ``aus`` x ``levels`` at one pose (every row of design_grid's factorial)."""
    from generators import design_grid

    return design_grid(profile, n=None, strategy="factorial", aus=aus, levels=levels, pose_bins=[pose],
                       pose_jitter=0.0, roll_jitter=0.0)


def pick(grid: pd.DataFrame, **values: float) -> pd.DataFrame:
    """The rows of ``grid`` whose AU columns equal ``values`` (the others at 0)."""
    aus = [c for c in grid.columns if c.startswith("AU")]
    keep = np.ones(len(grid), bool)
    for a in aus:
        keep &= np.isclose(grid[a].to_numpy(), values.get(a, 0.0))
    assert keep.sum() == 1, values
    return grid[keep]


def luminance(images: np.ndarray) -> np.ndarray:
    return images.astype(float) @ np.array([0.299, 0.587, 0.114])


def region_change(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute luminance difference (grey levels) of two crops inside a boolean mask."""
    return float(np.abs(luminance(a) - luminance(b))[mask].mean())


def masks(landmarks: np.ndarray, size: int) -> dict[str, np.ndarray]:
    """Cheek and chin regions (generators.semantic) and 'outside': beyond the face outline."""
    import cv2

    from generators.semantic import semantic_masks
    from generators.shading import face_outline

    m = semantic_masks(landmarks, size, size)
    face = np.zeros((size, size), np.uint8)
    cv2.fillPoly(face, [np.round(face_outline(landmarks)).astype(np.int32)], 1)
    face = cv2.dilate(face, np.ones((9, 9), np.uint8))
    return {"cheeks": m["AU06"] > 0.5, "chin": m["AU17"] > 0.5, "outside": face == 0}


def test_registered_and_renders_uint8_crops(profile, shading_gen):
    from generators import GENERATORS, design_grid, generate

    assert "warp+shading" in GENERATORS.names()
    grid = design_grid(profile, n=4, aus=["AU06", "AU12", "AU17", "AU26"], seed=3)
    b = generate(profile, grid, size=SIZE, generator=shading_gen)
    assert b.images.shape == (4, SIZE, SIZE, 3) and b.images.dtype == np.uint8
    assert b.generator == "warp+shading" and all(r["generator"] == "warp+shading" for r in b.records)
    lo, hi = np.array([r["shading"]["range"] for r in b.records]).T
    assert (lo >= 0.6 - 1e-6).all() and (hi <= 1.4 + 1e-6).all()
    # the semantic skin is the geometry's only: no painted gain, recorded as such
    assert all(v["how"] == "ict-shading" for r in b.records for v in r["semantic_aus"].values())


def test_no_au_renders_the_warp_without_skin(profile, shading_gen, plain_gen):
    for pose in ((0.0, 0.0, 0.0), (15.0, -10.0, 0.0)):
        g = rows(profile, ["AU06"], (0.0,), pose)
        a = shading_gen.render(profile, g, SIZE).images
        b = plain_gen.render(profile, g, SIZE)
        assert np.abs(a.astype(int) - b.images.astype(int)).mean() < 1.0
        assert shading_gen.ratios(profile, g, b) == [None]


def test_ratio_is_one_where_no_shape_moves(profile, shading_gen, plain_gen):
    g = rows(profile, ["AU06"], (0.0, 1.0))
    b = plain_gen.render(profile, g, SIZE)
    fs = shading_gen.shading(profile)
    # an AU at 0 moves no shape; AU06 at A moves a little: a ratio that stays close to 1
    assert fs.ratio({"AU06": 0.0}, g[["yaw", "pitch", "roll"]].to_numpy()[0], b.crop_transforms[0].astype(float),
                    b.landmarks[0].astype(float), (SIZE, SIZE)) is None
    r = shading_gen.ratios(profile, pick(g, AU06=1.0), plain_gen.render(profile, pick(g, AU06=1.0), SIZE))[0]
    assert r is not None and np.abs(r - 1).max() < 0.1
    assert np.abs(r - 1).max() > 1e-4  # ... but not exactly 1: the shape did move


def test_au06_shades_the_cheeks_more_at_e_than_at_a(profile, shading_gen, plain_gen):
    g = rows(profile, ["AU06"], (0.0, 1.0, 5.0))
    out = {}
    for level in (1.0, 5.0):
        row = pick(g, AU06=level)
        shaded = shading_gen.render(profile, row, SIZE)
        plain = plain_gen.render(profile, row, SIZE)
        m = masks(plain.landmarks[0], SIZE)
        out[level] = {k: region_change(shaded.images[0], plain.images[0], v) for k, v in m.items()}
    assert out[5.0]["cheeks"] > 2 * out[1.0]["cheeks"]
    assert out[5.0]["cheeks"] > 0.3  # grey levels, mean over the cheeks
    assert out[5.0]["outside"] < 0.05 and out[5.0]["cheeks"] > 5 * out[5.0]["outside"]


def test_au17_shades_the_chin(profile, shading_gen, plain_gen):
    row = pick(rows(profile, ["AU17"], (0.0, 5.0)), AU17=5.0)
    shaded = shading_gen.render(profile, row, SIZE)
    plain = plain_gen.render(profile, row, SIZE)
    m = masks(plain.landmarks[0], SIZE)
    chin = region_change(shaded.images[0], plain.images[0], m["chin"])
    assert chin > 1.0
    assert chin > 3 * region_change(shaded.images[0], plain.images[0], m["cheeks"])
    assert region_change(shaded.images[0], plain.images[0], m["outside"]) < 0.05


def test_same_input_same_pixels(profile):
    from generators.shading import ShadingGenerator

    g = rows(profile, ["AU04", "AU12"], (0.0, 4.0), (10.0, 5.0, 0.0))
    a = ShadingGenerator().render(profile, g, SIZE).images
    b = ShadingGenerator().render(profile, g, SIZE).images
    assert np.array_equal(a, b)


def test_generator_options_are_checked(tmp_path):
    from fewshot.errors import ConfigError, InputError
    from generators import generate
    from generators.render import generator_options

    assert generator_options("warp+shading") == {}
    assert generator_options("warp+shading", face_model="ict.npz", appearance=None) == {"face_model": "ict.npz"}
    with pytest.raises(ConfigError, match="appearance"):
        generator_options("warp+shading", appearance="smile.npz")
    with pytest.raises(InputError, match="face model"):
        generate(None, pd.DataFrame(), generator="warp+shading", face_model=tmp_path / "missing.npz")


def test_light_fit_recovers_a_light_and_the_prior_holds_it():
    from generators.shading import fit_sh, one_light_sh, sh_basis

    rng = np.random.default_rng(0)
    n = rng.normal(size=(3000, 3))
    n[:, 2] = -np.abs(n[:, 2]) - 0.8  # the normals a frontal photo sees
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    light = np.array([0.3, -0.4, -0.6])
    truth = one_light_sh(n, (n @ (-light / np.linalg.norm(light))).clip(0) * 0.5 + 0.05)
    values = sh_basis(n) @ truth + rng.normal(0, 0.01, len(n))
    values[:100] = 0.0  # outliers (a brow, a mole): the Huber weights ignore them
    c, scale = fit_sh(n, values)
    assert np.abs(sh_basis(n) @ c - sh_basis(n) @ truth).max() < 0.02
    assert scale < 0.02
    # where the photo sees no normal (behind the head), the fit stays a light that exists
    back = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    assert (sh_basis(back) @ c > -0.02).all()


def test_normals_zbuffer_and_fill():
    from generators.shading import splat_fill, vertex_normals, zbuffer_visible

    # a tetrahedron wound outwards: every vertex normal points away from the centroid
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float)
    t = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    nrm = vertex_normals(v, t)
    assert ((nrm * (v - v.mean(0))).sum(1) > 0).all()
    # two points in one cell: the far one is hidden; a point next to an occluder is hidden too
    cells = np.array([[2, 2], [2, 2], [3, 2], [6, 6]])
    depth = np.array([10.0, 30.0, 30.0, 30.0])
    assert zbuffer_visible(cells, depth, (8, 8)).tolist() == [True, False, False, True]
    # normalized convolution fills the hole between two equal values with that value
    filled, cover = splat_fill(np.array([[1, 4], [5, 4]]), np.array([0.2, 0.2]), np.ones(2), (8, 8), sigma=1.5)
    assert abs(filled[4, 3] - 0.2) < 1e-5 and cover[4, 3] > cover[0, 0]
