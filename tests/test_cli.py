"""The `fewshot` command end to end: outputs, and one-line errors with exit code 2 on bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(p: subprocess.CompletedProcess, *needles: str) -> None:
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_detect_photo_writes_openface_csv_and_overlay(tmp_path):
    from fewshot.data import example_photo

    out = tmp_path / "faces.csv"
    p = run_cli("detect", str(example_photo()), "--out", str(out), "--overlay", str(tmp_path / "ov"))
    assert p.returncode == 0, p.stderr
    df = pd.read_csv(out)
    assert len(df) == 1 and df.success[0] == 1
    for c in ["frame", "face_id", "timestamp", "confidence", "success", "x_0", "y_67", "pose_Tx", "pose_Rz", "emb_127"]:
        assert c in df.columns
    assert (tmp_path / "ov" / "frame_000000.png").exists()
    # pose in radians, not degrees
    assert df[["pose_Rx", "pose_Ry", "pose_Rz"]].abs().max().max() < 0.5


def test_bad_inputs_one_line_exit_2(tmp_path):
    assert_one_line_error(run_cli("detect", str(tmp_path / "missing.jpg")), "missing.jpg", "no such file")
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 broken")
    assert_one_line_error(run_cli("detect", str(bad)), "corrupt.jpg", "not a readable image")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert_one_line_error(run_cli("detect", str(empty)), "empty.mp4")
    import cv2

    noface = tmp_path / "wall.png"
    cv2.imwrite(str(noface), np.full((240, 320, 3), 128, np.uint8))
    assert_one_line_error(run_cli("detect", str(noface)), "wall.png", "no face found")
    assert_one_line_error(run_cli("detect", str(noface), "--faces", "many"), "--faces")
    assert_one_line_error(run_cli("detect", str(noface), "--backend", "nope"), "unknown face backend 'nope'")
    assert not any(p.suffix == ".csv" for p in tmp_path.iterdir())


def test_several_faces_error_mode(tmp_path, example_image):
    import cv2

    two = np.concatenate([example_image, example_image[:, ::-1]], axis=1)
    path = tmp_path / "two.jpg"
    cv2.imwrite(str(path), two[..., ::-1])
    assert_one_line_error(run_cli("detect", str(path), "--faces", "error", "--out", str(tmp_path / "f.csv")), "two.jpg", "2 faces")
    p = run_cli("detect", str(path), "--faces", "all", "--no-embed", "--out", str(tmp_path / "f.csv"))
    assert p.returncode == 0, p.stderr
    assert pd.read_csv(tmp_path / "f.csv").face_id.tolist() == [0, 1]


def test_missing_weights_is_one_line(tmp_path, example_image):
    from fewshot.data import example_photo

    env = {k: v for k, v in os.environ.items() if k != "FEWSHOT_FAN_WEIGHTS"}
    p = subprocess.run([sys.executable, str(ROOT / "cli.py"), "detect", str(example_photo()), "--backend", "face-alignment"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert_one_line_error(p, "2DFAN4-11f355bf06.pth.tar", "never downloads")


@pytest.mark.shared
def test_detect_clip_cli(clip, tmp_path):
    out = tmp_path / "f.csv"
    p = run_cli("detect", str(clip), "--out", str(out))
    assert p.returncode == 0, p.stderr
    df = pd.read_csv(out)
    assert len(df) == 472 and df.success.mean() >= 0.9


@pytest.mark.shared
def test_interrupted_run_leaves_no_csv(clip, tmp_path):
    out = tmp_path / "f.csv"
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "detect", str(clip), "--out", str(out), "--embed"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(6.0)  # imports + a few dozen frames with embeddings (~10 frames/s)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
