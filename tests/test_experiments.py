"""Stage 6: the per-identity protocol, the batch runner (cells, resume after kill -9, Ray = local),
config validation before any work, the report and the evaluation notebooks, on a format-faithful
BP4D fixture tree with a tiny base model."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from tests.fixtures_au import make_bp4d_tree

ROOT = Path(__file__).resolve().parents[1]
AUS = 12  # BP4D protocol AUs, all predicted by the base model
METRICS = ["f1", "auc", "tp", "fp", "fn", "tn", "f1_base", "f1_other", "f1_other_base", "tp_other", "fp_other"]


def write_config(path: Path, bp4d_root: Path, out: Path, **over) -> Path:
    cfg = {
        "name": "fixture",
        "out": str(out),
        # fixture subjects: F001, M001 are in BP4D part1 (fold 3 tests them); F003, M002 in part2 (train)
        "datasets": [{"name": "bp4d", "root": str(bp4d_root), "folds": [3], "subjects": "test"}],
        "k": [2],
        "generators": ["none"],
        "strategies": ["finetune_real", "replay"],
        "plasticity": [0.5],
        "seeds": [0, 1],
        "base": {"train": {"epochs": 2, "crop_size": 48, "batch_size": 8, "backbone_config": {"width": 4, "out_dim": 16},
                           "replay_size": 8, "patience": 2, "threads": 1, "seed": 0}},  # fmt: skip
        "adapt": {"loop": {"epochs": 4, "batch_size": 8, "lr": 0.05}},
        "protocol": {"max_other_frames": 50},
    }
    cfg.update(over)
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_cli(*args: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture(scope="module")
def bp4d_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bp4d") / "BP4D"
    make_bp4d_tree(root, subjects=("F001", "M001", "F003", "M002"), tasks=("T1",), n_frames=12, seed=0)
    return root


@pytest.fixture(scope="module")
def local_run(bp4d_root, tmp_path_factory) -> Path:
    """The fixture grid run once with two spawned worker processes."""
    d = tmp_path_factory.mktemp("local")
    cfg = write_config(d / "cfg.yaml", bp4d_root, d / "run")
    p = run_cli("experiment", "run", str(cfg), "--workers", "2")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "8 cells (8 run, 0 already done, 0 failed)" in p.stdout, p.stdout
    return d / "run"


# -- protocol pieces -------------------------------------------------------------------------------
def test_neutral_residual_ranks_an_open_mouth_last():
    from au_models.align import AlignConfig, canonical_template
    from experiments.protocol import choose_references, neutral_residuals

    tpl = canonical_template(AlignConfig(crop_size=112))
    neutral = tpl.copy()
    smile = tpl.copy()
    smile[[48, 54]] += [[-4, -4], [4, -4]]  # mouth corners out and up
    jaw_drop = tpl.copy()
    jaw_drop[55:60] += [0, 9]  # lower lip down
    jaw_drop[[8, 7, 9]] += [0, 9]
    lm = np.stack([jaw_drop, smile, neutral])
    lm[:, :17] = np.nan  # BP4D has no jaw line: filled from the template
    r = neutral_residuals(lm, 112, tpl)
    assert np.all(np.isfinite(r))
    assert r[2] < r[1] and r[2] < r[0]
    index = pd.DataFrame({"subject": "s", "sequence": "T1", "frame": [10, 11, 12]})
    protocol = {"reference": "neutral", "reference_gap": 0}
    assert choose_references(index, np.arange(3), r, 1, protocol, "s").tolist() == [2]
    # a gap of 2 frames forbids frame 11 next to frame 12: the second pick is frame 10
    order = choose_references(index, np.arange(3), np.array([0.5, 0.2, 0.1]), 2, {**protocol, "reference_gap": 2}, "s")
    assert order.tolist() == [2, 0]


def test_cell_ids_are_stable_and_config_sensitive(bp4d_root, tmp_path):
    from experiments.runner import load_config, validate

    cfg = write_config(tmp_path / "c.yaml", bp4d_root, tmp_path / "run")
    a, b = validate(load_config(cfg)), validate(load_config(cfg))
    assert a.ids == b.ids and len(set(a.ids)) == len(a.ids) == 8
    cfg2 = write_config(tmp_path / "c2.yaml", bp4d_root, tmp_path / "run", adapt={"loop": {"epochs": 5, "batch_size": 8, "lr": 0.05}})
    assert not set(validate(load_config(cfg2)).ids) & set(a.ids)
    # baselines take no generator/plasticity; deterministic ones run with the first seed only
    cfg3 = write_config(tmp_path / "c3.yaml", bp4d_root, tmp_path / "run", strategies=["generic", "calibration", "replay"],
                        plasticity=[0.25, 0.75], seeds=[0, 1, 2])  # fmt: skip
    cells = validate(load_config(cfg3)).cells
    per = pd.Series([c["strategy"] for c in cells]).value_counts().to_dict()
    assert per == {"generic": 2, "calibration": 2, "replay": 2 * 2 * 3}
    assert not (tmp_path / "run").exists()  # validation writes nothing


# -- validation before any work --------------------------------------------------------------------
@pytest.mark.parametrize(
    "change, needles",
    [
        ({"strategies": ["finetune_real", "telepathy"]}, ["strategies", "telepathy"]),
        ({"datasets": "MISSING_ROOT"}, ["datasets[0].root", "does not exist"]),
        ({"datasets": "ABSENT_SUBJECT"}, ["datasets[0].subjects", "X999"]),
        ({"generators": ["dream"]}, ["generators", "dream"]),
    ],
)
def test_bad_config_fails_before_any_work(bp4d_root, tmp_path, change, needles):
    from cli import app

    ds = {"name": "bp4d", "root": str(bp4d_root), "folds": [3], "subjects": "test"}
    if change.get("datasets") == "MISSING_ROOT":
        change = {"datasets": [{**ds, "root": str(tmp_path / "nowhere")}]}
    elif change.get("datasets") == "ABSENT_SUBJECT":
        change = {"datasets": [{**ds, "subjects": ["F001", "X999"]}]}
    out = tmp_path / "run"
    cfg = write_config(tmp_path / "bad.yaml", bp4d_root, out, **change)
    res = CliRunner().invoke(app, ["experiment", "run", str(cfg)])
    assert res.exit_code == 2, res.output
    err = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and all(n in err[0] for n in needles), res.output
    assert not out.exists()  # nothing prepared, trained or run


# -- the runner ------------------------------------------------------------------------------------
def test_local_run_rows_and_columns(local_run):
    df = pd.read_parquet(local_run / "results.parquet")
    assert len(df) == 2 * 2 * 2 * AUS  # subjects x strategies x seeds x AUs
    assert not df.duplicated(["cell_id", "au"]).any()
    assert df.groupby(["subject", "strategy", "seed"]).cell_id.nunique().eq(1).all()
    assert sorted(df.subject.unique()) == ["F001", "M001"] and sorted(df.seed.unique()) == [0, 1]
    assert set(df.au) >= {"AU06", "AU17"}
    for c in ["dataset", "fold", "k", "generator", "strategy", "plasticity", "seed", "references", "seconds_total", "v_torch", "v_fewshot", *METRICS]:
        assert c in df.columns, c
    csv = pd.read_csv(local_run / "results.csv")
    assert len(csv) == len(df)
    # counts are consistent: every known label of the subject's evaluation frames is one of tp/fp/fn/tn
    assert (df[["tp", "fp", "fn", "tn"]].sum(axis=1) == df["n"]).all()
    # k=2 references out of 12 coded frames (the one without landmarks is re-detected): at most 10 left
    assert (df["n"] <= 10).all() and (df["n"] >= 5).all() and (df["n_references"] == 2).all()
    for refs in df.references.unique():
        parts = refs.split(";")
        assert len(set(parts)) == 2 and all(p.startswith("T1:") and 40 <= int(p[3:]) < 52 for p in parts), refs
    # fine-tuning on the neutral references (every AU absent) can only push predictions down on the person
    ft = df[df.strategy == "finetune_real"]
    assert (ft.tp + ft.fp).sum() < (ft.tp_base + ft.fp_base).sum()
    # the generic numbers are the same base model on the same frames in every cell of a subject
    assert df.groupby(["subject", "au"]).f1_base.nunique(dropna=False).eq(1).all()


def test_kill_9_midway_then_resume_redoes_nothing(local_run, bp4d_root, tmp_path):
    from experiments.runner import read_log

    ck = local_run / "base" / "bp4d_fold3.pt"
    out = tmp_path / "run"
    # slower cells (more epochs) so the kill lands midway
    cfg = write_config(tmp_path / "c.yaml", bp4d_root, out, base={"checkpoint": str(ck)}, adapt={"loop": {"epochs": 12, "batch_size": 8, "lr": 0.05}})
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "experiment", "run", str(cfg), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    cells = out / "cells"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if cells.is_dir() and len(list(cells.glob("*.parquet"))) >= 2:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {f.name: f.stat().st_mtime_ns for f in cells.glob("*.parquet")}
    assert 2 <= len(before) < 8, f"kill landed after {len(before)} of 8 cells"
    assert not (out / "results.parquet").exists()

    p = run_cli("experiment", "run", str(cfg), "--workers", "1")
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"8 cells ({8 - len(before)} run, {len(before)} already done, 0 failed)" in p.stdout, p.stdout
    for name, mtime in before.items():
        assert (cells / name).stat().st_mtime_ns == mtime, f"{name} was rewritten"
    log = read_log(out)
    done = log[log.event == "done"].cell.value_counts()
    assert len(done) == 8 and (done == 1).all()  # every cell finished exactly once over both runs
    assert set(log[log.event == "skip"].cell) == {n[: -len(".parquet")] for n in before}
    df = pd.read_parquet(out / "results.parquet")
    assert len(df) == 8 * AUS and not df.duplicated(["cell_id", "au"]).any()
    assert not list(cells.glob(".*.tmp"))


def test_ray_backend_gives_the_local_table(local_run, bp4d_root, tmp_path):
    pytest.importorskip("ray", reason="ray not installed (pip install -e '.[ray]')")
    out = tmp_path / "run"
    # same config (same cell ids); reuse the local run's base model and aligned cache
    for sub in ("base", "cache"):
        shutil.copytree(local_run / sub, out / sub)
    cfg = write_config(tmp_path / "c.yaml", bp4d_root, out)
    p = run_cli("experiment", "run", str(cfg), "--workers", "2", "--backend", "ray", timeout=400)
    assert p.returncode == 0, p.stderr[-3000:]
    a = pd.read_parquet(local_run / "results.parquet")
    b = pd.read_parquet(out / "results.parquet")
    assert set(b.backend) == {"ray"} and set(a.backend) == {"local"}
    key = ["cell_id", "au"]
    cols = key + ["subject", "strategy", "seed", "references", *METRICS]
    pd.testing.assert_frame_equal(a[cols].sort_values(key).reset_index(drop=True), b[cols].sort_values(key).reset_index(drop=True))


# -- report and notebooks --------------------------------------------------------------------------
def test_report_aggregates_by_hand():
    from experiments.report import per_au_table, summary_table

    rows = []
    for subj, f1s, f1b in (("a", [0.2, 0.4], [0.1, 0.1]), ("b", [0.6, 0.8], [0.3, 0.5])):
        for au, f, fb in zip(["AU01", "AU12"], f1s, f1b):
            rows.append(dict(cell_id=subj, dataset="d", fold=1, subject=subj, seed=0, k=1, generator="none", strategy="replay",
                             plasticity=0.5, au=au, f1=f, f1_base=fb, f1_other=0.5, f1_other_base=0.6,
                             tp=1, fp=1, fn=0, tn=3, tp_base=1, fp_base=0, fn_base=2, tn_base=2))  # fmt: skip
    s = summary_table(pd.DataFrame(rows)).iloc[0]
    assert s.n_units == 2
    assert s.f1_mean == pytest.approx(0.5) and s.f1_std == pytest.approx(0.2)  # units 0.3 and 0.7
    assert s.gain_mean == pytest.approx(0.5 - 0.25)
    assert s.forgetting_mean == pytest.approx(0.1)
    assert s.pooled_f1 == pytest.approx(2 * 4 / (2 * 4 + 4)) and s.pooled_f1_base == pytest.approx(2 * 4 / (2 * 4 + 8))
    per = per_au_table(pd.DataFrame(rows))
    assert set(per.au) == {"AU01", "AU12", "AU06", "AU17"}  # AU6 and AU17 shown even where not coded
    assert per.set_index("au").loc["AU12", "f1_change"] == pytest.approx(0.6 - 0.3)


def test_report_cli_writes_tables_and_plots(local_run, tmp_path):
    from cli import app

    res = CliRunner().invoke(app, ["experiment", "report", str(local_run / "results.parquet"), "--out", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    for name in ["summary.csv", "summary.md", "per_au.csv", "per_au.md", "forgetting.csv", "curve.csv", "report.md"]:
        assert (tmp_path / "rep" / name).stat().st_size > 0, name
    for png in ["per_au_f1.png", "rigidity_plasticity.png"]:
        assert (tmp_path / "rep" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = pd.read_csv(tmp_path / "rep" / "summary.csv")
    assert sorted(summary.strategy) == ["finetune_real", "replay"] and (summary.n_units == 4).all()
    per_au = pd.read_csv(tmp_path / "rep" / "per_au.csv")
    assert {"AU06", "AU17"} <= set(per_au.au)
    bad = CliRunner().invoke(app, ["experiment", "report", str(tmp_path / "none.parquet"), "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "no results table" in bad.output


@pytest.mark.parametrize("name, figures", [("evaluation", ["per_au_f1.png", "gain_per_subject.png"]), ("rigidity_plasticity", ["rigidity_plasticity.png"])])
def test_notebooks_run_and_write_figures(local_run, tmp_path, monkeypatch, name, figures):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("FEWSHOT_RESULTS", str(local_run / "results.parquet"))
    monkeypatch.setenv("FEWSHOT_FIGURES", str(tmp_path / "figs"))
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(ROOT / "experiments" / "notebooks" / f"{name}.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    for fig in figures:
        assert (tmp_path / "figs" / fig).read_bytes()[:4] == b"\x89PNG", fig


def test_example_configs_parse():
    from experiments.runner import load_config

    for name in ("disfa", "bp4d", "london"):
        cfg = load_config(ROOT / "experiments" / "configs" / f"{name}.yaml")
        assert cfg.datasets[0].name == name and "generic" in cfg.strategies and "calibration" in cfg.strategies


def test_london_config_validates_on_the_shared_set(london, monkeypatch):
    from experiments.runner import load_config, validate

    monkeypatch.chdir(ROOT)
    plan = validate(load_config(ROOT / "experiments" / "configs" / "london.yaml"))
    subjects = {c["subject"] for c in plan.cells}
    assert len(subjects) == 40  # every identity is a test identity of exactly one fold
    # generic and calibration are deterministic (first seed only); finetune_real, si and replay x 3 seeds
    per_identity = 2 + 3 * 3
    assert len(plan.cells) == 40 * per_identity
    from collections import Counter

    assert Counter(c["strategy"] for c in plan.cells) == {"generic": 40, "calibration": 40, "finetune_real": 120, "si": 120, "replay": 120}
    assert json.dumps(plan.cells[0])  # cells are plain JSON


def test_generators_axis_renders_with_each_generator(bp4d_root, tmp_path):
    """generators: [warp, warp+refiner] gives cells whose rendering generator differs and whose
    synthetic sets differ (the refiner's file option reaches only the generator that takes it)."""
    from generators import design_grid, fit_profile, generate
    from generators.refiner import COND_AUS, train_refiner
    from fewshot.data import example_photo

    profile = fit_profile(str(example_photo()))
    warped = generate(profile, design_grid(profile, n=6, seed=1), size=48)
    refiner = tmp_path / "refiner.pt"
    train_refiner(warped.images, warped.landmarks, np.zeros((6, len(COND_AUS)), np.float32), (warped.images * 0.7).astype(np.uint8),
                  refiner, epochs=3, batch=6, threads=1)
    out = tmp_path / "run"
    cfg = write_config(tmp_path / "c.yaml", bp4d_root, out, generators=["warp", "warp+refiner"], strategies=["naive"], seeds=[0], k=[1],
                       datasets=[{"name": "bp4d", "root": str(bp4d_root), "folds": [3], "subjects": ["F001"]}],
                       adapt={"loop": {"epochs": 1, "batch_size": 8}, "grid": {"size": 12}, "synthesis": {"render_size": 48, "refiner": str(refiner)}})
    p = run_cli("experiment", "run", str(cfg))
    assert p.returncode == 0, p.stderr[-3000:]
    df = pd.read_parquet(out / "results.parquet").drop_duplicates("cell_id").set_index("generator")
    assert sorted(df.index) == ["warp", "warp+refiner"]
    assert df.loc["warp", "rendered_by"] == "warp" and df.loc["warp+refiner", "rendered_by"] == "warp+refiner"
    assert (df.synthetic_rows > 0).all() and df.loc["warp", "synthetic_sha1"] != df.loc["warp+refiner", "synthetic_sha1"]


def test_adapt_section_unknown_key_is_an_error(bp4d_root, tmp_path):
    for adapt, needle in (({"loop": {"epoch": 3}}, "loop.epoch"), ({"epochs": 3}, "epochs"), ({"strategy": {"name": "si"}}, "strategy.name")):
        cfg = write_config(tmp_path / "c.yaml", bp4d_root, tmp_path / "run", adapt=adapt)
        p = run_cli("experiment", "run", str(cfg))
        assert p.returncode == 2 and needle in p.stderr and "c.yaml" in p.stderr and "Traceback" not in p.stderr, p.stderr
