"""Stage 4: alignment, cache, backbones, checkpoints, metrics, training, train-base and predict."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from au_models.align import AlignConfig, align_faces, canonical_template, similarity_matrices
from au_models.cache import AlignedSet
from au_models.metrics import au_metrics, f1_score, icc_3_1, per_subject_metrics, roc_auc, summarize
from au_models.model import AUModel, fused_for_inference, to_tensor
from fewshot.errors import CheckpointError, ConfigError, MissingWeightsError

torch.set_num_threads(1)  # shared CPUs: one thread avoids OpenMP stalls under load


# -- alignment -----------------------------------------------------------------------------------
def _moved(points: np.ndarray, angle: float, scale: float, shift) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return points @ (scale * np.array([[c, -s], [s, c]])).T + np.asarray(shift)


def test_alignment_undoes_a_similarity_and_ignores_missing_points():
    cfg = AlignConfig(crop_size=96)
    tpl = canonical_template(cfg)
    lm = _moved(tpl, 0.3, 2.5, (40, 70))[None].repeat(3, 0)
    lm[1, [27, 36, 0]] = np.nan  # a data set lacking some stable points
    lm[2, :] = np.nan
    lm[2, :2] = [[1, 2], [3, 4]]  # 2 points: cannot align
    m = similarity_matrices(lm, tpl)
    assert np.isfinite(m[:2]).all() and np.isnan(m[2]).all()
    img = np.full((300, 300, 3), 128, np.uint8)
    crops, crop_lm, ok = align_faces([img] * 3, lm, cfg)
    assert crops.shape == (3, 96, 96, 3) and crops.dtype == np.uint8
    assert ok.tolist() == [True, True, False]
    np.testing.assert_allclose(crop_lm[0], tpl, atol=1e-3)
    finite = np.isfinite(crop_lm[1]).all(1)
    np.testing.assert_allclose(crop_lm[1][finite], tpl[finite], atol=1e-3)
    assert np.isnan(crop_lm[1][[27, 36, 0]]).all() and (crops[2] == 0).all()


def test_alignment_matches_umeyama_and_moves_pixels():
    from fewshot.landmarks import STABLE, similarity_transform

    cfg = AlignConfig()
    tpl = canonical_template(cfg)
    rng = np.random.default_rng(0)
    lm = _moved(tpl, -0.2, 0.7, (10, 20)) + rng.normal(0, 1.0, tpl.shape)
    m = similarity_matrices(lm[None], tpl)[0]
    np.testing.assert_allclose(m, similarity_transform(lm[STABLE], tpl[STABLE]), atol=1e-8)
    # a bright dot at the nose tip lands on the template's nose tip
    img = np.zeros((200, 200, 3), np.uint8)
    x, y = np.round(lm[30]).astype(int)
    img[y - 2 : y + 3, x - 2 : x + 3] = 255
    crops, crop_lm, _ = align_faces([img], lm[None], cfg)
    yy, xx = np.nonzero(crops[0][..., 0] > 128)
    assert abs(xx.mean() - crop_lm[0, 30, 0]) <= 1.0 and abs(yy.mean() - crop_lm[0, 30, 1]) <= 1.0
    assert np.linalg.norm(crop_lm[0, 30] - tpl[30]) < 4  # and near the template's nose tip


# -- backbones and model ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["compact", "geometry", "resnet18"])
def test_backbones_forward_shapes(name):
    torch.manual_seed(0)
    model = AUModel(name, aus=["AU01", "AU12"], intensity_aus=["AU12"], align=AlignConfig(crop_size=64)).eval()
    x = torch.rand(3, 3, 64, 64)
    lm = torch.from_numpy(canonical_template(AlignConfig(crop_size=64))).float().expand(3, -1, -1).clone()
    lm[0, :10] = float("nan")
    with torch.no_grad():
        out = model(x, lm)
    assert out["occ_logits"].shape == (3, 2) and out["intensity"].shape == (3, 1) and out["expr_logits"].shape == (3, 8)
    assert out["features"].shape == (3, model.backbone.out_dim)
    assert torch.isfinite(out["features"]).all()
    assert ((out["intensity"] >= 0) & (out["intensity"] <= 5)).all()
    fused = fused_for_inference(model)
    with torch.no_grad():
        torch.testing.assert_close(fused(x, lm)["occ_logits"], out["occ_logits"], atol=1e-4, rtol=1e-4)


def test_geometry_backbone_reads_landmarks():
    torch.manual_seed(0)
    model = AUModel("geometry", aus=["AU12"], align=AlignConfig(crop_size=64)).eval()
    x = torch.rand(1, 3, 64, 64)
    lm = torch.from_numpy(canonical_template(AlignConfig(crop_size=64))).float()[None]
    with torch.no_grad():
        a = model(x, lm)["features"]
        b = model(x, lm + torch.randn_like(lm) * 3)["features"]
    assert not torch.allclose(a, b)


def test_resnet18_weights_are_never_downloaded(tmp_path):
    with pytest.raises(MissingWeightsError, match="never downloaded"):
        AUModel("resnet18", backbone_config={"weights": str(tmp_path / "none.pth")})
    from torchvision.models import resnet18

    torch.manual_seed(1)
    ref = resnet18(weights=None)
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    m = AUModel("resnet18", backbone_config={"weights": str(tmp_path / "r18.pth")})
    torch.testing.assert_close(m.backbone.net.conv1.weight, ref.conv1.weight)


def test_unknown_backbone_is_a_config_error():
    with pytest.raises(ConfigError, match="compact"):
        AUModel("vgg")


# -- metrics ---------------------------------------------------------------------------------------
def test_f1_and_auc_agree_with_sklearn_with_unknowns_masked():
    from sklearn.metrics import f1_score as sk_f1
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, (300, 4)).astype(np.int8)
    y[rng.random(y.shape) < 0.2] = -1
    p = np.clip(0.35 * y + rng.random(y.shape) * 0.7, 0, 1).round(2)  # ties on purpose
    tab = au_metrics(y, p, ["AU01", "AU02", "AU04", "AU06"])
    for j in range(4):
        k = y[:, j] >= 0
        assert tab.f1[j] == pytest.approx(sk_f1(y[k, j], p[k, j] >= 0.5))
        assert tab.auc[j] == pytest.approx(roc_auc_score(y[k, j], p[k, j]))
        assert tab.n[j] == k.sum() and tab.n_pos[j] == (y[:, j] == 1).sum()
    assert summarize(tab)["macro_f1"] == pytest.approx(tab.f1.mean())
    assert np.isnan(roc_auc(np.array([1, 1, -1]), np.array([0.2, 0.3, 0.9])))
    assert np.isnan(f1_score(np.array([0, 0]), np.array([0, 0])))


SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], float)


def test_icc_3_1_matches_a_hand_computed_anova():
    y = SHROUT_FLEISS  # Shrout & Fleiss (1979) Table 2: 6 targets x 4 judges
    n, k = y.shape
    grand = sum(sum(r) for r in y) / (n * k)
    row_means = [sum(r) / k for r in y]
    col_means = [sum(y[i][j] for i in range(n)) / n for j in range(k)]
    ss_total = sum((y[i][j] - grand) ** 2 for i in range(n) for j in range(k))
    ss_rows = k * sum((m - grand) ** 2 for m in row_means)
    ss_cols = n * sum((m - grand) ** 2 for m in col_means)
    bms = ss_rows / (n - 1)
    ems = (ss_total - ss_rows - ss_cols) / ((n - 1) * (k - 1))
    expected = (bms - ems) / (bms + (k - 1) * ems)
    assert bms == pytest.approx(11.24, abs=0.01) and ems == pytest.approx(1.02, abs=0.01)  # the paper's Table 3
    assert icc_3_1(y) == pytest.approx(expected) and icc_3_1(y) == pytest.approx(0.71, abs=0.005)
    # consistency: a constant offset of one rater does not matter, a reversal does
    t = np.array([0, 1, 2, 3, 4, 5.0])
    assert icc_3_1(np.stack([t, t + 1], 1)) == pytest.approx(1.0)
    assert icc_3_1(np.stack([t, 5 - t], 1)) < 0


def test_intensity_metrics_mask_nan_and_per_subject_rows():
    true = np.array([[0, 1, 2, 3, np.nan, 5]], float).T
    pred = np.array([[0, 1, 2, 3, 0.0, 4]], float).T
    occ = (np.nan_to_num(true, nan=-1) >= 2).astype(np.int8)
    occ[4] = -1
    tab = au_metrics(occ, pred / 5, ["AU12"], true, pred, ["AU12"])
    assert tab.n_int[0] == 5 and tab.mae[0] == pytest.approx(0.2)
    assert tab.icc[0] == pytest.approx(icc_3_1(np.stack([true[[0, 1, 2, 3, 5], 0], pred[[0, 1, 2, 3, 5], 0]], 1)))
    subj = per_subject_metrics(["a", "a", "a", "b", "b", "b"], occ, pred / 5, ["AU12"], true, pred, ["AU12"])
    assert subj.subject.tolist() == ["a", "b"] and subj.n.tolist() == [3, 2]


# -- training ----------------------------------------------------------------------------------------
def planted_set(n: int = 128, size: int = 48, seed: int = 0, subjects: int = 8) -> AlignedSet:
    """Noise crops where AU12 = a bright blob in the lower half, AU04 = a dark bar in the upper half."""
    rng = np.random.default_rng(seed)
    img = rng.integers(60, 120, (n, size, size, 3)).astype(np.uint8)
    occ = rng.integers(0, 2, (n, 2)).astype(np.int8)
    for i in range(n):
        if occ[i, 0]:
            img[i, size // 3 : size // 3 + 4, size // 4 : 3 * size // 4] = 10
        if occ[i, 1]:
            cx = rng.integers(size // 3, 2 * size // 3)
            img[i, 3 * size // 4 - 4 : 3 * size // 4 + 4, cx - 4 : cx + 4] = 250
    occ[rng.random(occ.shape) < 0.1] = -1
    inten = np.where(occ[:, 1:] == 1, 3.0, 0.0).astype(np.float32)
    inten[occ[:, 1:] < 0] = np.nan
    expr = np.where(occ[:, 1] == 1, 1, 0)
    lm = np.repeat(canonical_template(AlignConfig(crop_size=size))[None], n, 0).astype(np.float32)
    return AlignedSet(img, lm, occ, inten, expr, np.array([f"s{i % subjects}" for i in range(n)]), ["AU04", "AU12"], ["AU12"],
                      align=AlignConfig(crop_size=size))  # fmt: skip


def _tiny(seed: int = 0) -> AUModel:
    torch.manual_seed(seed)
    return AUModel("compact", ["AU04", "AU12"], ["AU12"], align=AlignConfig(crop_size=48), backbone_config={"width": 8, "out_dim": 32})


def test_training_learns_a_planted_signal_deterministically():
    from au_models.train import TrainConfig, evaluate, subject_split, train

    data = planted_set()
    fit_s, val_s = subject_split(data.subjects, 0.25, seed=0)
    assert not set(fit_s) & set(val_s)
    cfg = TrainConfig(epochs=12, lr=5e-3, batch_size=16, seed=0, progress=False, jitter_px=1, jitter_deg=2, intensity_weight=50.0, threads=1)
    res = train(_tiny(), data.by_subjects(fit_s), data.by_subjects(val_s), cfg)
    test = planted_set(seed=1)
    tab = evaluate(res.model, test)
    assert (tab.auc > 0.9).all(), tab
    assert tab.icc[tab.au == "AU12"].iloc[0] > 0.5
    short = replace(cfg, epochs=1)
    once, again = (train(_tiny(), data.by_subjects(fit_s), data.by_subjects(val_s), short) for _ in range(2))
    for a, b in zip(once.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="share subjects"):
        train(_tiny(), data, data, cfg)


def test_training_resumes_after_an_interruption(tmp_path, monkeypatch):
    import au_models.train as T

    data = planted_set(n=64, subjects=4)
    fit, val = data.by_subjects(["s0", "s1", "s2"]), data.by_subjects(["s3"])
    cfg = T.TrainConfig(epochs=3, batch_size=16, seed=0, progress=False, patience=10, threads=1)
    full = T.train(_tiny(), fit, val, cfg)
    calls = {"n": 0}
    real = T.summarize

    def flaky(table, aus=None):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(table, aus)

    monkeypatch.setattr(T, "summarize", flaky)
    with pytest.raises(KeyboardInterrupt):
        T.train(_tiny(), fit, val, cfg, checkpoint_dir=tmp_path)
    assert (tmp_path / "last.pt").is_file()
    resumed = T.train(_tiny(seed=5), fit, val, cfg, checkpoint_dir=tmp_path)  # different init: state must come from the file
    assert resumed.history.epoch.tolist() == [1, 2, 3]
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)


# -- checkpoints -------------------------------------------------------------------------------------
def test_checkpoint_round_trip_with_replay(tmp_path):
    from au_models.checkpoint import load_checkpoint, load_replay, save_checkpoint
    from au_models.train import replay_buffer

    model = _tiny().eval()
    data = planted_set(n=40)
    replay = replay_buffer(data, 10, seed=0)
    path = save_checkpoint(tmp_path / "m.pt", model, {"provenance": {"dataset": "planted", "seed": 0, "metrics": {"macro_f1": np.float32(0.5)}}}, replay)
    loaded, meta = load_checkpoint(path)
    x = to_tensor(data.images[:4])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["occ_logits"], model(x)["occ_logits"])
    assert meta["model"]["aus"] == ["AU04", "AU12"] and meta["model"]["intensity_aus"] == ["AU12"]
    assert meta["model"]["backbone"] == "compact" and meta["model"]["backbone_config"]["width"] == 8
    assert meta["preprocessing"]["crop_size"] == 48 and len(meta["preprocessing"]["template"]) == 68
    assert meta["provenance"]["dataset"] == "planted" and "torch" in meta["provenance"]["versions"] and meta["provenance"]["date"]
    assert meta["replay"]["images"].shape == (10, 48, 48, 3) and meta["replay"]["images"].dtype == np.uint8
    assert (meta["replay"]["occ"] == 1).any(0).all()  # every AU's positives are in the buffer
    np.testing.assert_array_equal(load_replay(path)["occ"], replay["occ"])


def test_corrupt_or_foreign_checkpoints_raise_one_line_errors(tmp_path):
    from au_models.checkpoint import load_checkpoint, save_checkpoint

    path = save_checkpoint(tmp_path / "m.pt", _tiny())
    data = path.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.pt").write_text("not a model")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    blob = torch.load(path, weights_only=True)
    blob["state_dict"]["occ_head.linear.weight"] = torch.zeros(5, 3)
    torch.save(blob, tmp_path / "mismatch.pt")
    for name, what in [("truncated", "corrupt"), ("text", "corrupt"), ("foreign", "not a fewshot"), ("mismatch", "does not match"), ("absent", "no such")]:
        with pytest.raises(CheckpointError, match=what) as e:
            load_checkpoint(tmp_path / f"{name}.pt")
        assert "\n" not in str(e.value)


# -- data set -> cache -> train-base -> predict ----------------------------------------------------------
BP4D_SUBJECTS = ("F001", "M001", "F003", "M011", "F007", "F015")  # parts 1, 1, 2, 2, 3, 3


@pytest.fixture(scope="module")
def bp4d_root(tmp_path_factory):
    from tests.fixtures_au import make_bp4d_tree

    root = tmp_path_factory.mktemp("bp4d") / "BP4D"
    make_bp4d_tree(root, subjects=BP4D_SUBJECTS, n_frames=10)
    return root


def test_cache_is_resumable_and_matches_a_clean_build(bp4d_root, tmp_path, monkeypatch):
    import h5py

    import au_models.cache as C
    from experiments.datasets import load_dataset

    monkeypatch.setattr(C, "CHUNK", 8)
    frames = load_dataset("bp4d", bp4d_root)
    clean = C.build_cache(frames, tmp_path / "clean.h5", progress=False)
    calls = {"n": 0}
    real = type(frames).load_image

    def flaky(self, row):
        calls["n"] += 1
        if calls["n"] == 20:
            raise KeyboardInterrupt
        return real(self, row)

    monkeypatch.setattr(type(frames), "load_image", flaky)
    with pytest.raises(KeyboardInterrupt):
        C.build_cache(frames, tmp_path / "resumed.h5", progress=False)
    assert not (tmp_path / "resumed.h5").exists()
    with h5py.File(tmp_path / "resumed.h5.partial", "r") as f:
        assert f.attrs["done"] == 16
    C.build_cache(frames, tmp_path / "resumed.h5", progress=False)
    assert calls["n"] == 20 + len(frames) - 16  # continued at row 16, did not redo the first two chunks
    a, b = C.load_aligned(clean), C.load_aligned(tmp_path / "resumed.h5")
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.occ, frames.occurrence()[: len(a)] if len(a) == len(frames) else a.occ)
    assert len(a) == len(frames) and a.aus == frames.aus and a.images.shape[1:] == (112, 112, 3)
    assert (a.images.reshape(len(a), -1).std(1) > 5).all()  # real faces, not black crops


def test_train_base_cli_then_predict_on_the_example_photo(bp4d_root, tmp_path):
    from typer.testing import CliRunner

    from cli import app
    from fewshot.data import example_photo

    runner = CliRunner()
    out = tmp_path / "m.pt"
    r = runner.invoke(app, ["train-base", "--dataset", "bp4d", "--root", str(bp4d_root), "--fold", "1", "--epochs", "2",
                            "--batch-size", "16", "--out", str(out), "--crop-size", "64", "--threads", "1"])  # fmt: skip
    assert r.exit_code == 0, r.output
    metrics = pd.read_csv(tmp_path / "m.metrics.csv")
    aus = ["AU01", "AU02", "AU04", "AU06", "AU07", "AU10", "AU12", "AU14", "AU15", "AU17", "AU23", "AU24"]
    assert metrics.au.tolist() == aus and (metrics.fold == 1).all()
    assert metrics.n.gt(0).all() and metrics.f1.between(0, 1).all()
    assert set(pd.read_csv(tmp_path / "m.subjects.csv").subject) == {"F007", "F015"}  # fold1 tests part3
    r = runner.invoke(app, ["predict", str(example_photo("smiling")), "--model", str(out), "--out", str(tmp_path / "aus.csv")])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(tmp_path / "aus.csv")
    assert len(df) == 1 and df.success[0] == 1
    assert {"x_0", "pose_Rx", "AU12_r", "AU12_c", "AU12_p", "AU01_c", "expr_happy", "expression"} <= set(df.columns)
    assert 0 <= df.AU12_p[0] <= 1 and 0 <= df.AU12_r[0] <= 5 and df.AU12_c[0] in (0, 1)
    assert df[[c for c in df.columns if c.startswith("expr_")]].sum(1)[0] == pytest.approx(1.0, abs=1e-3)
    r = runner.invoke(app, ["predict", str(example_photo()), "--model", str(tmp_path / "nope.pt")])
    assert r.exit_code == 2 and "no such model file" in r.output


def test_shipped_base_model_card_and_smile(example_image):
    from au_models import base_model_path
    from au_models.checkpoint import load_checkpoint
    from au_models.predict import predict
    from fewshot.data import example_photo

    path = base_model_path()
    if not path.is_file():
        pytest.skip("au_models/data/base.pt not built (python scripts/make_base_model.py)")
    assert path.stat().st_size < 20e6
    model, meta = load_checkpoint(path)
    prov = meta["provenance"]
    assert {"AU06", "AU12"} <= set(model.aus) and prov["seed"] == 0
    assert not set(prov["test_subjects"]) & set(prov["train_subjects"]) and not set(prov["val_subjects"]) & set(prov["train_subjects"])
    assert prov["metrics"]["real_auc_AU12"] >= 0.75  # held-out identities' real smiling vs neutral photos
    assert meta["replay"]["images"].shape[1:] == (112, 112, 3)
    p = {k: predict(model, example_photo(k)) for k in ("neutral", "smiling")}  # identity 001 (a training identity)
    assert p["smiling"].AU12_p[0] > p["neutral"].AU12_p[0] + 0.3 and p["smiling"].AU12_c[0] == 1
    assert p["smiling"].expression[0] == "happy"


def test_cache_marks_unreadable_frames_and_training_skips_them(bp4d_root, tmp_path):
    import shutil

    from au_models.cache import build_cache, load_aligned
    from experiments.datasets import load_dataset

    root = tmp_path / "BP4D"
    shutil.copytree(bp4d_root, root)
    frames = load_dataset("bp4d", root)
    victim = frames.table.image_path[3]
    assert victim
    open(victim, "wb").close()  # an empty (unreadable) frame file
    with pytest.warns(UserWarning, match="1 frame"):
        cache = build_cache(frames, tmp_path / "a.h5", AlignConfig(crop_size=32), progress=False)
    assert len(load_aligned(cache)) == len(frames) - 1
    assert len(load_aligned(cache, only_ok=False)) == len(frames)


def test_checkpoint_validation_buffer_round_trip(tmp_path):
    import numpy as np

    from au_models.checkpoint import load_checkpoint, save_checkpoint
    from au_models.model import AUModel

    m = AUModel("compact", aus=["AU12"], intensity_aus=["AU12"])
    buf = {"images": np.zeros((3, 112, 112, 3), np.uint8), "landmarks": np.zeros((3, 68, 2), np.float32),
           "occ": np.array([[1], [0], [-1]], np.int8), "intensity": np.ones((3, 1), np.float32), "expr": np.zeros(3, np.int64)}
    save_checkpoint(tmp_path / "m.pt", m, {}, replay=buf, validation={**buf, "occ": buf["occ"][::-1].copy()})
    _, meta = load_checkpoint(tmp_path / "m.pt")
    assert meta["validation"]["occ"].ravel().tolist() == [-1, 0, 1]
    assert meta["replay"]["occ"].ravel().tolist() == [1, 0, -1]


def test_shipped_base_model_carries_buffers():
    from au_models.checkpoint import load_checkpoint
    from au_models import base_model_path as default_base_model

    model, meta = load_checkpoint(default_base_model())
    assert default_base_model().stat().st_size < 20e6
    assert len(meta["replay"]["images"]) == len(meta["validation"]["images"]) == 128
    assert set(meta["provenance"]["test_subjects"]).isdisjoint(meta["provenance"]["train_subjects"])
