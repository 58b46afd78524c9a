"""Person profile: exact reprojection, pose round trips, pose re-estimation, and the smile check on the
real FRL London photos."""

from __future__ import annotations

import numpy as np
import pytest

from fewshot.io import read_image
from fewshot.landmarks import aligned_error, interocular, normalized_error
from fewshot.pose import estimate_pose
from generators import PersonProfile, fit_profile

YAWS, PITCHES = (-30, -15, 0, 15, 30), (-15, 0, 15)


@pytest.fixture(scope="module")
def profile(example_image) -> PersonProfile:
    return fit_profile(example_image)


def test_profile_fields_and_exact_reprojection(profile, example_image):
    assert profile.image is example_image and profile.landmarks.shape == (68, 2) and profile.shape3d.shape == (68, 3)
    assert profile.camera.shape == (3, 3) and 55 < profile.iod_mm < 75
    back = profile.landmarks_for(*profile.pose_degrees)
    assert np.abs(back - profile.landmarks).max() < 1e-6
    # frontalised at the source position: the nose tip stays put, the eye line is level
    front = profile.landmarks_for(0, 0, 0)
    assert np.linalg.norm(front[30] - profile.landmarks[30]) < 0.02 * interocular(profile.landmarks)
    assert abs(front[45, 1] - front[36, 1]) < 0.01 * interocular(front)


@pytest.mark.parametrize("dyaw", [-30, 30])
def test_pose_round_trip_within_one_percent(profile, dyaw):
    yaw, pitch, roll = profile.pose_degrees
    turned = profile.landmarks_for(yaw + dyaw, pitch, roll)
    assert normalized_error(turned, profile.landmarks) > 0.1  # it did turn
    # back: re-fit a profile from the turned landmarks at their pose, then turn back
    from fewshot.pose import HeadPose
    from generators.profile import deposed_shape

    pose = HeadPose(np.radians([pitch, yaw + dyaw, roll]), profile.pose.translation)
    refit = PersonProfile(profile.image, turned, pose, deposed_shape(turned, pose, profile.camera), profile.camera)
    back = refit.landmarks_for(yaw, pitch, roll)
    err = np.linalg.norm(back - profile.landmarks, axis=1).max() / interocular(profile.landmarks)
    assert err < 0.01


def test_estimated_pose_matches_requested_over_grid_bins(profile):
    errs = []
    for yaw in YAWS:
        for pitch in PITCHES:
            lm = profile.landmarks_for(yaw, pitch, 0, {"AU12": 3, "AU06": 3})
            est = np.degrees(estimate_pose(lm, profile.image_size).rotation)
            errs.append([est[1] - yaw, est[0] - pitch, est[2]])
    assert np.abs(errs).max() < 5.0


def test_batch_matches_single_and_aus_move_landmarks(profile):
    single = profile.landmarks_for(10, -5, 3, {"AU12": 4})
    inten = profile.motion.intensity_matrix({"AU12": 4})
    batch = profile.landmarks_batch(np.array([[10, -5, 3], [0, 0, 0]]), np.vstack([inten, inten]))
    assert np.allclose(batch[0], single)
    neutral = profile.landmarks_for(10, -5, 3, {})
    d = (single - neutral) / interocular(neutral)
    assert np.all(d[[48, 54], 1] < -0.03)  # corners up
    assert d[54, 0] - d[48, 0] > 0.03  # and apart


def test_fit_profile_from_several_faces_averages(example_image):
    from fewshot.analysis import Analyzer

    an = Analyzer(embed=False)
    f1 = an.analyze_image(example_image)[0]
    f2 = an.analyze_image(np.ascontiguousarray(example_image[:, ::-1]))[0]  # mirrored photo
    one = fit_profile([f1], image=example_image)
    two = fit_profile([f1, f2], image=example_image)
    assert not np.allclose(one.shape3d, two.shape3d)
    assert abs(two.iod_mm - one.iod_mm) / one.iod_mm < 0.05


# -- the real check: a requested smile vs the person's real smile --------------------------------------

SMILE = {"AU06": 3.0, "AU12": 3.0}  # C, C
LIPS_PART_GAP = 0.03  # inner-lip gap (inter-ocular units) above which the real smile codes AU25
AU25_INTENSITY = 2.0  # B: smiles part the lips slightly


def inner_lip_gap(lm: np.ndarray) -> float:
    return float((lm[[67, 66, 65], 1] - lm[[61, 62, 63], 1]).mean() / interocular(lm))


def london_smile_errors(london, analyzer) -> tuple[np.ndarray, np.ndarray]:
    pred_err, neutral_err = [], []
    for neutral_path in sorted((london / "neutral_front").glob("*_03.jpg")):
        ident = neutral_path.stem.split("_")[0]
        profile = fit_profile(analyzer.analyze_image(read_image(neutral_path), str(neutral_path))[:1])
        real = analyzer.analyze_image(read_image(london / "smiling_front" / f"{ident}_08.jpg"))[0].landmarks
        aus = dict(SMILE)
        if inner_lip_gap(real) > LIPS_PART_GAP:
            aus["AU25"] = AU25_INTENSITY
        pred = profile.landmarks_for(*profile.pose_degrees, aus)
        pred_err.append(aligned_error(pred, real))
        neutral_err.append(aligned_error(profile.landmarks, real))
    return np.array(pred_err), np.array(neutral_err)


def test_requested_smile_is_closer_to_the_real_smile_than_neutral(london, analyzer):
    pred, neutral = london_smile_errors(london, analyzer)
    assert len(pred) == 40
    better = float(np.mean(pred < neutral))
    print(f"London smile: predicted {pred.mean():.4f}, neutral {neutral.mean():.4f}, better for {better:.0%}")
    assert better >= 0.8
    assert pred.mean() < neutral.mean()
