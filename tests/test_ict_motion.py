"""The AU motion model derived from the ICT-FaceKit expression shapes (generators.facemodel.ict_motion_model)."""

from __future__ import annotations

import numpy as np
import pytest

from fewshot.errors import ConfigError
from fewshot.landmarks import interocular

UPPER_LID, LOWER_LID = [37, 38, 43, 44], [41, 40, 47, 46]


@pytest.fixture(scope="module")
def face_model():
    from generators.facemodel import load_face_model

    return load_face_model()


@pytest.fixture(scope="module")
def motion(face_model):
    from generators.facemodel import ict_motion_model

    return ict_motion_model(face_model)


def field(motion, au: str) -> np.ndarray:
    return motion.fields[motion.index(au)]


def test_one_au_map_covers_the_vocabulary_with_the_documented_factors(face_model):
    from generators.aus import AU_CODES

    assert set(AU_CODES) <= set(face_model.au_shapes)
    w = face_model.expression_weights_for_aus({"AU26": 5, "au25": 3, "43": 4, "AU23": 5})
    assert w[face_model.expression_index("jawOpen")] == pytest.approx(0.6)
    assert w[face_model.expression_index("mouthLowerDown_L")] == pytest.approx(0.3 * 0.5)
    assert w[face_model.expression_index("eyeBlink_R")] == pytest.approx(0.775)
    assert w[face_model.expression_index("mouthPress_L")] == pytest.approx(0.5)
    # AU27 (jawOpen at 1) and AU26 (at 0.6) share a shape: the larger weight wins
    assert face_model.expression_weights_for_aus({"AU26": 5, "AU27": 5})[face_model.expression_index("jawOpen")] == 1.0
    with pytest.raises(ConfigError, match="AU19"):
        face_model.expression_weights_for_aus({"AU19": 2})


def test_fields_are_landmark_differences_in_interocular_units(motion, face_model):
    from generators.aus import AU_CODES

    assert motion.aus == AU_CODES and motion.fields.shape == (len(AU_CODES), 68, 3)
    assert motion.source == "ICT-FaceKit blendshapes (MIT)" and list(motion.meta["facs_default_aus"]) == []
    neutral = face_model.landmarks().astype(float)
    iod = interocular(neutral[:, :2])
    assert 55 < iod < 75 and float(motion.meta["iod_mm"]) == pytest.approx(iod)
    smile = face_model.landmarks(None, face_model.expression_weights_for_aus({"AU12": 5})).astype(float)
    assert np.allclose(field(motion, "AU12"), (smile - neutral) / iod)
    # deforming the model's own neutral landmarks at E reproduces the shape's landmarks
    assert np.allclose(motion.deform(neutral, motion.intensity_matrix({"AU12": 5}), constrain=False)[0], smile, atol=1e-4)


def test_au12_pulls_the_mouth_corners_out_and_up(motion):
    f = field(motion, "AU12")
    # 48 is on the image left (x < 0): outward is -x there, +x at 54; up is -y
    assert f[48, 0] < -0.05 and f[54, 0] > 0.05 and f[48, 0] == pytest.approx(-f[54, 0], abs=1e-3)
    assert -0.3 < f[48, 1] < -0.08 and f[54, 1] == pytest.approx(f[48, 1], abs=1e-3)
    assert np.linalg.norm(f[48, :2]) > np.linalg.norm(f[8, :2]) + 0.1  # the chin stays put


def test_au26_lowers_chin_and_lower_lip_not_the_upper_lip(motion):
    f = field(motion, "AU26")
    assert 0.1 < f[8, 1] < 0.5 and f[57, 1] > 0.1 and f[66, 1] > 0.1
    assert abs(f[51, 1]) < f[57, 1] / 4
    assert field(motion, "AU27")[8, 1] > f[8, 1]  # the stretched mouth opens further


def test_brow_aus(motion):
    au1, au2, au4 = field(motion, "AU01"), field(motion, "AU02"), field(motion, "AU04")
    assert au1[21, 1] < -0.04 and au1[22, 1] < -0.04 and au1[21, 1] < au1[17, 1]  # inner brow up, most
    assert au2[17, 1] < -0.04 and au2[26, 1] < -0.04 and au2[17, 1] < au2[21, 1]  # outer brow up, more than inner
    assert au4[21, 1] > 0.01 and au4[22, 1] > 0.01  # lowered
    assert au4[21, 0] > 0.01 and au4[22, 0] < -0.01  # inner brows drawn towards the midline (x = 0)


def test_au43_closes_the_lids(motion, face_model):
    neutral = face_model.landmarks().astype(float)
    closed = motion.deform(neutral, motion.intensity_matrix({"AU43": 5}), constrain=False)[0]
    gap0 = neutral[LOWER_LID, 1] - neutral[UPPER_LID, 1]
    gap = closed[LOWER_LID, 1] - closed[UPPER_LID, 1]
    assert (gap0 > 5).all() and (np.abs(gap) < 0.15 * gap0).all()


def test_save_load_roundtrip_and_shipped_file_is_current(motion, tmp_path):
    from generators.facemodel import MODEL_PATH
    from generators.motion import load_motion_model

    motion.save(tmp_path / "ict.npz")
    back = load_motion_model(tmp_path / "ict.npz")
    assert back.aus == motion.aus and back.source == motion.source and np.array_equal(back.fields, motion.fields)
    assert list(back.meta["derived_aus"]) == list(motion.aus)
    shipped = load_motion_model(MODEL_PATH.with_name("ict_motion.npz"))
    assert shipped.source == motion.source and np.allclose(shipped.fields, motion.fields)


def test_a_profile_with_the_ict_motion_renders(motion, example_image):
    from generators import default_motion_model, design_grid, fit_profile, generate

    profile = fit_profile(example_image, motion=motion)
    grid = design_grid(profile, n=None, strategy="factorial", aus=["AU12", "AU26"], levels=(0, 4), pose_bins=[(0.0, 0.0, 0.0)],
                       pose_jitter=0.0, roll_jitter=0.0)
    batch = generate(profile, grid, size=64)
    assert batch.images.shape == (len(grid), 64, 64, 3) and batch.images.dtype == np.uint8
    facs = profile.with_motion(default_motion_model())
    smile = {"AU12": 4.0}
    ict_lm, facs_lm = profile.landmarks_for(0, 0, 0, smile), facs.landmarks_for(0, 0, 0, smile)
    assert not np.allclose(ict_lm, facs_lm)
