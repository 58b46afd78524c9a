"""The ``clip`` data set (a video with coarse frame-range labels), the real-frame scores of the protocol
(mean P on positives / negatives, Brier, the expression head) and their report, and a clip through the
experiment runner with the shipped base model (no fold)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from fewshot.errors import ConfigError, InputError
from tests.fixtures_au import marker_level, read_marker

ROOT = Path(__file__).resolve().parents[1]
N_FRAMES, FPS, SIDE = 12, 10.0, 192


def write_clip(path: Path, n: int = N_FRAMES) -> Path:
    """An MJPG clip of the shipped example person: neutral frames 0..n/2-1, smiling after, each with a
    grey marker square whose level encodes its index (so a test can tell frames apart)."""
    from fewshot.data import example_photo
    from fewshot.io import read_image

    faces = [cv2.resize(read_image(example_photo(kind)), (SIDE, SIDE), interpolation=cv2.INTER_AREA) for kind in ("neutral", "smiling")]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (SIDE, SIDE))
    assert vw.isOpened()
    for i in range(n):
        rgb = faces[int(i >= n // 2)].copy()
        rgb[:12, :12] = marker_level(i)
        vw.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    vw.release()
    return path


@pytest.fixture(scope="module")
def clip_video(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "person.avi")


def describe(folder: Path, video: str | Path, **over) -> Path:
    """A clip YAML in ``folder``: frames 0-3 sad (AU12 absent), 7-11 happy (AU12, AU06 present)."""
    desc = {"video": str(video), "subject": "person",
            "ranges": [{"frames": [0, 3], "expression": "sad", "aus": {"AU12": 0}},
                       {"frames": [7, 11], "expression": "happy", "aus": {"AU12": 1, "AU06": 1}}]}  # fmt: skip
    desc.update(over)
    path = folder / "clip.yaml"
    path.write_text(yaml.safe_dump(desc, sort_keys=False))
    return path


# -- the loader ------------------------------------------------------------------------------------
def test_clip_rows_labels_and_frames(clip_video, tmp_path, monkeypatch):
    from experiments.datasets import DATASETS, load_dataset

    assert "clip" in DATASETS
    folder = tmp_path / "desc"
    folder.mkdir()
    rel = Path("..") / clip_video.parent.name / clip_video.name  # relative to the YAML's folder, not the cwd
    (tmp_path / clip_video.parent.name).mkdir()
    (tmp_path / clip_video.parent.name / clip_video.name).write_bytes(clip_video.read_bytes())
    desc = describe(folder, rel)
    monkeypatch.chdir(ROOT)
    clip = load_dataset("clip", desc)
    t = clip.table
    assert len(t) == N_FRAMES and clip.aus == ["AU06", "AU12"] and clip.intensity_aus == []
    assert t["frame"].tolist() == list(range(N_FRAMES)) == t["video_frame"].tolist()
    assert set(t["subject"]) == {"person"} and (t["sequence"] == "").all() and (t["image_path"] == "").all()
    assert t["AU12"].dtype == np.int8
    assert t["AU12"].tolist() == [0, 0, 0, 0, -1, -1, -1, 1, 1, 1, 1, 1]
    assert t["AU06"].tolist() == [-1] * 7 + [1] * 5  # unknown where a range does not name it
    assert t["expression"].tolist() == ["sad"] * 4 + [""] * 3 + ["happy"] * 5
    assert t["label_range"].tolist() == [0] * 4 + [-1] * 3 + [1] * 5
    assert np.allclose(t["timestamp"], np.arange(N_FRAMES) / FPS)
    assert clip.landmarks().shape == (N_FRAMES, 68, 2) and np.isnan(clip.landmarks()).all()
    assert clip.info["frames"] == N_FRAMES and clip.info["labelled_frames"] == 9 and len(clip.info["digest"]) == 12
    # each row reads its own frame of the video, as RGB (the marker is grey; the face is warmer in R than B)
    for i in (0, 5, 11, 3):
        rgb = clip.load_image(i)
        assert rgb.dtype == np.uint8 and rgb.shape == (SIDE, SIDE, 3)
        assert abs(read_marker(rgb) - marker_level(i)) < 8, i
        assert rgb[SIDE // 3 :, SIDE // 3 : 2 * SIDE // 3, 0].mean() > rgb[SIDE // 3 :, SIDE // 3 : 2 * SIDE // 3, 2].mean()
    clip.close()
    # options: another video and another name; the default subject is the video's stem
    (tmp_path / "other").mkdir()
    other = load_dataset("clip", describe(tmp_path / "other", "nowhere.avi", subject=None), video=str(clip_video))
    assert set(other.table["subject"]) == {"person"} and other.info["video"] == str(clip_video.resolve())
    renamed = load_dataset("clip", desc, subject="someone")
    assert set(renamed.table["subject"]) == {"someone"}


def test_the_shipped_pexels_description_parses():
    from experiments.datasets.clip import read_description

    desc_file = ROOT / "experiments" / "datasets" / "pexels_clip.yaml"
    video = ROOT / "README.md"  # any existing file: only the video's presence is checked here
    d = read_description(desc_file, video=video)
    assert d.subject == "pexels_woman" and d.aus == ["AU06", "AU12"]
    assert [(r.first, r.last, r.expression) for r in d.ranges] == [(0, 130, "sad"), (240, 471, "happy")]
    assert d.ranges[0].aus == {"AU12": 0} and d.ranges[1].aus == {"AU12": 1, "AU06": 1}


def test_the_pexels_experiment_config_parses():
    from experiments.runner import SHIPPED, load_config

    cfg = load_config(ROOT / "experiments" / "configs" / "pexels_clip.yaml")
    spec = cfg.datasets[0]
    assert (spec.name, spec.folds, Path(spec.root).name) == ("clip", [0], "pexels_clip.yaml")
    assert cfg.base["checkpoint"] == SHIPPED and cfg.protocol["reference"] == "neutral" and cfg.seeds == [0, 1, 2]
    assert {"generic", "calibration", "si", "replay", "lwf", "head"} <= set(cfg.strategies) and cfg.generators == ["mesh"]


BAD = [
    ("subject: a\nranges: [unclosed\nvideo: x\n", ["not valid YAML", "line 3"]),
    ({"video": "V", "ranges": [{"frames": [0, 3], "aus": {"AU12": 0}}], "fps": 3}, ["unknown key", "fps"]),
    ({"video": "missing.mp4", "ranges": [{"frames": [0, 3], "aus": {"AU12": 0}}]}, ["missing.mp4", "does not exist"]),
    ({"video": "V", "ranges": [{"frames": [0, 5], "aus": {"AU12": 0}}, {"frames": [5, 8], "aus": {"AU12": 1}}]}, ["ranges[0]", "ranges[1]", "overlap"]),
    ({"video": "V", "ranges": [{"frames": [6, 8], "aus": {"AU12": 1}}, {"frames": [0, 6], "aus": {"AU12": 0}}]}, ["overlap"]),
    ({"video": "V", "ranges": [{"frames": [4, 12], "aus": {"AU12": 1}}]}, ["ranges[0]", "past the clip's end", "12 frames"]),
    ({"video": "V", "ranges": [{"frames": [4, 2], "aus": {"AU12": 1}}]}, ["ranges[0].frames", "ends before it starts"]),
    ({"video": "V", "ranges": [{"frames": [0], "aus": {"AU12": 1}}]}, ["ranges[0].frames", "[first, last]"]),
    ({"video": "V", "ranges": [{"frames": [-1, 2], "aus": {"AU12": 1}}]}, ["negative"]),
    ({"video": "V", "ranges": [{"frames": [0, 2], "aus": {"smile": 1}}]}, ["ranges[0].aus", "smile"]),
    ({"video": "V", "ranges": [{"frames": [0, 2], "aus": {"AU12": 2}}]}, ["ranges[0].aus.AU12", "use 1 (present) or 0"]),
    ({"video": "V", "ranges": [{"frames": [0, 2], "expression": "glee", "aus": {"AU12": 1}}]}, ["ranges[0].expression", "glee", "happy"]),
    ({"video": "V", "ranges": [{"frames": [0, 2], "expression": "happy"}]}, ["no range labels an AU"]),
    ({"video": "V", "ranges": []}, ["ranges", "at least one"]),
    ({"ranges": [{"frames": [0, 2], "aus": {"AU12": 1}}]}, ["video: required"]),
    (["a", "list"], ["mapping"]),
]


@pytest.mark.parametrize("content, needles", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_a_bad_description_is_one_config_error_naming_the_file(clip_video, tmp_path, content, needles):
    from experiments.datasets import load_dataset

    path = tmp_path / "clip.yaml"
    if isinstance(content, dict) and content.get("video") == "V":
        content = {**content, "video": str(clip_video)}
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    with pytest.raises(ConfigError) as e:
        load_dataset("clip", path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg, msg
    for n in needles:
        assert n in msg, (n, msg)


def test_an_unreadable_video_is_an_input_error(tmp_path):
    from experiments.datasets import load_dataset

    fake = tmp_path / "broken.mp4"
    fake.write_text("not a video")
    with pytest.raises(InputError, match="broken.mp4: cannot open video"):
        load_dataset("clip", describe(tmp_path, fake.name))
    with pytest.raises(ConfigError, match="no such clip description"):
        load_dataset("clip", tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="not a text file"):
        load_dataset("clip", write_clip(tmp_path / "v.avi", 2))  # the video passed instead of its YAML


# -- the scores ------------------------------------------------------------------------------------
def test_confusion_scores_on_known_inputs():
    from experiments.protocol import confusion

    y = np.array([1, 1, 0, 0, -1])
    p = np.array([0.9, 0.6, 0.2, 0.4, 0.99])  # the unknown frame's 0.99 must count nowhere
    s = confusion(y, p, 0.5)
    assert (s["n"], s["n_pos"], s["tp"], s["fp"], s["fn"], s["tn"]) == (4, 2, 2, 0, 0, 2)
    assert s["mean_p_pos"] == pytest.approx(0.75) and s["mean_p_neg"] == pytest.approx(0.3)
    assert s["brier"] == pytest.approx((0.1**2 + 0.4**2 + 0.2**2 + 0.4**2) / 4)
    assert s["auc"] == pytest.approx(1.0)
    only_pos = confusion(np.array([1, 1, -1]), np.array([0.2, 0.4, 0.9]), 0.5)
    assert only_pos["mean_p_pos"] == pytest.approx(0.3) and np.isnan(only_pos["mean_p_neg"]) and np.isnan(only_pos["auc"])
    assert only_pos["brier"] == pytest.approx((0.8**2 + 0.6**2) / 2)
    none = confusion(np.array([-1, -1]), np.array([0.5, 0.5]), 0.5)
    assert none["n"] == 0 and all(np.isnan(none[k]) for k in ("mean_p_pos", "mean_p_neg", "brier"))


def test_expression_scores_on_known_inputs():
    from experiments.protocol import expression_scores

    names = ["neutral", "happy", "sad"]
    labels = np.array([2, 2, 2, 2, 1, 1, -1])  # four sad frames, two happy, one unlabelled
    called = [1, 1, 2, 0, 1, 2, 1]  # the head: sad frames -> happy, happy, sad, neutral; happy -> happy, sad
    prob = np.eye(3)[called] * 0.8 + 0.1
    s = expression_scores(labels, names, prob, names)
    assert s["expr_n"] == 6
    assert s["expr_acc"] == pytest.approx(2 / 6)
    assert s["expr_happy_on_other"] == pytest.approx(2 / 4) and s["expr_happy_on_happy"] == pytest.approx(1 / 2)
    # the model's classes in another order than the labels' names
    model_names = ["sad", "neutral", "happy"]
    reorder = prob[:, [2, 0, 1]]
    assert expression_scores(labels, names, reorder, model_names) == s
    empty = expression_scores(np.full(3, -1), names, prob[:3], names)
    assert empty["expr_n"] == 0 and np.isnan(empty["expr_acc"]) and np.isnan(empty["expr_happy_on_other"])
    headless = expression_scores(labels, names, np.zeros((7, 0)), [])
    assert headless["expr_n"] == 6 and np.isnan(headless["expr_acc"])


def _rows(strategy: str, seeds: list[int], auc: list[float], happy_other: list[float]) -> list[dict]:
    rows = []
    for seed, a, h in zip(seeds, auc, happy_other):
        for au, pos in (("AU12", 0.8 + seed / 10), ("AU06", 0.5)):
            rows.append(dict(cell_id=f"{strategy}{seed}", dataset="clip", fold=0, subject="p", seed=seed, k=5, generator="mesh", strategy=strategy,
                             plasticity=0.5, au=au, f1=0.5, f1_base=0.4, f1_other=np.nan, f1_other_base=np.nan, tp=1, fp=1, fn=0, tn=3,
                             tp_base=1, fp_base=0, fn_base=2, tn_base=2, auc=a if au == "AU12" else np.nan, auc_base=0.9,
                             mean_p_pos=pos, mean_p_pos_base=1.0, mean_p_neg=0.3, mean_p_neg_base=0.7, brier=0.2, brier_base=0.25,
                             expr_happy_on_other=h, expr_happy_on_other_base=0.8, expr_happy_on_happy=1.0, expr_happy_on_happy_base=1.0,
                             expr_acc=0.6, expr_acc_base=0.65))  # fmt: skip
    return rows


def test_report_surfaces_the_scores_mean_and_std_over_seeds():
    from experiments.report import headline_markdown, headline_table, per_au_table, summary_table

    df = pd.DataFrame(_rows("si", [0, 1, 2], [0.6, 0.7, 0.8], [0.5, 0.6, 0.7]))
    h = headline_table(df, "AU12").iloc[0]
    assert (h.n_units, h.n_seeds) == (3, 3)
    assert h.auc_mean == pytest.approx(0.7) and h.auc_std == pytest.approx(np.std([0.6, 0.7, 0.8])) and h.auc_base_mean == pytest.approx(0.9)
    assert h.mean_p_pos_mean == pytest.approx(0.9) and h.mean_p_pos_std == pytest.approx(np.std([0.8, 0.9, 1.0]))
    assert h.expr_happy_on_other_mean == pytest.approx(0.6) and h.expr_happy_on_other_base_mean == pytest.approx(0.8)
    md = headline_markdown(headline_table(df, "AU12"))
    assert "AU12 AUC" in md and "0.700 ± 0.082 (0.900)" in md and "0.600 ± 0.082 (0.800)" in md
    per = per_au_table(df).set_index("au")
    assert per.loc["AU12", "brier_mean"] == pytest.approx(0.2) and np.isnan(per.loc["AU06", "auc_mean"])
    s = summary_table(df).iloc[0]
    # macro over AUs with a defined score: AUC from AU12 alone, mean P on positives from both
    assert s.auc_mean == pytest.approx(0.7) and s.mean_p_pos_mean == pytest.approx((0.9 + 0.5) / 2)
    assert s.expr_happy_on_other_mean == pytest.approx(0.6) and s.brier_base_mean == pytest.approx(0.25)
    with pytest.raises(InputError, match="no result rows for AU04"):
        headline_table(df, "AU04")
    # a results table from before these scores: NaN, not an error
    old = df.drop(columns=[c for c in df.columns if c.startswith(("mean_p", "brier", "expr_", "auc"))])
    assert np.isnan(summary_table(old).iloc[0].brier_mean) and np.isnan(per_au_table(old).iloc[0].mean_p_pos_mean)


def test_results_section_is_written_through_results_doc(tmp_path):
    from experiments.report import write_results_section
    from experiments.results_doc import read_section

    doc = tmp_path / "results.md"
    df = pd.DataFrame(_rows("si", [0, 1], [0.6, 0.8], [0.5, 0.7]) + _rows("generic", [0], [0.9], [0.8]))
    write_results_section(df, "experiment_clip", "AU12", command="fewshot experiment run X", note="Coarse labels.", path=doc)
    text = read_section("experiment_clip", path=doc)
    assert "fewshot experiment run X" in text and "Coarse labels." in text
    lines = [ln for ln in text.splitlines() if ln.startswith("| generic") or ln.startswith("| si")]
    assert [ln.split(" | ")[0] for ln in lines] == ["| generic", "| si"]  # baselines first
    assert "0.700 ± 0.100 (0.900)" in lines[1]


# -- through the runner ----------------------------------------------------------------------------
def _shipped_or_skip() -> None:
    from au_models import base_model_path

    if not base_model_path().is_file():
        pytest.skip(f"needs the shipped base model {base_model_path()} (rebuild: python scripts/make_base_model.py)")


def _config(path: Path, desc: Path, out: Path, **over) -> Path:
    cfg = {"name": "clip", "out": str(out), "datasets": [{"name": "clip", "root": str(desc), "folds": [0]}], "k": [2],
           "generators": ["none"], "strategies": ["generic", "calibration"], "seeds": [0], "base": {"checkpoint": "shipped"},
           "protocol": {"reference": "neutral", "max_other_frames": -1}}  # fmt: skip
    cfg.update(over)
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_fold_zero_needs_a_given_base_model_and_edits_give_new_cells(clip_video, tmp_path):
    from experiments.runner import load_config, validate

    _shipped_or_skip()
    desc = describe(tmp_path, clip_video)
    cfg = _config(tmp_path / "c.yaml", desc, tmp_path / "run")
    plan = validate(load_config(cfg))
    assert [c["strategy"] for c in plan.cells] == ["generic", "calibration"] and {c["fold"] for c in plan.cells} == {0}
    assert plan.cells[0]["base"]["checkpoint"] == "shipped" and plan.test_subjects == {("clip", 0): ["person"]}
    # a comment changes nothing; edited labels (same video, same frame count) give new cells
    desc.write_text("# the same labels\n" + desc.read_text())
    assert validate(load_config(cfg)).ids == plan.ids
    describe(tmp_path, clip_video, ranges=[{"frames": [0, 2], "expression": "sad", "aus": {"AU12": 0}}, {"frames": [8, 11], "aus": {"AU12": 1}}])
    assert not set(validate(load_config(cfg)).ids) & set(plan.ids)
    with pytest.raises(ConfigError, match=r"c2.yaml: datasets\[0\].folds: \[0\].*base.checkpoint"):
        validate(load_config(_config(tmp_path / "c2.yaml", desc, tmp_path / "run", base={})))
    with pytest.raises(ConfigError, match="folds are 1, 2 and 3, or \\[0\\] alone"):
        load_config(_config(tmp_path / "c3.yaml", desc, tmp_path / "run", datasets=[{"name": "clip", "root": str(desc), "folds": [0, 1]}]))
    assert not (tmp_path / "run").exists()


def test_a_bad_clip_description_fails_the_run_with_one_line(clip_video, tmp_path):
    from cli import app

    desc = describe(tmp_path, clip_video, ranges=[{"frames": [0, 5], "aus": {"AU12": 0}}, {"frames": [4, 8], "aus": {"AU12": 1}}])
    cfg = _config(tmp_path / "c.yaml", desc, tmp_path / "run")
    res = CliRunner().invoke(app, ["experiment", "run", str(cfg)])
    assert res.exit_code == 2, res.output
    err = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and str(desc) in err[0] and "overlap" in err[0] and "c.yaml" in err[0], res.output
    assert not (tmp_path / "run").exists()


def test_a_synthetic_clip_runs_through_the_runner(clip_video, tmp_path):
    """Two baselines with the shipped base model on the 12-frame clip: the cache detects the faces, the
    references come from the whole clip, only labelled frames are scored, and the new columns agree
    with the counts."""
    from experiments.runner import run_experiment

    _shipped_or_skip()
    desc = describe(tmp_path, clip_video)
    s = run_experiment(_config(tmp_path / "c.yaml", desc, tmp_path / "run"), workers=1)
    assert not s.failed and len(s.ran) == 2
    df = pd.read_parquet(s.results)
    assert sorted(df.strategy.unique()) == ["calibration", "generic"] and set(df.au) == {"AU06", "AU12"}
    refs = [int(r.split(":")[1]) for r in df.references.iloc[0].split(";")]
    assert len(refs) == 2 and all(0 <= r < N_FRAMES for r in refs)
    labelled = [f for f in range(N_FRAMES) if f not in (4, 5, 6) and f not in refs]
    au12 = df[df.au == "AU12"].set_index("strategy")
    assert (au12.n == len(labelled)).all() and (au12.n_pos == sum(f >= 7 for f in labelled)).all()
    assert (au12.expr_n == len(labelled)).all()
    for c in ("mean_p_pos", "mean_p_neg", "brier", "expr_happy_on_other", "expr_happy_on_happy", "expr_acc"):
        assert au12[c].between(0, 1).all() and au12[f"{c}_base"].between(0, 1).all(), c
    g = au12.loc["generic"]
    for c in ("auc", "mean_p_pos", "mean_p_neg", "brier", "expr_acc"):  # generic is the base model itself
        assert g[c] == pytest.approx(g[f"{c}_base"]), c
    # the Brier score is bounded by the mean P's: on 0/1 labels it is >= (1 - mean P pos)^2 share + mean P neg^2 share
    pos, neg = g.n_pos / g.n, 1 - g.n_pos / g.n
    assert g.brier >= pos * (1 - g.mean_p_pos) ** 2 + neg * g.mean_p_neg**2 - 1e-9
    au06 = df[df.au == "AU06"].set_index("strategy")
    assert (au06.n == au06.n_pos).all() and au06.mean_p_neg.isna().all() and au06.auc.isna().all()


@pytest.mark.slow
def test_pexels_clip_baselines_on_the_real_clip(clip, tmp_path, monkeypatch):
    """The shipped description on the real clip: the base model separates laughing from crying frames
    by P(AU12) (README: AUC 0.94) and is far more sensitive on the laughing frames."""
    from experiments.runner import load_config, run_experiment

    _shipped_or_skip()
    monkeypatch.chdir(ROOT)
    cfg = load_config(ROOT / "experiments" / "configs" / "pexels_clip.yaml")
    from dataclasses import replace

    spec = replace(cfg.datasets[0], options={"video": str(clip)})
    cfg = replace(cfg, datasets=[spec], strategies=["generic", "calibration"], out=tmp_path / "run")
    s = run_experiment(cfg, workers=1)
    assert not s.failed
    df = pd.read_parquet(s.results)
    g = df[(df.strategy == "generic") & (df.au == "AU12")].iloc[0]
    assert g.n > 300 and 200 < g.n_pos < g.n
    assert g.auc > 0.85 and g.mean_p_pos > g.mean_p_neg + 0.2
    assert 0 <= g.expr_happy_on_other <= 1 and g.expr_n == g.n
