"""Stage 3: the warp generator, semantic AU appearance, identity and landmark fidelity."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from fewshot.errors import ConfigError, InputError
from fewshot.landmarks import apply_affine, normalized_error

from .conftest import LONDON


# -- helpers ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def profile(example_image):
    from generators import fit_profile

    return fit_profile(example_image)


def rows_for(profile, specs, sem: dict | None = None) -> pd.DataFrame:
    """Grid rows: specs = [(yaw, pitch, roll, {AU: intensity}), ...] at absolute pose (degrees)."""
    from generators.aus import intensity_level

    rows = []
    for i, (yaw, pitch, roll, aus) in enumerate(specs):
        lm = profile.landmarks_for(yaw, pitch, roll, aus)
        row = {"sample_id": i, "seed": 11, "yaw": yaw, "pitch": pitch, "roll": roll, **aus}
        row.update({f"tx_{k}": lm[k, 0] for k in range(68)})
        row.update({f"ty_{k}": lm[k, 1] for k in range(68)})
        for a in ("AU04", "AU06", "AU09", "AU10", "AU17"):
            row[f"sem_{a}"] = float(intensity_level(aus.get(a, 0))) if (sem is None or a in sem) else 0.0
        rows.append(row)
    return pd.DataFrame(rows).fillna(0.0)


def hf_energy(images: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean squared Laplacian-of-grey inside a (S, S) mask, per image."""
    out = []
    for im in images:
        g = cv2.cvtColor(im, cv2.COLOR_RGB2GRAY).astype(np.float32)
        hp = g - cv2.GaussianBlur(g, (0, 0), 1.5)
        out.append(float((hp**2 * mask).sum() / mask.sum()))
    return np.array(out)


# -- mesh and dense map ------------------------------------------------------------------------------

def test_mesh_covers_the_crop_without_folds():
    from generators import warp as W

    m = W.mesh()
    pts = W.template_points(128)
    ids = W.rasterise(pts, m.triangles, np.arange(len(m.triangles)), 128)
    assert (ids >= 0).all(), "the border points must close the mesh"
    area = W._signed_area(pts[m.triangles])
    assert (area[m.kind == 0] > 0).all(), "no skin triangle is folded in the template"
    edges = {frozenset(e) for t in m.triangles[m.kind == 0] for e in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0]))}
    for contour in (range(36, 42), range(42, 48), range(60, 68)):
        c = list(contour)
        assert all(frozenset((c[i], c[(i + 1) % len(c)])) in edges for i in range(len(c)))


def test_head_outline_fences_the_face_contour():
    """No triangle joins the face contour (landmarks 0-16) to the mesh border: what lies beyond the
    contour (ears, hair, neck) always sits between the contour and an outline extra, so a turn cannot
    stretch it from the contour across to the border."""
    from generators import warp as W

    tri = W.mesh().triangles
    touches_contour = np.isin(tri, np.arange(17)).any(1)
    touches_border = (tri >= W.N_FACE).any(1)
    assert not (touches_contour & touches_border).any(), tri[touches_contour & touches_border]


@pytest.mark.parametrize("yaw", [-30.0, 30.0])
def test_turn_tucks_the_far_ear_and_widens_the_near_one(profile, yaw):
    """At 30 degrees of yaw the outline beyond the far cheek narrows (the ear goes behind it) and the
    one beyond the near cheek widens; no outline extra crosses into the face, and the outline moves
    with the head, not with an open jaw."""
    from fewshot.crop import transform_scale
    from fewshot.landmarks import similarity_transform
    from generators import warp as W

    R, R0 = W.rotation_of(yaw, 0, 0), W.rotation_of(*profile.pose_degrees)
    src = W.face_points(profile.landmarks, R0)

    def outline(aus):
        face = W.face_points(profile.landmarks_for(yaw, 0, 0, aus), R)
        S = similarity_transform(face[W.ALIGN_POINTS], src[W.ALIGN_POINTS])
        placed = W.unfold_outline(face, src, S, R, R0)
        return placed, np.linalg.norm(placed[W.OUTLINE] - placed[W.OUTLINE_ANCHOR], axis=1) * transform_scale(S)

    placed, width = outline({})
    frontal = np.linalg.norm(src[W.OUTLINE] - src[W.OUTLINE_ANCHOR], axis=1)
    ratio = width / frontal
    ears = np.array([1, 2, 14, 15])  # ring points beside the ears, subject's right then left
    # a positive yaw turns the face to the image left (x' = x cos + z sin): the image-left side is far
    far, near = (ears[:2], ears[2:]) if yaw > 0 else (ears[2:], ears[:2])
    assert ratio[far].max() < 0.5 and ratio[near].min() > 1.05, ratio[ears]
    centre = placed[:68].mean(0)
    r_out = np.linalg.norm(placed[W.OUTLINE] - centre, axis=1)
    r_anchor = np.linalg.norm(placed[W.OUTLINE_ANCHOR] - centre, axis=1)
    assert (r_out > r_anchor).all(), "an outline extra crossed into the face"
    jaw_open, _ = outline({"AU26": 5.0})
    neck = W.OUTLINE[5:12]
    assert np.abs(jaw_open[neck] - placed[neck]).max() < 0.5, "the neck must not follow the jaw"


def test_dense_map_reproduces_each_triangle_affine():
    from generators import warp as W

    dst = np.array([[0, 0], [31, 0], [0, 31], [31, 31]], float)
    src = dst * 2 + [5, 7]
    tri = np.array([[0, 1, 2], [1, 3, 2]])
    ids = W.rasterise(dst, tri, np.arange(2), 32)
    mx, my = W.dense_map(ids, W.triangle_affines(dst, src, tri))
    ys, xs = np.mgrid[0:32, 0:32]
    assert np.allclose(mx, xs * 2 + 5, atol=1e-3) and np.allclose(my, ys * 2 + 7, atol=1e-3)


def test_source_pose_renders_the_aligned_source(profile):
    """Rendering the source's own landmarks at its own pose is the plain aligned crop."""
    from generators import generate
    from fewshot.crop import warp_crop
    from generators.warp import crop_transform

    yaw, pitch, roll = profile.pose_degrees
    rows = rows_for(profile, [(yaw, pitch, roll, {})])
    b = generate(profile, rows, size=128)
    lm = rows_for(profile, [(yaw, pitch, roll, {})])
    target = np.stack([lm[[f"tx_{k}" for k in range(68)]].to_numpy()[0], lm[[f"ty_{k}" for k in range(68)]].to_numpy()[0]], -1)
    M = crop_transform(target, 128)
    ref = warp_crop(profile.image, M, 128)
    face = np.zeros((128, 128), np.uint8)
    cv2.fillConvexPoly(face, cv2.convexHull(np.round(apply_affine(M, target)).astype(np.int32)), 1)
    diff = np.abs(b.images[0].astype(float) - ref.astype(float))[face.astype(bool)].mean()
    assert diff < 2.0, diff
    assert np.abs(b.landmarks[0] - apply_affine(M, target)).max() < 1e-3


def test_warp_crop_is_area_filtered_and_pixel_exact():
    """A strong downscale through warp_crop matches cv2.resize(INTER_AREA); warpAffine alone aliases."""
    from fewshot.crop import warp_crop

    yy, xx = np.mgrid[0:800, 0:800]
    img = np.repeat((((xx // 3 + yy // 3) % 2) * 255).astype(np.uint8)[..., None], 3, axis=2)
    img[300:500, 300:500] = (200, 40, 40)
    M = np.array([[0.2, 0.0, 0.0], [0.0, 0.2, 0.0]])
    ref = cv2.resize(img, (160, 160), interpolation=cv2.INTER_AREA).astype(float)
    ours = warp_crop(img, M, 160).astype(float)
    plain = cv2.warpAffine(img, M, (160, 160), flags=cv2.INTER_AREA).astype(float)  # INTER_AREA is ignored here
    assert np.abs(ours - ref)[5:-5, 5:-5].mean() < 0.3 * np.abs(plain - ref)[5:-5, 5:-5].mean()
    # the red square lands where the affine puts it (pixel centres line up after the prescale)
    w = np.clip((ours[..., 0] - ours[..., 1]) / 160, 0, 1)
    ys, xs = np.mgrid[0:160, 0:160]
    centre = 0.2 * 399.5  # the square's centre pixel, mapped
    assert abs((w * xs).sum() / w.sum() - centre) < 0.05 and abs((w * ys).sum() / w.sum() - centre) < 0.05


def test_code_expression_recovers_rendered_intensities(profile):
    from generators import code_expression

    yaw, pitch, roll = profile.pose_degrees
    for aus in ({"AU06": 2.0, "AU12": 4.0, "AU25": 0.0}, {"AU06": 5.0, "AU12": 1.0, "AU25": 3.0}):
        lm = profile.landmarks_for(yaw, pitch, roll, aus)
        # the head moved between photos: a similarity does not change the code
        moved = lm @ np.array([[0.98, 0.05], [-0.05, 0.98]]).T + [12.0, -7.0]
        code, err = code_expression(profile, moved, ("AU06", "AU12", "AU25"), required=("AU06", "AU12"))
        assert code == aus and err < 1e-6
    code, err = code_expression(profile, profile.landmarks, ("AU12",), required=("AU12",))
    assert code == {"AU12": 1.0} and err > 0
    lm = profile.landmarks_for(yaw, pitch, roll, {"AU06": 1.0, "AU12": 3.0, "AU25": 2.0})
    code, err = code_expression(profile, lm, ("AU12", "AU25"), fixed={"AU06": 1.0})
    assert code == {"AU06": 1.0, "AU12": 3.0, "AU25": 2.0} and err < 1e-6
    # parsimonious coding: noise on the landmarks, the least intense code within the tolerance
    rng = np.random.default_rng(0)
    noisy = profile.landmarks_for(yaw, pitch, roll, {"AU06": 4.0, "AU12": 4.0, "AU25": 0.0}) + rng.normal(0, 1.0, (68, 2))
    best, best_err = code_expression(profile, noisy, ("AU06", "AU12", "AU25"), required=("AU06", "AU12"))
    lean, lean_err = code_expression(profile, noisy, ("AU06", "AU12", "AU25"), required=("AU06", "AU12"), tolerance=0.002)
    assert sum(lean.values()) < sum(best.values()) and all(lean[a] <= best[a] + 1 for a in best)
    assert best_err <= lean_err <= best_err + 0.002
    with pytest.raises(ConfigError, match="both"):
        code_expression(profile, lm, ("AU06", "AU12"), fixed={"AU06": 1.0})
    with pytest.raises(ConfigError, match="yaw, pitch, roll"):
        code_expression(profile, lm, ("AU12",), pose=(0.0, 0.0))
    with pytest.raises(ConfigError):
        code_expression(profile, profile.landmarks, ("AU01", "AU02", "AU04", "AU06", "AU12"))


def test_pose_of_measures_a_turn_and_coding_at_it_recovers_the_expression(profile):
    """A smile photographed after the head turned and nodded: its pose is measured with the person's
    own shape, and coded at that pose the expression comes out right; coded at the neutral photo's
    pose the turn is mistaken for AU motion."""
    from generators import code_expression

    yaw, pitch, roll = profile.pose_degrees
    assert np.allclose(profile.pose_of(profile.landmarks), (yaw, pitch, roll), atol=0.3)
    aus = {"AU06": 2.0, "AU12": 3.0, "AU25": 0.0}
    turned = (yaw + 6.0, pitch - 5.0, roll + 2.0)
    lm = profile.landmarks_for(*turned, aus)
    measured = profile.pose_of(lm)
    assert np.allclose(measured, turned, atol=0.5), measured  # AU6/AU12 move a few stable points a little
    code, err = code_expression(profile, lm, ("AU06", "AU12", "AU25"), required=("AU06", "AU12"), pose=measured)
    assert code == aus and err < 0.002
    naive, naive_err = code_expression(profile, lm, ("AU06", "AU12", "AU25"), required=("AU06", "AU12"))
    assert naive_err > 3 * err


# -- the generator interface ----------------------------------------------------------------------------

def test_generate_batch_records_and_determinism(profile):
    from generators import GENERATORS, generate

    assert {"warp", "warp+refiner"} <= set(GENERATORS.names())
    specs = [(0, 0, 0, {}), (20, -10, 5, {"AU12": 4.0, "AU06": 3.0}), (-25, 10, 0, {"AU25": 4.0, "AU26": 4.0, "AU17": 0.0}),
             (0, 0, 0, {"AU17": 5.0})]
    rows = rows_for(profile, specs)
    b = generate(profile, rows, size=96, full_frame=True)
    assert b.images.shape == (4, 96, 96, 3) and b.images.dtype == np.uint8
    assert b.landmarks.shape == (4, 68, 2) and b.frames is not None and b.frames.shape[0] == 4
    r0, r1, r2, r3 = b.records
    assert r0["semantic_aus"] == {} and r0["landmarks_aus"] == {}
    assert r1["landmarks_aus"] == {"AU06": 3.0, "AU12": 4.0}
    assert r1["semantic_aus"]["AU06"]["how"] == "procedural" and r1["semantic_aus"]["AU06"]["level"] > 0
    assert r2["mouth_interior"] > 0.5, "parted lips get a mouth interior"
    assert "AU17" in r3["semantic_aus"]
    again = generate(profile, rows, size=96)
    assert np.array_equal(again.images, b.images), "same rows, same pixels"
    # the rendered landmarks are where the crop transform puts the targets
    assert normalized_error(b.landmarks[0], b.landmarks[0]) == 0


def test_bad_grids_fail_clearly(profile):
    from generators import generate

    rows = rows_for(profile, [(0, 0, 0, {"AU06": 3.0})])
    with pytest.raises(ConfigError, match="tx_"):
        generate(profile, rows.drop(columns=["tx_5"]))
    bad = rows.copy()
    bad["sem_AU06"] = 3.0  # FACS intensity where a 0..1 level belongs
    with pytest.raises(ConfigError, match="0..1"):
        generate(profile, bad)
    with pytest.raises(ConfigError, match="unknown generator"):
        generate(profile, rows, generator="nope")
    # columns the renderer would silently drop or misread are refused, not rendered as neutral
    for edit, match in ((lambda t: t.rename(columns={"AU06": "AU6"}), "rename it 'AU06'"),
                        (lambda t: t.assign(AU12=9.0), "AU12 outside 0..5"),
                        (lambda t: t.assign(sem_AU25=0.5), "not a semantic channel")):
        with pytest.raises(ConfigError, match=match):
            generate(profile, edit(rows.copy()))


def test_generate_reads_the_grid_object(profile):
    """A Grid and the table it came from render the same pixels; so does a slice of it."""
    from generators import Grid, design_grid, generate

    df = design_grid(profile, n=6, aus=["AU04", "AU06", "AU12", "AU17", "AU25"], seed=9, strategy="balanced")
    g = Grid.from_table(df)
    a, b = generate(profile, df, size=64), generate(profile, g, size=64)
    assert np.array_equal(a.images, b.images) and a.records == b.records
    assert np.array_equal(generate(profile, g[2:4], size=64).images, a.images[2:4])
    assert any(len(r["semantic_aus"]) >= 2 for r in a.records)


def test_closed_eyes_are_painted(profile):
    from generators import generate

    yaw, pitch, roll = profile.pose_degrees
    b = generate(profile, rows_for(profile, [(yaw, pitch, roll, {}), (yaw, pitch, roll, {"AU43": 5.0})]), size=128)
    assert b.records[1]["eyelids_painted"][0] > 0.5 and b.records[0]["eyelids_painted"] == [0.0, 0.0]
    # the eye opening turns from dark iris/sclera contrast to flat lid skin
    lm = b.landmarks[0]
    x0, y0 = np.floor(lm[36:42].min(0)).astype(int)
    x1, y1 = np.ceil(lm[36:42].max(0)).astype(int)
    open_std = b.images[0][y0:y1, x0:x1].std()
    closed_std = b.images[1][y0:y1, x0:x1].std()
    assert closed_std < 0.8 * open_std


def test_mouth_interior_shows_teeth_and_a_cavity(profile):
    """A parted smile is mostly teeth, brighter than the sclera sample; a wide-open mouth shows upper
    teeth at the top and a dark cavity below them."""
    from generators import generate
    from generators.mouth import inner_mouth_mask, sample_colours

    yaw, pitch, roll = profile.pose_degrees
    specs = [(yaw, pitch, roll, {"AU12": 4.0, "AU25": 4.0}), (yaw, pitch, roll, {"AU25": 5.0, "AU26": 5.0, "AU27": 4.0})]
    b = generate(profile, rows_for(profile, specs), size=256)
    teeth = sample_colours(profile.image, profile.landmarks).teeth.mean()
    for k, (img, lm) in enumerate(zip(b.images, b.landmarks)):
        m = inner_mouth_mask(lm, img.shape[:2])
        grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(float)
        assert b.records[k]["mouth_interior"] > 0.5 and m.sum() > 30
        if k == 0:
            assert (grey[m] > 0.8 * teeth).mean() > 0.7, "a smile's opening is mostly teeth"
            assert (grey[m] < 0.35 * teeth).mean() < 0.1, "no dark crescent under them"
            assert np.percentile(grey[m], 90) > 0.9 * teeth
        else:
            ys = np.nonzero(m)[0]
            upper = m & (np.arange(img.shape[0])[:, None] < ys.min() + 0.25 * (ys.max() - ys.min()))
            assert (grey[upper] > 0.6 * teeth).mean() > 0.4, "upper teeth under the upper lip"
            assert (grey[m] < 0.35 * teeth).mean() > 0.2, "a dark cavity"


def test_painted_mouths_match_real_smiles(london):
    """Driven by each real smile's own landmarks, the painted interior is about as bright as the real
    teeth (generators.checks.mouth_rows; scripts/stage3_checks.py mouth does all 40)."""
    from fewshot.analysis import Analyzer
    from generators import checks

    ids = ["002", "009", "030", "114", "134"]
    lmc = checks.london_landmarks(ids, Analyzer(embed=False), london=LONDON)
    df = pd.DataFrame(checks.mouth_rows(ids, lmc, london=LONDON))
    assert len(df) == 5, df
    assert df.rgb_diff.mean() < 35 and (df.real_p90 - df.generated_p90).abs().mean() < 20, df


@pytest.mark.parametrize("au,region", [("AU06", ("crows_feet", "infraorbital")), ("AU17", ("chin",))])
def test_semantic_appearance_raises_high_frequency_energy(profile, au, region):
    """Skin texture energy in the AU's region grows with intensity (0 < A < C < E); 0 changes nothing."""
    from generators import generate
    from generators.appearance import region_masks

    yaw, pitch, roll = profile.pose_degrees
    specs = [(yaw, pitch, roll, {au: float(i)}) for i in (0, 1, 3, 5)]
    with_sem = generate(profile, rows_for(profile, specs), size=256)
    no_sem = generate(profile, rows_for(profile, specs, sem={}), size=256)
    masks = region_masks()
    eyes = cv2.dilate(masks["eyes"], np.ones((9, 9), np.uint8))
    m = np.maximum.reduce([masks[r] for r in region]) * (1 - np.clip(eyes, 0, 1))  # wrinkles, not lashes
    e_sem, e_geo = hf_energy(with_sem.images, m), hf_energy(no_sem.images, m)
    assert np.array_equal(with_sem.images[0], no_sem.images[0]), "intensity 0 renders no appearance"
    ratio = e_sem / e_geo  # the semantic texture's share, with the landmark-driven change divided out
    assert ratio[0] == 1.0 and ratio[1] >= 0.99 and ratio[1] < ratio[2] < ratio[3], ratio
    assert ratio[2] > 1.3 and ratio[3] > 1.6, ratio  # C and E visibly textured
    assert ratio[1] < ratio[2], ratio


def test_semantic_appearance_never_moves_the_target_landmarks(profile):
    """AU6/AU17 skin moves inner mesh points only: a row's target landmarks (a grid's, or a driving
    clip's) are rendered where they are asked for, with or without the semantic channels."""
    from generators import generate
    from generators.appearance import DISPLACEMENTS
    from generators.warp import N_LANDMARKS

    assert all(i >= N_LANDMARKS for moves in DISPLACEMENTS.values() for i, _, _ in moves)
    yaw, pitch, roll = profile.pose_degrees
    specs = [(yaw, pitch, roll, {"AU06": 5.0, "AU12": 3.0, "AU17": 4.0})]
    with_sem = generate(profile, rows_for(profile, specs), size=256)
    no_sem = generate(profile, rows_for(profile, specs, sem={}), size=256)
    assert np.allclose(with_sem.landmarks, no_sem.landmarks, atol=1e-6)
    assert not np.array_equal(with_sem.images, no_sem.images)


def test_learned_appearance_roundtrip_and_use(tmp_path, profile, london):
    from generators import generate
    from generators.appearance import fit_appearance_from_folders, load_appearance

    ids = ["001", "002", "004"]
    model = fit_appearance_from_folders(london / "neutral_front", london / "smiling_front", "AU06", 3.0, ids)
    assert model.meta["trained_on"] == ids
    shade = model.learned_shading["AU06"]
    from generators.appearance import region_masks

    cheeks = region_masks()["cheeks"] > 0.5
    outside = region_masks()["AU06"] < 0.01
    assert np.abs(shade[outside]).max() < 0.05 * np.abs(shade).max(), "learned only inside the AU6 mask"
    assert shade[cheeks].mean() != 0 and model.texture_scale["AU06"] > 0
    path = tmp_path / "au06.npz"
    model.save(path)
    back = load_appearance(path)
    assert np.allclose(back.learned_shading["AU06"], shade, atol=1e-6)
    yaw, pitch, roll = profile.pose_degrees
    rows = rows_for(profile, [(yaw, pitch, roll, {"AU06": 4.0})])
    learned = generate(profile, rows, size=128, appearance=str(path))
    proc = generate(profile, rows, size=128)
    assert learned.records[0]["semantic_aus"]["AU06"]["how"] == "learned:au06.npz"
    assert not np.array_equal(learned.images, proc.images)
    # per-pair intensities: the same pairs coded E instead of C give half the shading at E
    # (intensity_level: C = 0.5, E = 1; the shrinkage factor does not depend on the scale) for an AU
    # without mesh displacements; for AU6 the displacement (larger at E) changes what is left to shade
    c4, e4 = (fit_appearance_from_folders(london / "neutral_front", london / "smiling_front", "AU04", {i: v for i in ids}, ids)
              for v in (3.0, 5.0))
    assert e4.meta["intensity"] == [5.0, 5.0, 5.0]
    assert np.allclose(e4.learned_shading["AU04"], 0.5 * c4.learned_shading["AU04"], atol=1e-6)
    coded = fit_appearance_from_folders(london / "neutral_front", london / "smiling_front", "AU06", {i: 5.0 for i in ids}, ids)
    assert 0.4 < np.abs(coded.learned_shading["AU06"]).mean() / np.abs(shade).mean() < 0.8
    with pytest.raises(InputError, match="intensity"):
        fit_appearance_from_folders(london / "neutral_front", london / "smiling_front", "AU06", {"001": 3.0}, ids)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="appearance"):
        load_appearance(bad)



def test_fit_appearance_learns_only_what_the_mesh_displacement_leaves(profile):
    """A pair that differs only by AU6's mesh displacement (cheek apex and infraorbital points up) has
    no skin change for the shading to learn: the renderer would otherwise apply that motion twice."""
    import cv2

    from generators.appearance import AppearanceModel, fit_appearance, log_luminance, region_masks, to_canonical
    from generators.render import WarpGenerator

    yaw, pitch, roll = profile.pose_degrees
    rows = rows_for(profile, [(yaw, pitch, roll, {"AU06": 0.0})] * 2)
    rows.loc[1, "sem_AU06"] = 1.0
    motion_only = AppearanceModel({"AU06": np.zeros((256, 256), np.float32)}, {"AU06": 0.0})
    b = WarpGenerator(motion_only).render(profile, rows, size=256)
    (a, la), (c, lc) = zip(b.images, b.landmarks)
    assert np.abs(a.astype(float) - c).mean() > 0.1, "the displacement moves the cheeks"
    fit = fit_appearance([(a, la, c, lc)], "AU06", 5.0).learned_shading["AU06"]
    naive = cv2.GaussianBlur(log_luminance(to_canonical(c, lc)) - log_luminance(to_canonical(a, la)), (0, 0), 2.5)
    w = region_masks()["cheeks"] / region_masks()["cheeks"].sum()
    assert (np.abs(fit) * w).sum() < 0.5 * (np.abs(naive) * w).sum()

# -- identity and landmark fidelity on real identities -----------------------------------------------

def _identity_run(ids, n):
    from generators import checks

    df = checks.identity_rows(ids, n, london=LONDON)
    assert df.yaw.abs().max() <= 30
    return df


def test_identity_and_landmark_fidelity_on_london(london):
    df = _identity_run(["001", "012", "034"], 24)
    assert df.detected.mean() >= 0.95
    assert df.identity_ok.mean() >= 0.95, df.groupby("id").identity_ok.mean()
    assert df.landmark_error.mean() < 0.06, df.landmark_error.describe()


@pytest.mark.slow
def test_identity_and_landmark_fidelity_all_london(london):
    ids = sorted(p.stem.split("_")[0] for p in (london / "neutral_front").glob("*_03.jpg"))
    df = _identity_run(ids, 200)
    assert df.identity_ok.mean() >= 0.95
    assert df.landmark_error.mean() < 0.06


def test_generated_smile_is_closer_to_the_real_smile(london):
    """Measure each real smile's head pose and code its expression from its landmarks, learn the AU6
    shading on 16 identities, render 4 held-out people's coded smiles at that pose from their neutral
    photo: closer to their real smiling photo than the neutral photo is, on landmarks and on cheek/eye
    pixels, each of them (generators.checks.smile_check, which scripts/stage3_checks.py smile runs, does
    all 40, identity-exclusive 2-fold)."""
    from fewshot.analysis import Analyzer
    from generators import checks

    det = Analyzer(embed=False)
    test = ["012", "024", "034", "097"]
    train = [i for i in checks.ids(LONDON) if i not in test][:16]
    lmc = checks.london_landmarks(train + test, det, london=LONDON)
    profiles, codes = checks.code_smiles(train + test, lmc, london=LONDON)
    assert all(c[0]["AU06"] >= 1 and c[0]["AU12"] >= 1 for c in codes.values())
    df = pd.DataFrame(checks.smile_fold(train, test, lmc, profiles, codes, det, london=LONDON))
    assert (df.lm_learned < df.lm_neutral).all(), df
    assert (df.px_learned < df.px_neutral).all(), df
    assert df.px_learned.mean() < df.px_landmarks_only.mean() < df.px_neutral.mean(), df
    # the generator alone, driven by the real smile's own landmarks: closer on both, for each of them
    assert (df.lm_reenacted < df.lm_neutral).all() and (df.px_reenacted < df.px_neutral).all(), df
    assert df.px_reenacted.mean() < df.px_learned.mean(), df


def test_fit_appearance_cli_with_per_identity_codes(tmp_path, london):
    from typer.testing import CliRunner

    from cli import app
    from generators.appearance import load_appearance

    codes = tmp_path / "codes.csv"
    codes.write_text("identity,AU06\n001,2\n002,4\n004,3\n")
    out = tmp_path / "au06.npz"
    args = ["fit-appearance", "--without", str(london / "neutral_front"), "--with", str(london / "smiling_front"),
            "--ids", "001,002,004", "--out", str(out)]
    r = CliRunner().invoke(app, [*args, "--intensities", str(codes)])
    assert r.exit_code == 0, r.output
    assert load_appearance(out).meta["intensity"] == [2.0, 4.0, 3.0]
    codes.write_text("identity,AU12\n001,2\n")
    r = CliRunner().invoke(app, [*args, "--intensities", str(codes)])
    assert r.exit_code != 0 and "AU06" in r.output and "codes.csv" in r.output
