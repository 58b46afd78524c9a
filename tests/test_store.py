"""Stage 3: the resumable HDF5 store, its reader, the CLI and the quality metrics."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fewshot.errors import InputError


@pytest.fixture(scope="module")
def profile(example_image):
    from generators import fit_profile

    return fit_profile(example_image)


@pytest.fixture(scope="module")
def grid(profile):
    from generators import design_grid

    return design_grid(profile, n=20, strategy="balanced", seed=3)


def test_store_layout_and_reader(tmp_path, profile, grid):
    from generators import open_synthetic, synthesize

    out = tmp_path / "p.h5"
    rep = synthesize(profile, grid, out, size=64, chunk=8, progress=False)
    assert (rep.chunks_total, rep.chunks_rendered, rep.chunks_skipped) == (3, 3, 0)
    assert rep.contact_sheet is not None and rep.contact_sheet.exists()
    with h5py.File(out, "r") as f:
        assert f["images"].shape == (20, 64, 64, 3) and f["images"].dtype == np.uint8
        assert f["images"].chunks[0] == 8
        assert f["landmarks"].shape == (20, 68, 2) and f["pose"].shape == (20, 3)
        assert list(f["aus"].attrs["au_names"]) == [c for c in grid.columns if c.startswith("AU")]
        assert list(f["semantic"].attrs["names"]) == ["AU06", "AU17", "AU04", "AU09", "AU10"]
        assert f["done"][:].tolist() == [1, 1, 1]
        assert f.attrs["complete"] and f.attrs["generator"] == "warp" and f.attrs["fewshot_version"]
        assert "present from 2 (B)" in f.attrs["occurrence"]
        rec = json.loads(f["rendered"][5])
        assert set(rec) >= {"landmarks_aus", "semantic_aus", "mouth_interior", "generator"}
    s = open_synthetic(out)
    assert s.images.shape == (20, 64, 64, 3)
    assert np.allclose(s.table.yaw, grid.yaw, atol=1e-4)
    assert np.allclose(s.table.AU12, grid.AU12)
    assert (s.table.expression == grid.expression.astype(str)).all()
    assert {"x_0", "y_67", "sem_AU06", "rendered"} <= set(s.table.columns)


def test_gzip_chunks_compressed_aside_read_back_exactly(tmp_path, profile, grid):
    """gzip chunks are deflated in a worker thread and stored with write_direct_chunk: they must read
    back bit for bit (the 20-row grid ends in a 4-row partial chunk), through h5py's own filter."""
    from generators import generate, synthesize

    synthesize(profile, grid, tmp_path / "z.h5", size=64, chunk=8, progress=False, compression="gzip")
    synthesize(profile, grid, tmp_path / "raw.h5", size=64, chunk=8, progress=False, compression="none")
    with h5py.File(tmp_path / "z.h5", "r") as z, h5py.File(tmp_path / "raw.h5", "r") as raw:
        assert z["images"].compression == "gzip" and raw["images"].compression is None
        assert np.array_equal(z["images"][:], raw["images"][:])
        assert np.array_equal(z["images"][16:], generate(profile, grid.iloc[16:], size=64).images)
        assert z["images"].id.get_storage_size() < raw["images"].id.get_storage_size()


def test_killed_run_resumes_without_redoing_chunks(tmp_path, profile, grid):
    from generators import open_synthetic, synthesize

    out = tmp_path / "p.h5"
    first = synthesize(profile, grid, out, size=64, chunk=8, progress=False, stop_after=1)
    assert first.chunks_rendered == 1
    with h5py.File(out, "r") as f:
        assert f["done"][:].tolist() == [1, 0, 0] and not f.attrs["complete"]
        chunk0 = f["images"][:8]
    with pytest.raises(InputError, match="unfinished"):
        open_synthetic(out)
    seen = []
    second = synthesize(profile, grid, out, size=64, chunk=8, progress=False, on_chunk=seen.append)
    assert (second.chunks_rendered, second.chunks_skipped) == (2, 1) and seen == [1, 2]
    again = synthesize(profile, grid, out, size=64, chunk=8, progress=False, on_chunk=seen.append)
    assert again.chunks_rendered == 0 and seen == [1, 2]
    fresh = tmp_path / "fresh.h5"
    synthesize(profile, grid, fresh, size=64, chunk=8, progress=False)
    a, b = open_synthetic(out), open_synthetic(fresh)
    assert np.array_equal(a.images, b.images), "a resumed file equals an uninterrupted one"
    assert np.array_equal(a.images[:8], chunk0)
    # other inputs never overwrite silently
    with pytest.raises(InputError, match="other inputs"):
        synthesize(profile, grid.iloc[:12], out, size=64, chunk=8, progress=False)
    with pytest.raises(InputError, match="other inputs"):
        synthesize(profile, grid, out, size=96, chunk=8, progress=False)


def test_corrupt_and_truncated_files_fail_in_one_line(tmp_path, profile, grid):
    from generators import open_synthetic, synthesize

    out = tmp_path / "p.h5"
    synthesize(profile, grid, out, size=64, chunk=8, progress=False, contact_sheet=False)
    data = out.read_bytes()
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(data[: len(data) // 3])
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x89HDF\r\n" + bytes(200))
    for p in (trunc, junk):
        with pytest.raises(InputError) as e:
            open_synthetic(p)
        assert "\n" not in str(e.value) and str(p) in str(e.value)
        with pytest.raises(InputError):
            synthesize(profile, grid, p, size=64, chunk=8, progress=False)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = 1
    with pytest.raises(InputError, match="not a fewshot synthetic store"):
        open_synthetic(other)


def test_cli_synthesize_and_errors(tmp_path, profile, grid):
    from cli import app
    from fewshot.data import example_photo

    gp = tmp_path / "grid.parquet"
    grid.iloc[:6].to_parquet(gp)
    out = tmp_path / "person.h5"
    r = CliRunner().invoke(app, ["synthesize", "--photo", str(example_photo()), "--grid", str(gp), "--out", str(out),
                                 "--size", "64", "--chunk", "4", "--no-progress", "--compression", "none"])
    assert r.exit_code == 0, r.output
    assert "6 samples" in r.output and out.exists() and (tmp_path / "person_contact.png").exists()
    with h5py.File(out, "r") as f:
        assert f.attrs["source_sha1"] and f.attrs["grid"] == str(gp) and f["images"].compression is None
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"garbage")
    r = CliRunner().invoke(app, ["quality", str(bad)])
    assert r.exit_code == 2 and "corrupt or truncated" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["synthesize", "--grid", str(gp), "--out", str(tmp_path / "x.h5")])
    assert r.exit_code == 2 and "--photo or --clip" in r.output


def test_killed_subprocess_resumes(tmp_path, profile, grid):
    """A real kill (SIGKILL mid-run) leaves a file that the same command finishes."""
    from generators import open_synthetic

    gp = tmp_path / "grid.parquet"
    grid.to_parquet(gp)
    out = tmp_path / "k.h5"
    code = (
        "import os, sys, signal\n"
        "from generators.store import synthesize_files\n"
        "from fewshot.data import example_photo\n"
        "def hook(c):\n"
        "    if c == 1: os.kill(os.getpid(), signal.SIGKILL)\n"
        f"synthesize_files({str(gp)!r}, {str(out)!r}, photo=example_photo(), size=64, chunk=5, progress=False, on_chunk=hook)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert p.returncode == -9
    with h5py.File(out, "r") as f:
        assert f["done"][:].tolist() == [1, 1, 0, 0]
    from generators.store import synthesize_files
    from fewshot.data import example_photo

    rep = synthesize_files(gp, out, photo=example_photo(), size=64, chunk=5, progress=False)
    assert (rep.chunks_rendered, rep.chunks_skipped) == (2, 2)
    assert open_synthetic(out).attrs["complete"]


def test_fid_kid_estimators():
    from generators.quality import frechet_distance, kernel_inception_distance

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    c = rng.normal(size=(400, 8)) + 1.0
    assert frechet_distance(a, b) < 0.3 < 7.0 < frechet_distance(a, c) < 9.5  # ~ |mu|^2 = 8
    assert abs(kernel_inception_distance(a, b)) < 0.05 < kernel_inception_distance(a, c)


def test_quality_report(tmp_path, profile, grid, example_image):
    from fewshot.data import example_photo
    from generators import synthesize
    from generators.quality import evaluate_quality

    out = tmp_path / "q.h5"
    synthesize(profile, grid.iloc[:6], out, size=256, chunk=6, progress=False, source_path=example_photo(), contact_sheet=False)
    rep = evaluate_quality(out, real=example_photo().parent)
    assert len(rep.per_image) == 6 and {"identity_distance", "landmark_error", "yaw_bin"} <= set(rep.per_image.columns)
    assert rep.summary["detected"] > 0.8 and rep.summary["identity_distance_mean"] < 0.6
    assert rep.summary["landmark_error_mean"] < 0.08
    assert "FID[dlib128]" in rep.summary and "offline substitute" in rep.summary["fid_features"]
    assert set(rep.per_pose.yaw_bin) == set(rep.per_image.yaw_bin)


def test_au_fidelity_sees_rendered_aus(tmp_path, profile):
    """The shipped base model on a store whose rows alternate a strong smile with open jaw and a neutral
    face: AU12 and AU26 are told apart; quality reports per AU, per image and per yaw bin."""
    from fewshot.data import example_photo
    from generators import design_grid, synthesize
    from generators.quality import au_fidelity, evaluate_quality

    g = design_grid(profile, n=24, aus=["AU06", "AU12", "AU25", "AU26"], strategy="balanced", seed=5)
    out = tmp_path / "au.h5"
    synthesize(profile, g, out, size=256, chunk=12, progress=False, source_path=example_photo(), contact_sheet=False)
    rep = evaluate_quality(out)
    fid = rep.au_fidelity.set_index("au")
    assert list(fid.index) == ["AU06", "AU12", "AU25", "AU26"]
    assert fid.loc["AU12", "auc"] > 0.8 and fid.loc["AU26", "auc"] > 0.8, fid
    assert {"AU12_p", "AU26_p"} <= set(rep.per_image.columns) and rep.per_image.AU12_p.between(0, 1).all()
    assert "au_macro_auc" in rep.per_pose.columns and 0.5 < rep.summary["au_macro_auc"] <= 1
    assert evaluate_quality(out, au_model=False).au_fidelity is None
    from generators.store import open_synthetic

    s = open_synthetic(out)
    with pytest.raises(InputError, match="no AU model"):
        au_fidelity(s.images, s.landmarks, s.table, tmp_path / "missing.pt")
    with pytest.raises(InputError, match="do not overlap"):
        au_fidelity(s.images, s.landmarks, s.table.drop(columns=["AU06", "AU12", "AU25", "AU26"]))
    from cli import app

    r = CliRunner().invoke(app, ["quality", str(out), "--out", str(tmp_path / "q.csv")])
    assert r.exit_code == 0, r.output
    assert "AU12" in r.output and "au_macro_auc" in r.output
    assert pd.read_csv(tmp_path / "q_au.csv").au.tolist() == ["AU06", "AU12", "AU25", "AU26"]


# -- the grid's source photo -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def other_profile():
    from fewshot.data import example_photo
    from generators import fit_profile

    return fit_profile(example_photo("smiling"))


def test_grid_of_another_photo_is_refused_unless_allowed(tmp_path, profile, other_profile, grid):
    from fewshot.errors import ConfigError
    from generators import open_synthetic, synthesize

    out = tmp_path / "x.h5"
    with pytest.raises(ConfigError) as e:
        synthesize(other_profile, grid, out, size=64, chunk=8, progress=False, grid_path="g.parquet", contact_sheet=False)
    msg = str(e.value)
    assert msg.startswith("g.parquet: designed on") and "london_001_smiling.jpg" in msg and "--allow-other-source" in msg
    assert "\n" not in msg and not out.exists()
    rep = synthesize(other_profile, grid.iloc[:8], out, size=64, chunk=8, progress=False, contact_sheet=False, allow_other_source=True)
    assert rep.chunks_rendered == 1 and open_synthetic(out).attrs["grid_source"] == grid.attrs["source"]
    # the same photo passes, whatever the path it was read from (the fingerprint is of the pixels)
    synthesize(profile, grid.iloc[:8], tmp_path / "ok.h5", size=64, chunk=8, progress=False, contact_sheet=False)


def test_grid_without_a_record_is_judged_by_its_targets(tmp_path, profile, other_profile, grid):
    from fewshot.errors import ConfigError
    from generators import Grid, synthesize
    from generators.grid import TARGET_OFFSET_LIMIT, target_offset

    bare = grid.iloc[:8].copy()
    bare.attrs = {}  # a CSV written without its sidecar, or an older grid
    assert target_offset(Grid.from_table(bare), profile) < TARGET_OFFSET_LIMIT / 4
    assert target_offset(Grid.from_table(bare), other_profile) > 2 * TARGET_OFFSET_LIMIT
    with pytest.raises(ConfigError, match="do not fit the face in .*london_001_smiling.jpg.*--allow-other-source"):
        synthesize(other_profile, bare, tmp_path / "x.h5", size=64, chunk=8, progress=False, contact_sheet=False)
    synthesize(profile, bare, tmp_path / "ok.h5", size=64, chunk=8, progress=False, contact_sheet=False)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_cli_synthesize_refuses_the_wrong_photo(tmp_path, grid, suffix):
    from cli import app
    from fewshot.data import example_photo
    from generators import write_grid

    gp = tmp_path / f"grid{suffix}"
    write_grid(grid.iloc[:4], gp)
    args = ["synthesize", "--grid", str(gp), "--out", str(tmp_path / "p.h5"), "--size", "64", "--chunk", "4", "--no-progress"]
    r = CliRunner().invoke(app, args + ["--photo", str(example_photo("smiling"))])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert "london_001_smiling.jpg" in r.output and "--allow-other-source" in r.output
    assert "designed on" in r.output  # decided by the recorded fingerprint, CSV (sidecar) and parquet alike
    assert not (tmp_path / "p.h5").exists()
    r = CliRunner().invoke(app, args + ["--photo", str(example_photo("smiling")), "--allow-other-source"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, args[:4] + [str(tmp_path / "same.h5")] + args[5:] + ["--photo", str(example_photo())])
    assert r.exit_code == 0, r.output


def test_store_contact_sheet_is_evenly_spaced_tiles(tmp_path, profile, grid):
    from fewshot.io import read_image
    from generators import synthesize
    from generators.store import write_contact_sheet

    out = tmp_path / "s.h5"
    synthesize(profile, grid, out, size=64, chunk=8, progress=False, contact_sheet=False)
    png = write_contact_sheet(out, max_images=6, out=tmp_path / "six.png")
    sheet = read_image(png)
    assert sheet.shape[1] == 6 * 128 and 128 < sheet.shape[0] < 2 * 128  # one row of six tiles with captions under them
    with h5py.File(out, "r") as f:
        import cv2

        last = cv2.resize(f["images"][19], (128, 128), interpolation=cv2.INTER_LINEAR)
    assert np.abs(sheet[:128, 5 * 128:].astype(int) - last).mean() < 3  # the last sample ends the sheet
