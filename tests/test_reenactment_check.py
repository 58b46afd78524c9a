"""The self-reenactment realism check (generators.checks.reenactment_rows / realism_summary, run on all
40 London identities by `python scripts/stage3_checks.py reenact`): its metrics on toy arrays, then a
quick run on 4 real identities."""

from __future__ import annotations

import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from generators import checks
from tests.conftest import LONDON, ROOT


def _face(seed: int = 0, size: int = 64) -> np.ndarray:
    """A smooth random uint8 RGB image (structure at several scales, like skin and features)."""
    rng = np.random.default_rng(seed)
    img = sum(cv2.resize(rng.uniform(0, 255, (s, s, 3)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC) / 2
              for s in (4, 8, 16))
    return np.clip(img, 0, 255).astype(np.uint8)


def test_psnr_identical_is_inf_and_falls_with_noise():
    a = _face()
    mask = np.ones(a.shape[:2], bool)
    assert checks.masked_psnr(a, a, mask) == float("inf")
    rng = np.random.default_rng(1)
    small, large = (np.clip(a + rng.normal(0, s, a.shape), 0, 255).astype(np.uint8) for s in (2, 20))
    assert 40 < checks.masked_psnr(a, small, mask) < 50 and 20 < checks.masked_psnr(a, large, mask) < 25
    # only the masked pixels count: a wrecked outside leaves it untouched
    inside = np.zeros_like(mask)
    inside[16:48, 16:48] = True
    b = small.copy()
    b[~inside] = 255 - b[~inside]
    assert checks.masked_psnr(a, b, inside) == pytest.approx(checks.masked_psnr(a, small, inside))
    # the definition: 10 log10(255^2 / MSE) with MSE 1.0 gives 48.13 dB
    c = a.astype(int)
    c[..., 0] = np.where(c[..., 0] < 128, c[..., 0] + 1, c[..., 0] - 1)
    assert checks.masked_psnr(a, c.astype(np.uint8), mask) == pytest.approx(10 * np.log10(255 ** 2 * 3), abs=1e-9)


def test_ssim_is_one_for_identical_and_drops_with_degradation():
    a = _face()
    mask = np.ones(a.shape[:2], bool)
    assert checks.masked_ssim(a, a, mask) == pytest.approx(1.0, abs=1e-12)
    rng = np.random.default_rng(2)
    scores = [checks.masked_ssim(a, np.clip(a + rng.normal(0, s, a.shape), 0, 255).astype(np.uint8), mask) for s in (3, 10, 30)]
    assert 1 > scores[0] > scores[1] > scores[2] > 0
    # a uniform brightness shift changes luminance only a little: SSIM stays high where PSNR falls
    shifted = np.clip(a.astype(int) + 10, 0, 255).astype(np.uint8)
    assert checks.masked_ssim(a, shifted, mask) > 0.98 and checks.masked_psnr(a, shifted, mask) < 30


def test_ssim_and_hog_match_skimage():
    """The two small implementations give scikit-image's numbers (skimage is not a dependency; OpenCV 5
    has no HOGDescriptor)."""
    metrics = pytest.importorskip("skimage.metrics")
    feature = pytest.importorskip("skimage.feature")
    a, b = _face(3), cv2.GaussianBlur(_face(3), (5, 5), 1.0)
    grey = [cv2.cvtColor(x.astype(np.float32), cv2.COLOR_RGB2GRAY).astype(np.float64) for x in (a, b)]
    _, ref = metrics.structural_similarity(*grey, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                           data_range=255, full=True)
    np.testing.assert_allclose(checks.ssim_map(a, b), ref, atol=1e-9)
    boxes = np.stack([cv2.cvtColor(_face(s, 128), cv2.COLOR_RGB2GRAY) for s in (4, 5)])
    ours = checks.hog_features(boxes)
    assert ours.shape == (2, 15 * 15 * 4 * 9)
    ref = np.stack([feature.hog(x, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2), block_norm="L2-Hys")
                    for x in boxes])
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_hog_is_invariant_to_contrast_and_sees_orientation():
    box = cv2.cvtColor(_face(6, 64), cv2.COLOR_RGB2GRAY) // 2 * 2  # even grey levels: halving them is exact
    f = checks.hog_features(np.stack([box, box // 2 + 60, box.T.copy()]))
    assert np.abs(f[0] - f[1]).max() < 1e-4  # block normalisation removes contrast and offset
    assert np.abs(f[0] - f[2]).mean() > 5 * np.abs(f[0] - f[1]).mean()  # a transposed face is another pattern


def test_face_mask_is_the_landmarks_hull():
    lm = np.zeros((68, 2))
    lm[:4] = [[50, 60], [200, 60], [200, 220], [50, 220]]
    lm[4:] = [125, 140]  # interior points change nothing
    m = checks.face_mask(lm)
    assert m.dtype == bool and m.shape == (checks.SIZE, checks.SIZE)
    assert abs(int(m.sum()) - 151 * 161) < 400 and m[140, 125] and not m[40, 125]


def _samples(n_groups: int, dim: int, shift: float, seed: int):
    """One real and one other sample per group (a person), both around the group's own offset."""
    rng = np.random.default_rng(seed)
    person = rng.normal(0, 1.0, (n_groups, dim))
    a = person + rng.normal(0, 1.0, (n_groups, dim))
    b = person + rng.normal(0, 1.0, (n_groups, dim)) + shift
    groups = np.arange(n_groups)
    return a, b, groups


def test_two_sample_auc_is_half_for_one_distribution_and_one_for_different_ones():
    a, b, g = _samples(60, 40, 0.0, seed=0)
    same = checks.two_sample_auc(a, b, g, g)
    assert abs(same - 0.5) < 0.15, same
    a, b, g = _samples(60, 40, 1.0, seed=0)
    assert checks.two_sample_auc(a, b, g, g) > 0.95
    # seeded shuffles of the fold assignment are deterministic, and give a close figure
    shuffled = [checks.two_sample_auc(a, b, g, g, seed=s) for s in (0, 0, 1)]
    assert shuffled[0] == shuffled[1] and abs(shuffled[2] - shuffled[0]) < 0.05


def test_two_sample_auc_keeps_each_group_in_one_fold():
    """Each person's faces are all of one kind and nearly identical, and the kinds share one distribution:
    grouped folds leave nothing to learn (~0.5); folds that split a person (every face its own group)
    let the classifier recognise the person, not the kind (~1)."""
    rng = np.random.default_rng(5)
    person = rng.normal(0, 1.0, (80, 200))
    faces = np.repeat(person, 2, axis=0) + rng.normal(0, 0.05, (160, 200))
    groups = np.repeat(np.arange(80), 2)
    a, b, ga, gb = faces[:80], faces[80:], groups[:80], groups[80:]
    grouped = checks.two_sample_auc(a, b, ga, gb)
    assert abs(grouped - 0.5) < 0.2, grouped
    assert checks.two_sample_auc(a, b, np.arange(80), np.arange(80, 160)) > 0.9


def test_reenact_command_rejects_an_unknown_generator():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "stage3_checks.py"), "reenact", "--generator", "nope"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "warp" in r.stderr and "Traceback" not in r.stderr


def test_reenactment_on_four_london_identities(london):
    """Driven by their own smiles' landmarks, 4 renders beat their neutral photos on PSNR and SSIM inside
    the face, share the real smile's crop geometry, and read as happier than the neutral photo; the
    summary holds every figure (`scripts/stage3_checks.py reenact` does all 40)."""
    from fewshot.analysis import Analyzer

    t0 = time.time()
    ids = ["002", "009", "030", "134"]
    lmc = checks.london_landmarks(ids, Analyzer(embed=False), london=london)
    faces: dict = {}
    df = checks.reenactment_rows(ids, lmc, "warp", faces=faces, london=london)
    assert df.id.tolist() == ids and (df.generator == "warp").all()
    assert (df.psnr_rendered > df.psnr_neutral).all() and (df.psnr_rendered.between(20, 40)).all(), df
    assert (df.ssim_rendered > df.ssim_neutral).all() and (df.ssim_rendered.between(0.6, 0.98)).all(), df
    assert (df.geometry_px < 0.05).all(), df.geometry_px
    assert (df.happy_real > df.happy_neutral).all() and df.happy_rendered.mean() > df.happy_neutral.mean(), df
    assert {k: len(v) for k, v in faces.items()} == {"real": 4, "rendered": 4, "neutral": 4}
    assert faces["real"][0].shape == (checks.REALISM_BOX, checks.REALISM_BOX) and faces["real"][0].dtype == np.uint8
    s = checks.realism_summary(df, faces, seeds=(0,)).iloc[0]
    assert s.identities == 4 and s.psnr_better == s.ssim_better == 4
    assert s.happy_ratio == pytest.approx(df.happy_rendered.mean() / df.happy_real.mean())
    assert 0 <= s.auc_rendered <= 1 and 0 <= s.auc_neutral <= 1 and s.auc_rendered_lo <= s.auc_rendered_hi
    assert time.time() - t0 < 60


def test_script_options_are_key_value_pairs():
    from fewshot.errors import ConfigError

    assert checks.parse_options(["mouth=model", "face_model=a=b.npz"]) == {"mouth": "model", "face_model": "a=b.npz"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        checks.parse_options(["mouth"])
