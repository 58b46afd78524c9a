"""AU vocabulary, the FACS motion model, its plausibility constraints, and fitting fields from DISFA / BP4D
trees written in their real on-disk formats with a planted displacement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fewshot.errors import ConfigError, InputError
from fewshot.landmarks import MIRROR, STABLE
from fewshot.pose import mean_face_3d
from generators import AU_CODES, AU_VOCABULARY, au_code, default_motion_model, intensity_level, letter_to_intensity, parse_au_spec
from generators.motion import (
    LOWER_INNER_LIP,
    LOWER_LID,
    UPPER_INNER_LIP,
    UPPER_LID,
    MotionModel,
    fit_motion,
    fit_motion_table,
    load_motion_model,
)

VOCAB = [1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 24, 25, 26, 27, 43, 45]


def test_vocabulary_and_intensity_letters():
    assert list(AU_CODES) == [f"AU{n:02d}" for n in VOCAB]
    assert AU_VOCABULARY["AU12"].name == "lip corner puller" and AU_VOCABULARY["AU06"].region.startswith("cheeks")
    assert au_code(1) == au_code("au1") == au_code("AU01_r") == "AU01"
    with pytest.raises(ConfigError, match="AU16"):
        au_code(16)
    assert [letter_to_intensity(c) for c in "ABCDE"] == [1, 2, 3, 4, 5]
    with pytest.raises(ConfigError):
        letter_to_intensity("F")
    assert parse_au_spec("6C+12E+25") == {"AU06": 3.0, "AU12": 5.0, "AU25": 3.0}
    lv = intensity_level([0, 1, 2, 3, 4, 5])
    assert lv[0] == 0 and lv[-1] == 1 and np.all(np.diff(lv) > 0)


def test_default_fields_follow_facs_directions_and_are_symmetric():
    m = default_motion_model()
    f = m.fields
    assert f.shape == (20, 68, 3) and np.all(np.abs(f).sum(axis=(1, 2)) > 0)
    x0 = mean_face_3d()[:, 0]
    for k in range(len(m.aus)):  # mirror symmetry: x flips sign, y and z equal
        assert np.allclose(f[k, MIRROR, 0], -f[k, :, 0]) and np.allclose(f[k, MIRROR, 1:], f[k, :, 1:])
    au12 = f[m.index("AU12")]
    assert np.all(au12[[48, 54], 1] < 0) and np.all(au12[[48, 54], 0] * x0[[48, 54]] > 0)  # up and outward
    assert np.all(f[m.index("AU01")][[21, 22], 1] < 0) and np.all(f[m.index("AU04")][[21, 22], 1] > 0)
    assert f[m.index("AU26")][8, 1] > 0.1 and f[m.index("AU15")][48, 1] > 0
    assert np.all(f[m.index("AU06")][[40, 41, 46, 47], 1] < 0)  # lower lids pushed up


def test_constraints_keep_combined_aus_plausible():
    m = default_motion_model()
    shape = mean_face_3d()
    rng = np.random.default_rng(0)
    inten = np.where(rng.random((400, 20)) < 0.4, rng.integers(1, 6, (400, 20)), 0).astype(float)
    inten[:5] = 0
    inten[:5, [m.index("AU43"), m.index("AU10"), m.index("AU17")]] = 5  # lids and lips pushed past each other
    raw = m.deform(shape, inten, constrain=False)
    assert np.any(raw[:5, UPPER_LID, 1] > raw[:5, LOWER_LID, 1])  # the constraint has something to fix
    out = m.deform(shape, inten)
    assert np.all(out[:, UPPER_LID, 1] <= out[:, LOWER_LID, 1] + 1e-9)
    assert np.all(out[:, UPPER_INNER_LIP, 1] <= out[:, LOWER_INNER_LIP, 1] + 1e-9)
    opening = (inten[:, [m.index(a) for a in ("AU25", "AU26", "AU27")]] > 0).any(axis=1)
    gap = out[:, LOWER_INNER_LIP, 1] - out[:, UPPER_INNER_LIP, 1]
    assert np.allclose(gap[~opening], 0) and gap[opening].mean() > 1.0  # mm
    # AU43 at E closes the eye on the lower lid
    closed = m.deform(shape, m.intensity_matrix({"AU43": 5}))[0]
    assert np.allclose(closed[UPPER_LID, 1], closed[LOWER_LID, 1])


def test_model_save_load_roundtrip(tmp_path):
    m = default_motion_model()
    m2 = MotionModel(m.aus, m.fields * 2, "x", np.eye(len(m.aus)) * 0.3)
    m2.save(tmp_path / "m.npz")
    back = load_motion_model(tmp_path / "m.npz")
    assert back.aus == m.aus and np.allclose(back.fields, m2.fields) and np.allclose(back.cooccurrence, m2.cooccurrence)
    with pytest.raises(InputError, match="no such motion model"):
        load_motion_model(tmp_path / "absent.npz")
    (tmp_path / "bad.npz").write_text("nope")
    with pytest.raises(InputError, match="not a motion model"):
        load_motion_model(tmp_path / "bad.npz")


# -- fitting from planted data ---------------------------------------------------------------------------

DISFA66 = [i for i in range(68) if i not in (60, 64)]
BP4D49 = [i for i in range(17, 68) if i not in (60, 64)]
MOVING = np.setdiff1d(np.arange(17, 68), STABLE)  # planted motion avoids the alignment points


def _planted(aus: list[str], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    f = np.zeros((len(aus), 68, 2))
    f[:, MOVING] = rng.normal(0, 0.05, (len(aus), len(MOVING), 2))
    return f


def _frames(planted: np.ndarray, inten: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
    """Pixel landmarks of a face = the mean face (x, y) moved by the planted fields, with head motion."""
    base = mean_face_3d()[:, :2]
    iod = np.linalg.norm(base[36:42].mean(0) - base[42:48].mean(0))
    disp = np.einsum("ta,apc->tpc", intensity_level(inten), planted) * iod
    pts = base[None] + disp
    ang = rng.normal(0, 0.05, len(inten))
    rot = np.stack([np.cos(ang), -np.sin(ang), np.sin(ang), np.cos(ang)], -1).reshape(-1, 2, 2)
    shift = np.array([320, 260]) + rng.normal(0, 4, (len(inten), 2))
    return scale * np.einsum("tij,tpj->tpi", rot, pts) + shift[:, None] + rng.normal(0, 0.15, pts.shape)


def make_planted_disfa(root: Path, planted: np.ndarray, aus: list[int], subjects=("SN001", "SN002", "SN003"), n=160, seed=0):
    """A DISFA tree as documented: ActionUnit_Labels/SN001/SN001_au1.txt ('frame,intensity', 1-based) for
    the 12 coded AUs and Landmark_Points/SN001/tmp_frame_lm/SN001_{frame-1:04d}_lm.mat ('pts', 66x2)."""
    import scipy.io

    rng = np.random.default_rng(seed)
    coded = [1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26]
    for k, subj in enumerate(subjects):
        inten = np.where(rng.random((n, len(aus))) < 0.45, rng.integers(1, 6, (n, len(aus))), 0)
        lm = _frames(planted, inten, rng, scale=2.0 + 0.3 * k)
        lab = root / "ActionUnit_Labels" / subj
        lab.mkdir(parents=True, exist_ok=True)
        for au in coded:
            vals = inten[:, aus.index(au)] if au in aus else np.zeros(n, int)
            (lab / f"{subj}_au{au}.txt").write_text("".join(f"{f},{v}\n" for f, v in zip(range(1, n + 1), vals)))
        lmd = root / "Landmark_Points" / subj / "tmp_frame_lm"
        lmd.mkdir(parents=True, exist_ok=True)
        for f in range(1, n + 1):
            scipy.io.savemat(lmd / f"{subj}_{f - 1:04d}_lm.mat", {"pts": lm[f - 1][DISFA66]})


def make_planted_bp4d(root: Path, planted: np.ndarray, occ_aus: list[int], int_aus: list[int], subjects=("F001", "M001"), n=160, seed=0):
    """A BP4D tree as documented: AUCoding/AU_OCC/F001_T1.csv (header 0,1..27), AUCoding/AU_INT/AU06/
    F001_T1_AU06.csv (no header) and 2DFeatures/F001_T1.mat (MATLAB v7.3, fit/pred object references to
    2x49 arrays). Occurrence-only AUs are planted at intensity C (the fitter's reading of '1')."""
    from tests.fixtures_au import write_matlab73_landmark_track

    rng = np.random.default_rng(seed)
    start = 30
    aus = occ_aus + int_aus
    for k, subj in enumerate(subjects):
        frames = np.arange(start, start + n)
        inten = np.zeros((n, len(aus)), int)
        on = rng.random((n, len(aus))) < 0.45
        inten[:, : len(occ_aus)] = np.where(on[:, : len(occ_aus)], 3, 0)
        inten[:, len(occ_aus):] = np.where(on[:, len(occ_aus):], rng.integers(1, 6, (n, len(int_aus))), 0)
        lm = _frames(planted, inten, rng, scale=2.2 + 0.2 * k)
        occ = np.zeros((n, 27), int)
        for j, au in enumerate(aus):
            occ[:, au - 1] = inten[:, j] > 0
        occ_dir = root / "AUCoding" / "AU_OCC"
        occ_dir.mkdir(parents=True, exist_ok=True)
        (occ_dir / f"{subj}_T1.csv").write_text(",".join(map(str, range(28))) + "\n"
                                               + "".join(f"{f}," + ",".join(map(str, r)) + "\n" for f, r in zip(frames, occ)))
        for au in (6, 10, 12, 14, 17):
            d = root / "AUCoding" / "AU_INT" / f"AU{au:02d}"
            d.mkdir(parents=True, exist_ok=True)
            vals = inten[:, aus.index(au)] if au in int_aus else np.zeros(n, int)
            (d / f"{subj}_T1_AU{au:02d}.csv").write_text("".join(f"{f},{v}\n" for f, v in zip(frames, vals)))
        track = [lm[0][BP4D49]] * (start - 1) + [p[BP4D49] for p in lm]
        write_matlab73_landmark_track(root / "2DFeatures" / f"{subj}_T1.mat", track)


def _recovered_error(model, planted, aus, points) -> float:
    idx = [model.index(a) for a in aus]
    return float(np.abs(model.fields[idx][:, points, :2] - planted[:, points]).max())


def test_fit_motion_recovers_planted_field_disfa(tmp_path):
    from experiments.datasets import load_dataset

    aus = [1, 6, 12, 25]
    codes = [f"AU{a:02d}" for a in aus]
    planted = _planted(codes, 1)
    make_planted_disfa(tmp_path / "DISFA", planted, aus)
    table = load_dataset("disfa", tmp_path / "DISFA", aus="all", frames="none").table
    model = fit_motion_table(table, ridge=0.01)
    pts = np.intersect1d(MOVING, DISFA66)
    assert _recovered_error(model, planted, codes, pts) < 0.006  # inter-ocular units (planted sd 0.05)
    prior = default_motion_model()
    assert _recovered_error(prior, planted, codes, pts) > 0.05  # so the test can fail
    # DISFA lacks the inner mouth corners: they keep the FACS default; depth always does
    assert np.allclose(model.fields[model.index("AU12")][[60, 64]], prior.fields[prior.index("AU12")][[60, 64]])
    assert np.allclose(model.fields[..., 2], prior.fields[..., 2])
    # an AU that never occurs keeps its prior field
    assert np.allclose(model.fields[model.index("AU04")], prior.fields[prior.index("AU04")], atol=1e-6)
    assert model.cooccurrence is not None and 0.3 < model.cooccurrence[model.index("AU12"), model.index("AU12")] < 0.6


def test_fit_motion_recovers_planted_field_bp4d(tmp_path):
    from experiments.datasets import load_dataset

    occ, ints = [1, 4], [6, 12, 17]
    codes = [f"AU{a:02d}" for a in occ + ints]
    planted = _planted(codes, 2)
    make_planted_bp4d(tmp_path / "BP4D", planted, occ, ints)
    table = load_dataset("bp4d", tmp_path / "BP4D", frames="none").table
    model = fit_motion_table(table, ridge=0.01)
    pts = np.intersect1d(MOVING, BP4D49)
    assert _recovered_error(model, planted, codes, pts) < 0.006
    assert _recovered_error(default_motion_model(), planted, codes, pts) > 0.05


def test_fit_motion_cli(tmp_path):
    from cli import app

    aus = [6, 12]
    planted = _planted(["AU06", "AU12"], 3)
    make_planted_disfa(tmp_path / "DISFA", planted, aus, subjects=("SN001", "SN002"), n=80)
    res = CliRunner().invoke(app, ["fit-motion", "--dataset", "disfa", "--root", str(tmp_path / "DISFA"), "--out", str(tmp_path / "m.npz")])
    assert res.exit_code == 0, res.output
    model = load_motion_model(tmp_path / "m.npz")
    assert _recovered_error(model, planted, ["AU06", "AU12"], np.intersect1d(MOVING, DISFA66)) < 0.02
    bad = CliRunner().invoke(app, ["fit-motion", "--dataset", "disfa", "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.npz")])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    other = CliRunner().invoke(app, ["fit-motion", "--dataset", "ck+", "--root", str(tmp_path), "--out", str(tmp_path / "x.npz")])
    assert other.exit_code == 2 and "disfa or bp4d" in other.output


def test_fit_motion_checks_shapes():
    with pytest.raises(ConfigError, match="label rows"):
        fit_motion([(np.zeros((68, 2)), np.zeros((3, 68, 2)), np.zeros((2, 1)))], ["AU12"])
