"""Face analysis on real faces: the shipped example photo (always) and ../shared/data (skipped if absent)."""

from __future__ import annotations

import numpy as np
import pytest

from fewshot.analysis import FACE_COLUMNS, Analyzer, analyze
from fewshot.errors import ConfigError, MissingWeightsError, MultipleFacesError, NoFaceError
from fewshot.io import read_image
from fewshot.landmarks import eye_line_roll, normalized_error

from .conftest import read_tem

# FRL London 189-point WebMorph template -> 68-point iBUG counterparts (0-based on both sides).
# Identified by anatomy and checked by nearest-point search over the 40 neutral photos.
FRL_TO_68 = {
    18: 36,  # right eye outer corner
    22: 39,  # right eye inner corner
    23: 42,  # left eye inner corner
    27: 45,  # left eye outer corner
    87: 48,  # right mouth corner
    93: 54,  # left mouth corner
    55: 33,  # subnasale (base of the nose)
    129: 8,  # chin (menton)
}
FRL_PUPILS = (0, 1)  # compared with the centre of each 68-point eye contour


def frl_errors(lm: np.ndarray, tem: np.ndarray) -> float:
    """Mean distance between matched points / template inter-pupil distance."""
    ours = [lm[j] for j in FRL_TO_68.values()] + [lm[36:42].mean(0), lm[42:48].mean(0)]
    ref = [tem[i] for i in FRL_TO_68] + [tem[FRL_PUPILS[0]], tem[FRL_PUPILS[1]]]
    d = np.linalg.norm(np.array(ours) - np.array(ref), axis=1)
    return float(d.mean() / np.linalg.norm(tem[1] - tem[0]))


def test_example_photo_one_face(analyzer, example_image):
    faces = analyzer.analyze_image(example_image)
    assert len(faces) == 1
    f = faces[0]
    assert f.landmarks.shape == (68, 2) and 0.5 < f.confidence <= 1
    # a frontal studio photo
    assert np.all(np.abs(np.degrees(f.pose.rotation)) < 12)
    assert f.pose.translation[2] > 100  # mm in front of the camera


def test_embeddings_same_person_closer_than_different(example_image, london):
    from fewshot.data import example_photo

    an = Analyzer(embed=True)
    a = an.analyze_image(example_image)[0].embedding
    b = an.analyze_image(read_image(example_photo("smiling")))[0].embedding
    other = an.analyze_image(read_image(london / "neutral_front" / "002_03.jpg"))[0].embedding
    assert a.shape == (128,)
    assert np.linalg.norm(a - b) < 0.6 < np.linalg.norm(a - other)


def test_several_faces_modes(example_image):
    two = np.concatenate([example_image, example_image[:, ::-1]], axis=1)
    with pytest.raises(MultipleFacesError, match="2 faces"):
        Analyzer(faces="error", embed=False).analyze_image(two)
    assert len(Analyzer(faces="all", embed=False).analyze_image(two)) == 2
    assert len(Analyzer(faces="largest", embed=False).analyze_image(two)) == 1
    with pytest.raises(ConfigError):
        Analyzer(faces="some")  # type: ignore[arg-type]


def test_no_face_is_a_clear_error(tmp_path):
    rng = np.random.default_rng(1)
    import cv2

    cv2.imwrite(str(tmp_path / "noise.png"), rng.integers(0, 255, (200, 300, 3), dtype=np.uint8))
    with pytest.raises(NoFaceError, match="noise.png: no face found"):
        analyze(tmp_path / "noise.png", embed=False)


def test_weights_backends_fail_fast_without_weights(monkeypatch, tmp_path):
    monkeypatch.delenv("FEWSHOT_FAN_WEIGHTS", raising=False)
    monkeypatch.delenv("FEWSHOT_INSIGHTFACE_DIR", raising=False)
    with pytest.raises(MissingWeightsError, match="2DFAN4-11f355bf06.pth.tar.*FEWSHOT_FAN_WEIGHTS"):
        Analyzer(backend="face-alignment")
    with pytest.raises(MissingWeightsError, match="det_10g.onnx.*FEWSHOT_INSIGHTFACE_DIR"):
        Analyzer(backend="insightface")
    monkeypatch.setenv("FEWSHOT_INSIGHTFACE_DIR", str(tmp_path))
    with pytest.raises(MissingWeightsError, match="lacks det_10g.onnx, 1k3d68.onnx, w600k_r50.onnx"):
        Analyzer(backend="insightface")
    bogus = tmp_path / "fan.pth.tar"
    bogus.write_bytes(b"not weights")
    with pytest.raises(MissingWeightsError, match="not a 2D-FAN-4 state dict"):
        Analyzer(backend="face-alignment", backend_options={"weights": str(bogus)})


def test_mediapipe_backend_when_installed(example_image):
    pytest.importorskip("mediapipe", reason="optional extra fewshot[mediapipe] not installed")
    from fewshot.backends.mediapipe_backend import _import_mediapipe

    try:
        _import_mediapipe()
    except Exception as e:  # noqa: BLE001
        pytest.skip(str(e))
    f_mp = Analyzer(backend="mediapipe", embed=False).analyze_image(example_image)[0]
    f_dl = Analyzer(backend="dlib", embed=False).analyze_image(example_image)[0]
    assert f_mp.dense.shape == (478, 3)
    assert normalized_error(f_mp.landmarks, f_dl.landmarks) < 0.08


@pytest.mark.shared
def test_landmark_accuracy_on_london_templates(london, analyzer):
    errs = {}
    for jpg in sorted((london / "neutral_front").glob("*.jpg")):
        lm = analyzer.analyze_image(read_image(jpg))[0].landmarks
        errs[jpg.stem] = frl_errors(lm, read_tem(jpg.with_suffix(".tem")))
    assert len(errs) == 40
    bad = {k: round(v, 3) for k, v in errs.items() if v >= 0.08}
    assert not bad, f"normalized error >= 0.08: {bad}"
    print(f"\nFRL London mean normalized error {np.mean(list(errs.values())):.4f}, max {max(errs.values()):.4f}")


@pytest.mark.shared
def test_head_roll_matches_lisa_eye_line(shared, analyzer):
    for jpg in sorted((shared / "lisa_cc0").glob("*.jpg")):
        tem = read_tem(jpg.with_suffix(".tem"))
        truth = np.degrees(np.arctan2(tem[1, 1] - tem[0, 1], tem[1, 0] - tem[0, 0]))
        face = analyzer.analyze_image(read_image(jpg))[0]
        assert abs(np.degrees(face.pose.rotation[2]) - truth) < 3.0, jpg.name
        assert abs(np.degrees(eye_line_roll(face.landmarks)) - truth) < 3.0, jpg.name


@pytest.mark.shared
def test_clip_one_row_per_frame(clip, tmp_path):
    res = Analyzer(embed=False).analyze(clip, progress=False)
    assert len(res.table) == res.n_frames == 472
    assert list(res.table.columns) == FACE_COLUMNS
    assert res.table.success.mean() >= 0.9
    assert res.table.frame.tolist() == list(range(472))
    assert res.table.timestamp.iloc[-1] == pytest.approx(471 / 23.976, abs=0.01)
    # tracking and full-frame search agree on the landmarks
    full = Analyzer(embed=False, track=False)
    from fewshot.io import FrameSource

    frames = {f.index: f for f in FrameSource(clip) if f.index in (100, 300)}
    for i, fr in frames.items():
        lm_full = full.analyze_frame(fr)[0].landmarks
        row = res.table.iloc[i]
        lm_track = np.stack([row[[f"x_{k}" for k in range(68)]].to_numpy(float), row[[f"y_{k}" for k in range(68)]].to_numpy(float)], 1)
        assert normalized_error(lm_track, lm_full) < 0.05


@pytest.mark.shared
def test_group_photo_all_faces(shared):
    faces = Analyzer(faces="all", embed=False).analyze_image(read_image(shared / "expression_photos" / "group.jpeg"))
    assert len(faces) >= 3  # the two people looking down are not frontal faces
    assert [f.face_id for f in faces] == list(range(len(faces)))


@pytest.mark.shared
def test_selection_prefers_neutral_photos(london, tmp_path):
    """Closeness to neutral: in a folder of a person's neutral and smiling photo, the neutral wins."""
    import shutil

    from fewshot.selection import score_frames

    wins = 0
    ids = sorted(p.stem.split("_")[0] for p in (london / "neutral_front").glob("*.jpg"))[:20]
    an = Analyzer(embed=False)
    for i in ids:
        d = tmp_path / i
        d.mkdir()
        shutil.copy(london / "neutral_front" / f"{i}_03.jpg", d / "a.jpg")
        shutil.copy(london / "smiling_front" / f"{i}_08.jpg", d / "b.jpg")
        s = score_frames(an.analyze(d, progress=False))
        wins += int(s.residual.iloc[0] < s.residual.iloc[1])
    assert wins >= 18, f"neutral photo judged closer to neutral for only {wins}/20 identities"


@pytest.mark.shared
def test_select_frames_on_clip(clip):
    from fewshot.selection import select_frames

    res = Analyzer(embed=False).analyze(clip, progress=False)
    best = select_frames(res, 5)
    assert len(best) == 5
    assert best.score.is_monotonic_decreasing
    fr = sorted(best.frame)
    assert all(b - a >= 12 for a, b in zip(fr, fr[1:]))
    # the laughing end of the clip (frames > 400) is not picked as a neutral reference
    assert (best.frame < 400).all()
