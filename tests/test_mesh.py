"""The 'mesh' generator: the person's dense ICT mesh corrects the warp's map; the model's teeth fill the mouth."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_shading import luminance, masks, pick, region_change, rows

SIZE = 128


@pytest.fixture(scope="module")
def profile(example_image):
    from generators import fit_profile, load_motion_model
    from generators.facemodel import MODEL_PATH

    return fit_profile(example_image, motion=load_motion_model(MODEL_PATH.with_name("ict_motion.npz")))


@pytest.fixture(scope="module")
def mesh_gen():
    from generators.mesh import MeshGenerator

    return MeshGenerator()


@pytest.fixture(scope="module")
def flat_gen():
    """The mesh's geometry without its relighting: what the dense flow alone does."""
    from generators.mesh import MeshGenerator

    return MeshGenerator(relight=False)


@pytest.fixture(scope="module")
def shading_gen():
    from generators.shading import ShadingGenerator

    return ShadingGenerator()


def test_registered_and_renders_the_grid_landmarks(profile, mesh_gen, shading_gen):
    from generators import GENERATORS, design_grid

    assert "mesh" in GENERATORS.names()
    grid = design_grid(profile, n=6, aus=["AU04", "AU06", "AU12", "AU17", "AU26"], seed=2)
    b = mesh_gen.render(profile, grid, SIZE)
    assert b.images.shape == (6, SIZE, SIZE, 3) and b.images.dtype == np.uint8 and b.generator == "mesh"
    assert all(r["generator"] == "mesh" and r["mesh"]["vertices"] > 5000 for r in b.records)
    # the landmarks are the grid's: the mesh moves the skin between them, not them
    ref = shading_gen.render(profile, grid, SIZE)
    assert np.allclose(b.landmarks, ref.landmarks, atol=1e-4)


def test_no_au_at_the_source_pose_is_the_photo(profile, flat_gen, shading_gen):
    g = rows(profile, ["AU12"], (0.0,))
    a = flat_gen.render(profile, g, SIZE).images[0]
    b = shading_gen.render(profile, g, SIZE).images[0]
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 1.0


def test_the_flow_moves_the_cheeks_not_the_background(profile, flat_gen, shading_gen):
    row = pick(rows(profile, ["AU12"], (0.0, 5.0)), AU12=5.0)
    a = flat_gen.render(profile, row, SIZE)
    b = shading_gen.warp.render(profile, row, SIZE)  # the same warp, no mesh, no relighting
    m = masks(b.landmarks[0], SIZE)
    cheeks = region_change(a.images[0], b.images[0], m["cheeks"])
    assert cheeks > 1.0  # grey levels: skin moved where no landmark is
    assert region_change(a.images[0], b.images[0], m["outside"]) < 0.05


def test_au06_and_au17_change_the_skin_at_c_to_e_not_at_0(profile, mesh_gen):
    for au, region in (("AU06", "cheeks"), ("AU17", "chin")):
        g = rows(profile, [au], (0.0, 3.0, 5.0))
        imgs = {lv: mesh_gen.render(profile, pick(g, **{au: lv}), SIZE) for lv in (0.0, 3.0, 5.0)}
        m = masks(imgs[0.0].landmarks[0], SIZE)
        change = {lv: region_change(imgs[lv].images[0], imgs[0.0].images[0], m[region]) for lv in (3.0, 5.0)}
        assert change[3.0] > 0.5 and change[5.0] > change[3.0], (au, change)


@pytest.mark.parametrize("mouth", ["model", "painted"])
def test_open_mouth_shows_a_dark_interior_with_teeth(profile, mouth):
    from generators.mesh import MeshGenerator
    from generators.mouth import inner_mouth_mask

    row = pick(rows(profile, ["AU26"], (0.0, 5.0)), AU26=5.0)
    b = MeshGenerator(mouth=mouth).render(profile, row, SIZE)
    assert b.records[0]["mouth_interior"] > 0.5
    inner = inner_mouth_mask(b.landmarks[0].astype(float), (SIZE, SIZE))
    lum = luminance(b.images[:1])[0]
    assert inner.sum() > 20
    lips = masks(b.landmarks[0], SIZE)["chin"]
    assert lum[inner].mean() < lum[lips].mean() - 30  # a cavity, darker than the skin below the lip
    assert np.percentile(lum[inner], 95) > lum[inner].mean() + 15  # ... with brighter teeth in it


def test_full_frame_and_determinism(profile):
    from generators.mesh import MeshGenerator

    g = rows(profile, ["AU04", "AU12"], (0.0, 4.0), (10.0, 5.0, 0.0))
    a = MeshGenerator().render(profile, g, SIZE, full_frame=True)
    b = MeshGenerator().render(profile, g, SIZE)
    assert np.array_equal(a.images, b.images)
    assert a.frames is not None and a.frames.shape[0] == len(g) and a.frames.dtype == np.uint8


def test_options_are_checked(tmp_path):
    from fewshot.errors import ConfigError, InputError
    from generators import generate
    from generators.render import generator_options

    from generators.mesh import MeshGenerator

    assert generator_options("mesh", face_model="ict.npz", mouth="model") == {"face_model": "ict.npz", "mouth": "model"}
    with pytest.raises(ConfigError, match="mouth"):
        MeshGenerator(mouth="teeth")
    with pytest.raises(ConfigError, match="appearance"):
        generator_options("mesh", appearance="smile.npz")
    with pytest.raises(InputError, match="face model"):
        generate(None, None, generator="mesh", face_model=tmp_path / "missing.npz")
