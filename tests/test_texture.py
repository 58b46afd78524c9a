"""The learned expression texture: the skin change of a smile learned from photo pairs, drawn by 'mesh'."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.test_shading import masks, pick, region_change, rows

SIZE = 128


@pytest.fixture(scope="module")
def profile(example_image):
    from generators import fit_profile, load_motion_model
    from generators.facemodel import MODEL_PATH

    return fit_profile(example_image, motion=load_motion_model(MODEL_PATH.with_name("ict_motion.npz")))


def _canonical_face(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic 'photo' that is already the canonical face: textured grey, the template landmarks."""
    import cv2

    from generators import warp as W
    from generators.appearance import CANONICAL

    rng = np.random.default_rng(seed)
    img = np.full((CANONICAL, CANONICAL), 120.0) + cv2.GaussianBlur(rng.normal(0, 20, (CANONICAL, CANONICAL)), (0, 0), 3)
    return np.clip(np.repeat(img[..., None], 3, -1), 0, 255).astype(np.uint8), W.template_points(CANONICAL)[:68]


def test_fit_recovers_a_shared_fold_and_ignores_one_persons_mark():
    from generators.appearance import CANONICAL, fit_expression_texture, texture_regions

    regions = texture_regions()
    ys, xs = np.mgrid[0:CANONICAL, 0:CANONICAL]
    fold = np.zeros((CANONICAL, CANONICAL))
    fold[(np.abs(xs - 100) < 6) & (ys > 150) & (ys < 175)] = -0.25  # a nasolabial-like dark band, AU12's region
    assert regions["AU12"][fold < 0].mean() > 0.9
    pairs, levels = [], []
    for k in range(8):
        img0, lm = _canonical_face(k)
        x = 0.5 + 0.06 * k  # the smile's AU12 movement level (C..E)
        gain = x * fold
        if k == 3:
            gain = gain.copy()
            gain[60:70, 60:70] -= 0.5  # one person's mole: not shared, shrunk away
        img1 = np.clip(img0 * np.exp(gain)[..., None], 0, 255).astype(np.uint8)
        pairs.append((img0, lm, img1, lm))
        levels.append({"AU06": 0.0, "AU12": float(np.interp(x, [0.5, 0.775, 1.0], [3, 4, 5]))})
    tex = fit_expression_texture(pairs, levels, names=[str(k) for k in range(8)])
    assert set(tex.fields) == {"AU12"}  # no pair shows AU6: nothing is learned for it
    f = tex.fields["AU12"]
    inside = (np.abs(xs - 100) < 4) & (ys > 153) & (ys < 172)
    assert -0.3 < f[inside].mean() < -0.15
    assert abs(f[62:68, 62:68]).max() < 0.05
    assert abs(f[regions["AU12"] == 0]).max() == 0.0  # nothing outside its region


def test_gain_is_linear_in_the_level_and_none_when_off():
    from generators.appearance import CANONICAL, ExpressionTexture
    from generators.aus import intensity_level

    f = np.ones((CANONICAL, CANONICAL), np.float32) * 0.1
    tex = ExpressionTexture({"AU12": f})
    assert tex.gain({}) is None and tex.gain({"AU12": 0.0, "AU04": 5.0}) is None
    assert np.allclose(tex.gain({"AU12": 4.0}), 0.1 * intensity_level(4.0))
    assert tex.how("AU12").startswith("learned-texture") and tex.how("AU06") == "none"


def test_save_load_round_trip_and_bad_files(tmp_path):
    from fewshot.errors import InputError
    from generators.appearance import CANONICAL, ExpressionTexture, load_texture

    tex = ExpressionTexture({"AU06": np.full((CANONICAL, CANONICAL), -0.125, np.float32)}, {"source": "test"})
    tex.save(tmp_path / "t.npz")
    back = load_texture(tmp_path / "t.npz")
    assert back.meta["source"] == "test" and np.allclose(back.fields["AU06"], -0.125)
    with pytest.raises(InputError, match="no such"):
        load_texture(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a fewshot expression texture"):
        load_texture(tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", meta=np.array(json.dumps({"kind": "appearance"})), texture_AU06=np.zeros((8, 8)))
    with pytest.raises(InputError, match="re-run"):
        load_texture(tmp_path / "other.npz")


def test_shipped_london_texture_darkens_the_nasolabial_folds():
    import cv2

    from generators import warp as W
    from generators.appearance import CANONICAL, texture_regions
    from generators.mesh import LONDON_TEXTURE, resolve_texture

    tex = resolve_texture("london")
    assert LONDON_TEXTURE.stat().st_size < 200_000 and set(tex.fields) == {"AU06", "AU12"}
    assert tex.meta["n_pairs"] == 40 and LONDON_TEXTURE.with_name("FRL_London_LICENSE.txt").is_file()
    p = W.template_points(CANONICAL)
    fold = np.zeros((CANONICAL, CANONICAL), np.uint8)
    for wing, corner in ((31, 48), (35, 54)):  # nose wing to mouth corner, a little outward
        a, b = p[wing] + [(-1 if wing == 31 else 1) * 6, 4], p[corner] + [(-1 if wing == 31 else 1) * 6, -4]
        cv2.line(fold, tuple(np.round(a).astype(int)), tuple(np.round(b).astype(int)), 1, 5)
    assert tex.fields["AU12"][fold > 0].mean() < -0.03
    for au, f in tex.fields.items():
        assert abs(f[texture_regions()[au] == 0]).max() == 0.0
    assert resolve_texture("none") is None


def test_mesh_draws_the_texture_on_the_face_only(profile):
    from generators.mesh import MeshGenerator

    g = rows(profile, ["AU12"], (0.0, 4.0))
    on, off = pick(g, AU12=4.0), pick(g, AU12=0.0)
    with_t, without = MeshGenerator(), MeshGenerator(texture="none")
    a, b = with_t.render(profile, on, SIZE), without.render(profile, on, SIZE)
    m = masks(a.landmarks[0], SIZE)
    assert region_change(a.images[0], b.images[0], ~m["outside"]) > 0.3
    assert region_change(a.images[0], b.images[0], m["outside"]) < 0.05
    assert a.records[0]["texture"]["aus"] == {"AU12": 4.0}
    assert np.array_equal(with_t.render(profile, off, SIZE).images, without.render(profile, off, SIZE).images)


def test_texture_folds_never_train_on_the_rendered_identity(london, analyzer):
    from generators import checks

    pool = checks.ids(london)[:4]
    lmc = checks.london_landmarks(pool, analyzer, london)
    tex = checks.texture_folds(pool[:2], lmc, folds=2, london=london, pool=pool)
    for i, t in tex.items():
        assert i not in t.meta["trained_on"] and len(t.meta["trained_on"]) == 2


def test_cli_fit_appearance_texture(london, tmp_path):
    import shutil

    from typer.testing import CliRunner

    from cli import app

    from generators import checks

    for sub, kind in (("neutral_front", "03"), ("smiling_front", "08")):
        (tmp_path / sub).mkdir()
        for i in checks.ids(london)[:3]:
            shutil.copy(london / sub / f"{i}_{kind}.jpg", tmp_path / sub)
    r = CliRunner().invoke(app, ["fit-appearance", "--without", str(tmp_path / "neutral_front"), "--with",
                                 str(tmp_path / "smiling_front"), "--texture", "--intensity", "4", "--out", str(tmp_path / "t.npz")])
    assert r.exit_code == 0, r.output
    from generators.mesh import MeshGenerator

    assert MeshGenerator(texture=tmp_path / "t.npz").texture.meta["n_pairs"] == 3
