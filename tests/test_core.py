"""Unit tests on small arrays: registry, landmark geometry, pose maths, atomic writes, frame sources."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fewshot.errors import ConfigError, InputError
from fewshot.io import FrameSource, atomic_path, read_image, write_table
from fewshot.landmarks import MIRROR, apply_affine, eye_line_roll, interocular, normalized_error, similarity_transform
from fewshot.pose import HeadPose, camera_matrix, estimate_pose, euler_to_matrix, matrix_to_euler, mean_face_3d, project
from fewshot.registry import Registry


def test_registry_names_and_unknown():
    r: Registry[int] = Registry("widget")
    r.register("a", "first")(lambda: 1)
    assert r.create("a") == 1 and r.names() == ["a"] and "a" in r
    with pytest.raises(ConfigError, match="unknown widget 'b'; choose one of: a"):
        r.create("b")
    with pytest.raises(ValueError):
        r.register("a")(lambda: 2)


def test_mirror_is_an_involution_and_mean_face_symmetric():
    assert np.array_equal(MIRROR[MIRROR], np.arange(68))
    m = mean_face_3d()
    assert m.shape == (68, 3)
    np.testing.assert_allclose(m[MIRROR] * [-1, 1, 1], m, atol=1e-6)
    assert abs(np.linalg.norm(m[45, :2] - m[36, :2]) - 90.0) < 1e-6
    # nose tip is the closest point to the camera
    assert m[:, 2].argmin() == 30


def test_similarity_transform_recovers_known_transform():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(20, 2))
    a = np.deg2rad(25)
    m = np.array([[1.7 * np.cos(a), -1.7 * np.sin(a), 3.0], [1.7 * np.sin(a), 1.7 * np.cos(a), -2.0]])
    np.testing.assert_allclose(similarity_transform(src, apply_affine(m, src)), m, atol=1e-9)


def test_normalized_error_and_roll():
    lm = mean_face_3d()[:, :2] + 300
    assert normalized_error(lm, lm) == 0
    shifted = lm + [interocular(lm) * 0.1, 0]
    assert normalized_error(shifted, lm) == pytest.approx(0.1)
    a = np.deg2rad(12)
    rot = (lm - lm.mean(0)) @ np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]).T
    assert np.degrees(eye_line_roll(rot)) == pytest.approx(12, abs=1e-6)


@pytest.mark.parametrize("angles", [(0, 0, 0), (10, -20, 5), (-15, 30, -25), (5, 40, 60)])
def test_euler_round_trip(angles):
    r = np.deg2rad(angles)
    np.testing.assert_allclose(matrix_to_euler(euler_to_matrix(*r)), r, atol=1e-12)


@pytest.mark.parametrize("deg", [(0, 0, 0), (10, 0, 0), (0, 25, 0), (0, 0, -20), (-8, -30, 12)])
def test_pnp_recovers_pose_of_projected_mean_face(deg):
    K = camera_matrix(640, 480)
    truth = HeadPose(np.deg2rad(deg), np.array([20.0, -10.0, 600.0]))
    lm = project(mean_face_3d(), truth, K)
    est = estimate_pose(lm, (640, 480))
    np.testing.assert_allclose(np.degrees(est.rotation), deg, atol=0.5)
    np.testing.assert_allclose(est.translation, truth.translation, atol=5.0)
    # the sign convention: positive roll rotates the eye line clockwise in the image (y down)
    if deg[0] == deg[1] == 0:
        assert np.degrees(eye_line_roll(lm)) == pytest.approx(deg[2], abs=3.0)


def test_read_image_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "nope.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_image(tmp_path / "empty.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(InputError, match="not a readable image"):
        read_image(tmp_path / "bad.jpg")


def test_read_image_is_rgb(tmp_path):
    img = np.zeros((10, 12, 3), np.uint8)
    img[..., 0] = 200  # red in RGB
    cv2.imwrite(str(tmp_path / "r.png"), img[..., ::-1])
    back = read_image(tmp_path / "r.png")
    assert back.shape == (10, 12, 3) and back[0, 0, 0] == 200 and back[0, 0, 2] == 0


def _write_video(path, n, size=(64, 48)):
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, size)
    for i in range(n):
        vw.write(np.full((size[1], size[0], 3), i * 20 % 255, np.uint8))
    vw.release()


def test_frame_source_video_and_folder(tmp_path):
    _write_video(tmp_path / "v.mp4", 5)
    frames = list(FrameSource(tmp_path / "v.mp4"))
    assert [f.index for f in frames] == list(range(5))
    assert frames[1].timestamp == pytest.approx(0.1)
    (tmp_path / "d").mkdir()
    for i in range(3):
        cv2.imwrite(str(tmp_path / "d" / f"{i}.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "d" / "notes.txt").write_text("x")
    assert len(FrameSource(tmp_path / "d")) == 3


def test_frame_source_bad_inputs(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(InputError, match="empty.mp4"):
        list(FrameSource(tmp_path / "empty.mp4"))
    (tmp_path / "junk.mp4").write_bytes(b"\x00" * 1000)
    with pytest.raises(InputError, match="junk.mp4"):
        list(FrameSource(tmp_path / "junk.mp4"))
    (tmp_path / "e").mkdir()
    with pytest.raises(InputError, match="holds no images"):
        FrameSource(tmp_path / "e")
    with pytest.raises(InputError, match="no such file"):
        FrameSource(tmp_path / "missing")


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    import pandas as pd

    write_table(pd.DataFrame({"a": [1, 2]}), target)
    assert target.read_text().splitlines() == ["a", "1", "2"]
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]
