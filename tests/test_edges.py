"""A new user's bad-input battery: every bad input gets one line on stderr naming the file, exit code 2,
no traceback, and nothing already on disk is lost or replaced."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from tests.fixtures_au import make_bp4d_tree

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def photo() -> Path:
    from fewshot.data import example_photo

    return example_photo()


def invoke(*args: str):
    from cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def one_error_line(stderr: str, *needles: str) -> str:
    """The single stderr line of a refused command (asserting there is nothing else, no traceback)."""
    lines = [ln for ln in stderr.replace("\r", "\n").splitlines() if ln.strip() and not re.search(r"\d+%\|", ln)]  # minus progress bars
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def refused(res, *needles: str) -> str:
    assert res.exit_code == 2, (res.exit_code, res.output)
    return one_error_line(res.stderr, *needles)


# -- 1. synthesize --size / --chunk ------------------------------------------------------------------
@pytest.mark.parametrize("option, value", [("--size", "0"), ("--size", "-5"), ("--size", "7"), ("--size", "5000"), ("--chunk", "0"),
                                           ("--chunk", "100000")])  # fmt: skip
def test_synthesize_bad_size_or_chunk_is_refused_before_any_file(tmp_path, photo, option, value):
    out = tmp_path / "person.h5"
    # the grid does not even exist: the options are checked before anything is read or written
    res = invoke("synthesize", "--grid", tmp_path / "missing.parquet", "--photo", photo, "--out", out, option, value, "--no-progress")
    line = refused(res, "person.h5", f"{option} {value}", "allowed")
    assert ("32..1024" if option == "--size" else "1..1024") in line
    assert list(tmp_path.iterdir()) == []  # no stub store that would block the right command


def test_synthesize_bad_size_keeps_an_existing_store(tmp_path, photo):
    out = tmp_path / "person.h5"
    out.write_bytes(b"an earlier store")
    refused(invoke("synthesize", "--grid", tmp_path / "g.parquet", "--photo", photo, "--out", out, "--size", "0"), "person.h5")
    assert out.read_bytes() == b"an earlier store"


# -- 2. --out naming a folder ------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["detect", "design", "predict", "select-frames", "synthesize"])
def test_out_naming_a_folder_is_refused_before_work(tmp_path, photo, command):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    args = {
        "detect": ["detect", photo],
        "design": ["design", "--photo", photo],
        "predict": ["predict", photo],
        "select-frames": ["select-frames", photo],
        "synthesize": ["synthesize", "--grid", tmp_path / "g.parquet", "--photo", photo],
    }[command]
    line = refused(invoke(*args, "--out", folder), "results", "is a folder")
    assert "corrupt" not in line and "HDF5" not in line
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"] and (folder / "keep.txt").read_text() == "mine"


def test_design_sheet_naming_a_folder_is_refused(tmp_path, photo):
    refused(invoke("design", "--photo", photo, "--out", tmp_path / "g.csv", "--sheet", tmp_path), str(tmp_path), "--sheet")
    assert not (tmp_path / "g.csv").exists()


# -- 3. experiment report on something else; a corrupt cell file -------------------------------------
@pytest.mark.parametrize("kind", ["text.parquet", "other.parquet", "other.csv", "binary.csv"])
def test_report_on_a_non_results_file(tmp_path, kind):
    path = tmp_path / kind
    if kind == "text.parquet":
        path.write_text("these are not the results\n")
    elif kind == "other.parquet":
        pd.DataFrame({"frame": [0, 1], "AU12": [0.1, 0.9]}).to_parquet(path)
    elif kind == "other.csv":
        pd.DataFrame({"frame": [0, 1], "AU12": [0.1, 0.9]}).to_csv(path, index=False)
    else:
        path.write_bytes(bytes(range(256)) * 4)
    refused(invoke("experiment", "report", path, "--out", tmp_path / "rep"), kind, "results")
    assert not (tmp_path / "rep").exists()


def _fixture_config(path: Path, bp4d_root: Path, out: Path, **over) -> Path:
    cfg = {
        "name": "edges",
        "out": str(out),
        "datasets": [{"name": "bp4d", "root": str(bp4d_root), "folds": [3], "subjects": "test"}],
        "k": [2],
        "generators": ["none"],
        "strategies": ["generic"],
        "seeds": [0],
        "base": {"train": {"epochs": 1, "crop_size": 48, "batch_size": 8, "backbone_config": {"width": 4, "out_dim": 16},
                           "replay_size": 8, "patience": 1, "threads": 1, "seed": 0}},  # fmt: skip
        "protocol": {"max_other_frames": 20},
    }
    cfg.update(over)
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_corrupt_cell_file_is_run_again(tmp_path):
    from experiments.runner import read_log, run_experiment

    root = tmp_path / "BP4D"
    make_bp4d_tree(root, subjects=("F001", "M001", "F003", "M002"), tasks=("T1",), n_frames=8, seed=0)
    cfg = _fixture_config(tmp_path / "cfg.yaml", root, tmp_path / "run")
    first = run_experiment(cfg)
    assert len(first.ran) == 2 and not first.failed
    cells = sorted((tmp_path / "run" / "cells").glob("*.parquet"))
    bad, good = cells
    good_bytes = good.read_bytes()
    bad.write_bytes(b"PAR1 cut short by a full disk")
    second = run_experiment(cfg)
    assert second.ran == [bad.stem] and second.skipped == [good.stem] and not second.failed
    assert good.read_bytes() == good_bytes  # the good cell is not redone
    df = pd.read_parquet(second.results)
    assert sorted(df.cell_id.unique()) == sorted([bad.stem, good.stem])
    assert bad.stem in set(read_log(tmp_path / "run").query("event == 'unreadable'").cell)


# -- 4. outputs get the normal umask permissions -----------------------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_written_csv_has_umask_permissions(tmp_path, umask):
    from fewshot.io import write_table

    old = os.umask(umask)
    try:
        write_table(pd.DataFrame({"a": [1]}), tmp_path / "faces.csv")
    finally:
        os.umask(old)
    assert (tmp_path / "faces.csv").stat().st_mode & 0o777 == 0o666 & ~umask


# -- 5. messages -------------------------------------------------------------------------------------
def test_interrupted_synthesize_says_the_store_is_kept(tmp_path, photo):
    from typer import Exit

    from cli import friendly
    from fewshot.errors import Interrupted
    from generators import design_grid, fit_profile, open_synthetic, synthesize

    profile = fit_profile(photo)
    grid = design_grid(profile, n=12, seed=0)
    out = tmp_path / "person.h5"

    def ctrl_c(chunk: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(Interrupted) as caught:
        synthesize(profile, grid, out, size=32, chunk=4, progress=False, on_chunk=ctrl_c)
    msg = str(caught.value)
    assert "person.h5" in msg and "keeps 1 of 3" in msg and "resume" in msg and "removed" not in msg
    assert int(open_synthetic(out, allow_partial=True).attrs["chunk"]) == 4  # the store is still there

    @friendly
    def command() -> None:
        raise Interrupted(msg)

    import io
    from contextlib import redirect_stderr

    err = io.StringIO()
    with redirect_stderr(err), pytest.raises(Exit) as ex:
        command()
    assert ex.value.exit_code == 130
    assert err.getvalue().strip() == f"interrupted: {msg}"


def test_random_file_as_motion_model(tmp_path, photo):
    bad = tmp_path / "motion.npz"
    bad.write_bytes(os.urandom(2000))
    line = refused(invoke("design", "--photo", photo, "--motion", bad, "--out", tmp_path / "g.csv"), "motion.npz", "fewshot fit-motion")
    assert "allow_pickle" not in line and "pickle" not in line.lower()
    assert not (tmp_path / "g.csv").exists()


@pytest.mark.parametrize("content", ["random", "other_state_dict"])
def test_bad_face_alignment_weights_are_one_line(tmp_path, photo, content):
    pytest.importorskip("face_alignment")
    import torch

    weights = tmp_path / "fan.pth.tar"
    if content == "random":
        weights.write_bytes(os.urandom(4000))
    else:
        torch.save({"conv.weight": torch.zeros(2, 2)}, weights)
    line = refused(invoke("detect", photo, "--backend", "face-alignment", "--weights", weights, "--out", tmp_path / "f.csv"), "fan.pth.tar")
    assert "weights_only" not in line
    assert not (tmp_path / "f.csv").exists()


def test_predict_accepts_an_adapt_output_folder(tmp_path, photo):
    from au_models import base_model_path

    adapted = tmp_path / "adapted"
    adapted.mkdir()
    shutil.copy(base_model_path(), adapted / "model.pt")
    res = invoke("predict", photo, "--model", adapted, "--out", tmp_path / "aus.csv")
    assert res.exit_code == 0, res.output
    assert pd.read_csv(tmp_path / "aus.csv").success.tolist() == [1]
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(invoke("predict", photo, "--model", empty, "--out", tmp_path / "aus2.csv"), "empty", "model.pt")
    assert not (tmp_path / "aus2.csv").exists()


@pytest.mark.parametrize("case", ["invalid_yaml", "not_text", "unknown_strategy", "missing_root", "bad_field_type"])
def test_every_config_error_names_the_yaml_file(tmp_path, case):
    cfg = tmp_path / "exp.yaml"
    ds = {"name": "bp4d", "root": str(tmp_path)}
    if case == "invalid_yaml":
        cfg.write_text("name: x\ndatasets:\n  - name: bp4d\n   root: [unclosed\n")
        needles = ["exp.yaml", "not valid YAML", "line "]
    elif case == "not_text":
        cfg.write_bytes(b"\xff\xfe\x00binary")
        needles = ["exp.yaml"]
    elif case == "unknown_strategy":
        cfg.write_text(yaml.safe_dump({"datasets": [ds], "strategies": ["telepathy"]}))
        needles = ["exp.yaml", "strategies", "telepathy"]
    elif case == "missing_root":
        cfg.write_text(yaml.safe_dump({"datasets": [{**ds, "root": str(tmp_path / "nowhere")}]}))
        needles = ["exp.yaml", "datasets[0].root"]
    else:
        cfg.write_text(yaml.safe_dump({"datasets": [{**ds, "folds": ["one"]}]}))
        needles = ["exp.yaml", "datasets[0].folds"]
    out = tmp_path / "run"
    line = refused(invoke("experiment", "run", cfg, "--out", out), *needles)
    assert line.startswith(f"error: {cfg}: ")
    assert not out.exists()


# -- 6. corrupt or empty videos: only our line, none of FFmpeg's -------------------------------------
@pytest.mark.parametrize("content", ["empty", "random"])
def test_corrupt_video_prints_only_our_line(tmp_path, photo, content):
    video = tmp_path / f"{content}.mp4"
    video.write_bytes(b"" if content == "empty" else np.random.default_rng(0).integers(0, 256, 30000, dtype=np.uint8).tobytes())
    grid = tmp_path / "grid.csv"  # read before the clip is opened; its columns are checked later
    grid.write_text("sample_id\n0\n")
    for args in (["detect", video], ["predict", video], ["synthesize", "--grid", grid, "--clip", video]):
        p = subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, args), "--out", str(tmp_path / "o.out")],
                           capture_output=True, text=True, timeout=180)  # fmt: skip
        assert p.returncode == 2, (args, p.stderr)
        one_error_line(p.stderr, f"{content}.mp4")  # C-level FFmpeg lines would show up here
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted([f"{content}.mp4", "grid.csv"])


# -- 7. select-frames -k 0 ----------------------------------------------------------------------------
@pytest.mark.parametrize("k", ["0", "-2"])
def test_select_frames_needs_k_of_at_least_1(tmp_path, photo, k):
    refused(invoke("select-frames", photo, "-k", k, "--out", tmp_path / "best.csv"), photo.name, f"-k {k}")
    assert not (tmp_path / "best.csv").exists()


# -- 8. a folder with a corrupt photo ----------------------------------------------------------------
def test_folder_with_a_corrupt_photo_keeps_the_good_ones(tmp_path, photo):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(photo, folder / "a_good.jpg")
    (folder / "b_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    out = tmp_path / "faces.csv"
    res = invoke("detect", folder, "--out", out, "--no-embed")
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out)
    assert df.source.tolist() == ["a_good.jpg", "b_broken.jpg"] and df.success.tolist() == [1, 0]
    assert df.error.isna()[0] and "b_broken.jpg" in df.error[1] and "not a readable image" in df.error[1]
    assert "b_broken.jpg" in res.stderr and "1 of 2 file(s) could not be read" in res.stderr and "Traceback" not in res.stderr
    res = invoke("predict", folder, "--out", tmp_path / "aus.csv")  # the same rows, with AU columns
    assert res.exit_code == 0, res.output
    aus = pd.read_csv(tmp_path / "aus.csv")
    assert aus.success.tolist() == [1, 0] and "b_broken.jpg" in aus.error[1] and np.isnan(aus.AU12_p[1]) and 0 <= aus.AU12_p[0] <= 1


def test_folder_of_only_corrupt_photos_is_refused(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.jpg", "b.png"):
        (folder / name).write_bytes(b"not an image")
    out = tmp_path / "faces.csv"
    out.write_text("an earlier result\n")
    refused(invoke("detect", folder, "--out", out, "--no-embed"), "photos", "none of the 2 images", "a.jpg")
    assert out.read_text() == "an earlier result\n"


# -- 9. the same model gives the same bytes ----------------------------------------------------------
def test_saving_the_same_model_twice_gives_identical_bytes(tmp_path):
    import torch

    from au_models.align import AlignConfig
    from au_models.checkpoint import load_checkpoint, save_checkpoint
    from au_models.model import AUModel

    torch.manual_seed(0)
    model = AUModel("compact", ["AU12"], ["AU12"], align=AlignConfig(crop_size=48), backbone_config={"width": 4, "out_dim": 8})
    meta = {"provenance": {"date": "2024-01-01T00:00:00+00:00", "seed": 0}}
    a = save_checkpoint(tmp_path / "one" / "model.pt", model, meta)
    b = save_checkpoint(tmp_path / "two.pt", model, meta)
    assert a.read_bytes() == b.read_bytes()
    assert a.stat().st_mode & 0o777 == 0o666 & ~_umask()
    loaded, _ = load_checkpoint(tmp_path / "one")  # a folder holding model.pt is read too
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
