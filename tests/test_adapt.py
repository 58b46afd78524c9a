"""Stage 5: `adapt_person` / `fewshot adapt` end to end on the shipped example photo with a tiny base
model trained here on synthetic data of two other people (so the test does not depend on the shipped
base model), plus the strategies' rigidity ordering and determinism."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
AUS = ["AU01", "AU04", "AU06", "AU12", "AU25"]


def _synthetic_set(photo, seed, n, align):
    from au_models.align import align_faces
    from generators import design_grid, fit_profile
    from generators.render import generate

    prof = fit_profile(str(photo))
    grid = design_grid(prof, n=n, strategy="balanced", aus=AUS, seed=seed)
    batch = generate(prof, grid, size=96)
    crops, lm, ok = align_faces(batch.images, batch.landmarks, align)
    occ = (grid[AUS].to_numpy() >= 1).astype(np.int8)
    return crops[ok], lm[ok], occ[ok], grid[["AU06", "AU12"]].to_numpy(np.float32)[ok]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory, example_image):
    """A compact model over 5 AUs, 56 px crops, trained 30 epochs (to convergence on its own data, so forgetting is measurable) on synthetic faces of the shipped
    smiling photo mirrored (another "person" than the neutral photo adapted to)."""
    from au_models.align import AlignConfig
    from au_models.cache import AlignedSet
    from au_models.checkpoint import save_checkpoint
    from au_models.model import AUModel
    from au_models.train import TrainConfig, replay_buffer, train
    from fewshot.data import example_photo
    from fewshot.io import read_image, write_image

    d = tmp_path_factory.mktemp("base")
    other = d / "other.jpg"
    write_image(other, read_image(example_photo("smiling"))[:, ::-1])
    align = AlignConfig(crop_size=56)
    c, lm, occ, inten = _synthetic_set(other, 1, 200, align)
    n = len(c)
    subj = np.array(["a"] * (n // 2) + ["b"] * (n - n // 2))
    mk = lambda m: AlignedSet(images=c[m], landmarks=lm[m], occ=occ[m], intensity=inten[m], expr=np.full(m.sum(), -1),  # noqa: E731
                              subjects=subj[m], aus=AUS, intensity_aus=["AU06", "AU12"], align=align)
    torch.manual_seed(0)
    model = AUModel("compact", aus=AUS, intensity_aus=["AU06", "AU12"], align=align)
    res = train(model, mk(subj == "a"), mk(subj == "b"), TrainConfig(epochs=30, lr=3e-3, progress=False, patience=30, augment=False))
    path = d / "tiny_base.pt"
    save_checkpoint(path, res.model, {"occurrence_threshold": 1.0}, replay=replay_buffer(mk(subj == "a"), 64))
    return path


KEYS = {"grid_size": "grid.size", "epochs": "loop.epochs", "render_size": "synthesis.render_size", "batch_size": "loop.batch_size",
        "lr": "loop.lr", "seed": "seed", "strategy": "strategy.name", "plasticity": "strategy.plasticity",
        "reference_frames": "analysis.reference_frames", "generator": "synthesis.generator"}


def _cfg(**kw):
    from fewshot.adaptation import AdaptConfig

    base = dict(grid_size=60, epochs=2, render_size=96, batch_size=16, seed=3)
    base.update(kw)
    return AdaptConfig().override({KEYS[k]: v for k, v in base.items()})


def test_adapt_writes_outputs_and_loads_in_predict(tiny_base, tmp_path):
    from au_models.checkpoint import load_checkpoint
    from fewshot.adaptation import adapt_person
    from fewshot.data import example_photo

    out = tmp_path / "adapted"
    adapt_person(str(example_photo()), base=tiny_base, config=_cfg(strategy="lwf"), out_dir=out, progress=False)
    for f in ("model.pt", "report.json", "synthetic.png", "curves.png", "curves.csv"):
        assert (out / f).is_file(), f
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    rep = json.loads((out / "report.json").read_text())
    assert rep["strategy"] == {"name": "lwf", "parameter": "alpha", "value": 2.0}
    assert rep["synthetic"]["train"] + rep["synthetic"]["holdout"] == rep["synthetic"]["rendered"] > 40
    assert {"base_macro_f1_before", "base_macro_f1_after", "drop"} <= set(rep["rigidity"])
    assert [s["stage"] for s in rep["stages"]] == ["load base model", "analyse", "design grid", "synthesize", "align", "adapt", "evaluate", "write outputs"]
    model, meta = load_checkpoint(out / "model.pt")
    assert meta["adaptation"]["strategy"]["name"] == "lwf"
    assert "replay" in meta  # an adapted model can be adapted again
    # the adapted model predicts like any other (stage 4's predict on a real photo)
    from au_models.predict import predict

    df = predict(out / "model.pt", example_photo())
    assert {"AU12_c", "AU12_r", "AU01_c"} <= set(df.columns) and len(df) == 1


def test_same_seed_same_weights_and_report(tiny_base):
    from fewshot.adaptation import adapt_person
    from fewshot.data import example_photo

    a = adapt_person(str(example_photo()), base=tiny_base, config=_cfg(strategy="ewc"), progress=False, keep_anyway=True)
    b = adapt_person(str(example_photo()), base=tiny_base, config=_cfg(strategy="ewc"), progress=False, keep_anyway=True)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    strip = lambda r: {k: v for k, v in r.to_dict().items() if k != "stages"}  # noqa: E731
    assert json.dumps(strip(a.report)) == json.dumps(strip(b.report))
    c = adapt_person(str(example_photo()), base=tiny_base, config=_cfg(strategy="ewc", seed=4), progress=False, keep_anyway=True)
    assert not all(torch.equal(sa[k], c.model.state_dict()[k]) for k in sa)


def test_rigid_strategies_forget_less_than_naive(tiny_base):
    """High-rigidity EWC and replay keep more of the base model's validation F1 than plastic naive
    fine-tuning on the same person data (same seed, grid and epochs)."""
    from fewshot.adaptation import adapt_person
    from fewshot.data import example_photo

    def drop(strategy, p):
        r = adapt_person(str(example_photo()), base=tiny_base, config=_cfg(strategy=strategy, plasticity=p, epochs=5, lr=2e-3), progress=False, keep_anyway=True)
        return r.report.rigidity["drop"], r.model

    d_naive, m_naive = drop("naive", 1.0)
    d_ewc, m_ewc = drop("ewc", 0.0)
    d_replay, m_replay = drop("replay", 0.0)

    from au_models.checkpoint import load_checkpoint

    base, _ = load_checkpoint(tiny_base)
    ref = dict(base.named_parameters())
    dist = lambda m: sum((p.detach() - ref[k].detach()).pow(2).sum().item() for k, p in m.named_parameters()) ** 0.5  # noqa: E731
    # the weights move less under EWC's penalty, and the base validation F1 drops less
    assert dist(m_ewc) < dist(m_naive)
    assert d_ewc <= d_naive + 1e-9 and d_replay <= d_naive + 1e-9, (d_naive, d_ewc, d_replay)


def test_calibration_lowers_neutral_response(tiny_base):
    from au_models.align import align_faces
    from fewshot.adaptation import adapt_person, calibrate_to_neutral
    from fewshot.analysis import Analyzer
    from fewshot.data import example_photo
    from fewshot.io import read_image
    from au_models.checkpoint import load_checkpoint

    model, _ = load_checkpoint(tiny_base)
    img = read_image(example_photo())
    lm = Analyzer(embed=False).analyze_image(img)[0].landmarks
    crops, clm, _ = align_faces([img], lm[None], model.align)
    before = model.predict_arrays(crops, clm)["occ_prob"][0]
    calibrate_to_neutral(model, crops, clm, strength=1.0, target_prob=0.1)
    after = model.predict_arrays(crops, clm)["occ_prob"][0]
    assert np.all(after <= np.maximum(before, 0.1) + 1e-5)
    assert np.all(after <= 0.1 + 1e-4)
    res = adapt_person(str(example_photo()), base=tiny_base, config=_cfg(strategy="calibration"), progress=False)
    assert res.report.calibration["occ_logit_shift"].keys() == set(AUS)


def run_cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True, timeout=600)


def test_adapt_bad_inputs_exit_2_and_leave_nothing(tiny_base, tmp_path):
    out = tmp_path / "out"
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    p = run_cli("adapt", "--photo", str(bad), "--base", str(tiny_base), "--out", str(out))
    assert p.returncode == 2 and "broken.jpg" in p.stderr and "Traceback" not in p.stderr
    import cv2

    wall = tmp_path / "wall.png"
    cv2.imwrite(str(wall), np.full((200, 200, 3), 90, np.uint8))
    p = run_cli("adapt", "--photo", str(wall), "--base", str(tiny_base), "--out", str(out))
    assert p.returncode == 2 and "no face" in p.stderr and "Traceback" not in p.stderr
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"PK\x03\x04 truncated")
    p = run_cli("adapt", "--base", str(junk), "--out", str(out))
    assert p.returncode == 2 and "junk.pt" in p.stderr and "Traceback" not in p.stderr
    p = run_cli("adapt", "--base", str(tiny_base), "--strategy", "magic", "--out", str(out))
    assert p.returncode == 2 and "magic" in p.stderr
    assert not out.exists()
    assert not [q for q in tmp_path.iterdir() if q.name.endswith(".partial")]


def test_several_reference_images_build_profile_and_calibration(tiny_base, example_image):
    """Several photos (here the photo and its mirror image) are all used: profile and calibration."""
    from fewshot.adaptation import adapt_person

    refs = [example_image, np.ascontiguousarray(example_image[:, ::-1])]
    res = adapt_person(refs, base=tiny_base, config=_cfg(strategy="calibration"), progress=False)
    assert res.report.reference_frames == [0, 1]
    assert res.report.source == "<arrays>"
    assert set(res.report.calibration["occ_logit_shift"]) == set(AUS)


def test_clip_uses_its_best_reference_frames(tiny_base, clip):
    from fewshot.adaptation import adapt_person

    res = adapt_person(str(clip), base=tiny_base, config=_cfg(strategy="calibration", reference_frames=3), progress=False)
    frames = res.report.reference_frames
    assert len(frames) == 3 and len(set(frames)) == 3
    assert all(f < 400 for f in frames)  # not the laughing end of the clip


# -- one pipeline: every generator option reaches synthesis and the report ---------------------------
@pytest.fixture(scope="module")
def generator_files(tmp_path_factory, example_image):
    """A tiny trained refiner, an AU6 appearance learned from the shipped photo pair, a motion model file."""
    from fewshot.analysis import Analyzer
    from fewshot.data import example_photo
    from fewshot.io import read_image
    from generators import design_grid, fit_profile, generate
    from generators.appearance import fit_appearance
    from generators.motion import default_motion_model
    from generators.refiner import COND_AUS, train_refiner

    d = tmp_path_factory.mktemp("genfiles")
    profile = fit_profile(example_image)
    grid = design_grid(profile, n=6, strategy="balanced", seed=1)
    warped = generate(profile, grid, size=48)
    refiner = d / "refiner.pt"
    train_refiner(warped.images, warped.landmarks, np.zeros((6, len(COND_AUS)), np.float32), (warped.images * 0.8).astype(np.uint8),
                  refiner, epochs=3, batch=6, threads=1)
    an = Analyzer(embed=False)
    neutral, smiling = read_image(example_photo()), read_image(example_photo("smiling"))
    pair = (neutral, an.analyze_image(neutral)[0].landmarks, smiling, an.analyze_image(smiling)[0].landmarks)
    appearance = d / "au06.npz"
    fit_appearance([pair], "AU06", 3.0).save(appearance)
    motion = d / "motion.npz"
    default_motion_model().save(motion)
    return {"refiner": refiner, "appearance": appearance, "motion": motion}


def test_cli_adapt_takes_every_generator_option_and_records_it(tiny_base, generator_files, tmp_path):
    from typer.testing import CliRunner

    from cli import app

    out = tmp_path / "adapted"
    args = ["adapt", "--base", str(tiny_base), "--out", str(out), "--grid-size", "20", "--epochs", "1", "--render-size", "64",
            "--generator", "warp+refiner", "--refiner", str(generator_files["refiner"]), "--appearance", str(generator_files["appearance"]),
            "--motion", str(generator_files["motion"])]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())
    syn = rep["config"]["synthesis"]
    assert syn["generator"] == "warp+refiner" and rep["synthetic"]["generator"] == "warp+refiner"
    assert {k: syn[k] for k in ("refiner", "appearance", "motion")} == {k: str(v) for k, v in generator_files.items()}
    assert rep["config"]["grid"]["size"] == 20 and rep["config"]["loop"]["epochs"] == 1
    # an option the generator would ignore, or a missing one it needs, is refused before any work
    r = CliRunner().invoke(app, ["adapt", "--base", str(tiny_base), "--out", str(tmp_path / "b"), "--refiner", str(generator_files["refiner"])])
    assert r.exit_code == 2 and "takes no --refiner" in r.output and not (tmp_path / "b").exists()
    r = CliRunner().invoke(app, ["adapt", "--base", str(tiny_base), "--out", str(tmp_path / "c"), "--generator", "warp+refiner"])
    assert r.exit_code == 2 and "needs --refiner" in r.output


def test_adapt_with_the_mesh_takes_its_expression_texture(tiny_base, tmp_path):
    from typer.testing import CliRunner

    from cli import app
    from generators.appearance import CANONICAL, ExpressionTexture

    tex = tmp_path / "texture.npz"
    ExpressionTexture({"AU12": np.full((CANONICAL, CANONICAL), -0.05, np.float32)}, {"source": "test"}).save(tex)
    out = tmp_path / "adapted"
    r = CliRunner().invoke(app, ["adapt", "--base", str(tiny_base), "--out", str(out), "--grid-size", "12", "--epochs", "1",
                                 "--render-size", "64", "--generator", "mesh", "--texture", str(tex)])
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["config"]["synthesis"]["texture"] == str(tex) and rep["synthetic"]["generator"] == "mesh"
    r = CliRunner().invoke(app, ["adapt", "--base", str(tiny_base), "--out", str(tmp_path / "b"), "--generator", "warp",
                                 "--motion", "facs", "--texture", str(tex)])
    assert r.exit_code == 2 and "takes no --texture" in r.output and not (tmp_path / "b").exists()
    r = CliRunner().invoke(app, ["adapt", "--base", str(tiny_base), "--out", str(tmp_path / "c"), "--generator", "mesh",
                                 "--texture", str(tmp_path / "missing.npz")])
    assert r.exit_code == 2 and "missing.npz" in r.output and not (tmp_path / "c").exists()


def test_refiner_changes_the_synthetic_set(tiny_base, generator_files):
    from fewshot.adaptation import adapt_person

    warp = adapt_person(str(ROOT / "fewshot/data/examples/london_001_neutral.jpg"), base=tiny_base, config=_cfg(strategy="generic"), progress=False)
    cfg = _cfg(strategy="generic").override({"synthesis.generator": "warp+refiner", "synthesis.refiner": str(generator_files["refiner"])})
    refined = adapt_person(str(ROOT / "fewshot/data/examples/london_001_neutral.jpg"), base=tiny_base, config=cfg, progress=False)
    assert warp.person.images.shape == refined.person.images.shape
    assert np.abs(warp.person.images.astype(float) - refined.person.images).mean() > 1.0


def test_no_synthesis_path_packs_the_real_landmarks_for_a_geometry_model(tmp_path, example_image):
    """A landmark-only ('geometry') base model adapts on the real references alone (generator 'none'):
    its inputs carry the references' own aligned landmarks, not the template."""
    from au_models.align import AlignConfig, align_faces, canonical_template
    from au_models.checkpoint import save_checkpoint
    from au_models.model import AUModel
    from fewshot.adaptation import adapt_person
    from fewshot.analysis import Analyzer

    torch.manual_seed(0)
    model = AUModel("geometry", aus=AUS, intensity_aus=["AU12"], align=AlignConfig(crop_size=48))
    base = tmp_path / "geom.pt"
    save_checkpoint(base, model, {"occurrence_threshold": 1.0})
    refs = [example_image, np.ascontiguousarray(example_image[:, ::-1])]
    res = adapt_person(refs, base=base, config=_cfg(strategy="naive", generator="none", epochs=3), progress=False)
    assert res.person.holdout is None and res.report.synthetic["generator"] == "none" and res.report.synthetic["train"] == 2
    lm = np.stack([f[0].landmarks for f in (Analyzer(embed=False).analyze_image(im) for im in refs)])
    _, crop_lm, _ = align_faces(refs, lm, model.align)
    packed = res.person.train.x[:, -136:].numpy().reshape(2, 68, 2)
    assert np.allclose(packed, crop_lm, atol=1e-4)
    assert not np.allclose(packed[0], canonical_template(model.align), atol=0.5)
    before = dict(model.named_parameters())
    assert any(not torch.equal(p, before[k]) for k, p in res.model.named_parameters())
    # trained on neutral references: the person's AU probabilities go down
    p0 = model.predict_arrays(*align_faces(refs, lm, model.align)[:2])["occ_prob"].mean()
    p1 = res.model.predict_arrays(*align_faces(refs, lm, model.align)[:2])["occ_prob"].mean()
    assert p1 < p0


def test_out_folder_edges(tiny_base, tmp_path):
    """An earlier result is replaced only with --overwrite; a folder with other files and a file as
    --out are refused before any work; --epochs 0 is refused; the same seed writes the same bytes."""
    from typer.testing import CliRunner

    from cli import app

    fast = ["--base", str(tiny_base), "--grid-size", "20", "--epochs", "1", "--render-size", "64", "--strategy", "naive"]
    run = lambda *a: CliRunner().invoke(app, ["adapt", *fast, *a])  # noqa: E731
    out = tmp_path / "A"
    assert run("--out", str(out)).exit_code == 0
    first = (out / "model.pt").read_bytes()
    r = run("--out", str(out), "--seed", "1")
    assert r.exit_code == 2 and "--overwrite" in r.output and (out / "model.pt").read_bytes() == first
    r = run("--out", str(out), "--seed", "1", "--overwrite")
    assert r.exit_code == 0 and (out / "model.pt").read_bytes() != first
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp or old folders left
    # same seed, same bytes
    assert run("--out", str(tmp_path / "B")).exit_code == 0
    assert (tmp_path / "B" / "model.pt").read_bytes() == first
    # a folder holding anything else is never written into
    other = tmp_path / "C"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    r = run("--out", str(other), "--overwrite")
    assert r.exit_code == 2 and "notes.txt" in r.output and sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    # a file as --out: refused at once (no analysis, no training output)
    f = tmp_path / "file.txt"
    f.write_text("x")
    r = run("--out", str(f))
    assert r.exit_code == 2 and "is a file" in r.output and "epoch" not in r.output and f.read_text() == "x"
    r = run("--out", str(tmp_path / "D"), "--epochs", "0")
    assert r.exit_code == 2 and "--epochs" in r.output and not (tmp_path / "D").exists()
    for res in (r,):
        assert len([ln for ln in res.output.splitlines() if ln.strip()]) == 1


def test_adapt_is_quiet_and_leaves_nothing_in_temp_when_killed(tiny_base, tmp_path):
    """No third-party chatter on stderr (qpsolvers' 'no QP solver', Avalanche's 'No loggers' and its own
    deprecations), and a run killed mid-training leaves nothing in the temp folder (wandb, which
    Avalanche imports, would create *wandb-media / *wandb-artifacts folders there)."""
    import os
    import signal
    import time

    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp"), "PYTHONWARNINGS": "default"}
    (tmp_path / "tmp").mkdir()
    fast = ["--base", str(tiny_base), "--grid-size", "20", "--render-size", "64"]
    p = subprocess.run([sys.executable, str(ROOT / "cli.py"), "adapt", *fast, "--epochs", "1", "--strategy", "replay", "--out", str(tmp_path / "a")],
                       capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr
    noise = [ln for ln in p.stderr.splitlines() if "epoch" not in ln and "example photo" not in ln and not ln.startswith(("references: ", "guard: "))]
    assert noise == [], noise
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "adapt", *fast, "--epochs", "50", "--strategy", "si", "--out", str(tmp_path / "b")],
                            stderr=subprocess.PIPE, text=True, env=env)
    t0 = time.time()
    while time.time() - t0 < 300 and "epoch" not in proc.stderr.readline():
        pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert os.listdir(tmp_path / "tmp") == []
    assert not (tmp_path / "b").exists() and not [q for q in tmp_path.iterdir() if q.name.startswith(".b.")]


def test_grid_targets_follow_the_models_occurrence_convention():
    import pandas as pd

    from fewshot.adaptation.person import grid_targets

    grid = pd.DataFrame({"AU06": [0.0, 1.0, 2.0, 5.0], "AU12": [1.0, 0.0, 3.0, 0.0]})
    y = grid_targets(grid, ["AU06", "AU12", "AU17"], ["AU12"], threshold=2.0)  # FACS / DISFA: present from B
    np.testing.assert_array_equal(y[:, 0], [0, np.nan, 1, 1])
    np.testing.assert_array_equal(y[:, 1], [np.nan, 0, 1, 0])
    assert np.isnan(y[:, 2]).all() and np.array_equal(y[:, 3], grid.AU12.to_numpy(np.float32))
    old = grid_targets(grid, ["AU06"], [], threshold=1.0)  # a model trained with A counted present
    np.testing.assert_array_equal(old[:, 0], [0, 1, 1, 1])


def test_guard_rejects_a_model_that_loses_and_keep_anyway_keeps_it():
    from fewshot.adaptation.pipeline import keep_or_reject

    before = {"person_holdout": {"macro_f1": 0.60}, "base_validation": {"macro_f1": 0.80}}
    ok = {"person_holdout": {"macro_f1": 0.70}, "base_validation": {"macro_f1": 0.78}}
    bad = {"person_holdout": {"macro_f1": 0.70}, "base_validation": {"macro_f1": 0.70}}
    real_b = {"frames": "clip", "sensitivity": 0.95, "false_alarms": 0.05}
    assert keep_or_reject(before, ok, real_b, {**real_b, "sensitivity": 0.94}, 0.5)["kept"]
    g = keep_or_reject(before, bad, real_b, real_b, 0.5)
    assert not g["kept"] and g["written"] == "base model" and g["failed"] == ["base validation macro F1"]
    assert not keep_or_reject(before, bad, real_b, real_b, 1.0)["kept"]  # a 0.10 drop: more than the 0.06 plasticity 1 allows
    g = keep_or_reject(before, ok, real_b, {**real_b, "sensitivity": 0.80}, 0.5)
    assert not g["kept"] and g["failed"][0].startswith("real-frame sensitivity")
    assert keep_or_reject(before, bad, real_b, real_b, 0.5, keep_anyway=True)["kept"]


def test_si_lambda_acts(tiny_base):
    """Avalanche 0.6's SI stored CPU weights as views of the live parameters (penalty identically 0):
    fixed in loop.normalised_si_plugin, so SI's plasticity changes what is learned."""
    from fewshot.adaptation import adapt_person
    from fewshot.data import example_photo

    runs = [adapt_person(str(example_photo()), base=tiny_base, config=_cfg(strategy="si", plasticity=p, epochs=3, lr=2e-3),
                         progress=False, keep_anyway=True) for p in (0.0, 1.0)]
    from au_models.checkpoint import load_checkpoint

    base, _ = load_checkpoint(tiny_base)
    ref = dict(base.named_parameters())
    dist = [sum((p.detach() - ref[k].detach()).pow(2).sum().item() for k, p in r.model.named_parameters()) ** 0.5 for r in runs]
    assert dist[0] < 0.8 * dist[1], dist


@pytest.mark.slow
def test_pexels_references_are_not_laughing_or_the_profile_is_neutralized(tiny_base):
    from fewshot.adaptation import AdaptConfig, adapt_person
    from tests.conftest import CLIP, _need_shared

    _need_shared()
    r = adapt_person(str(CLIP), base=tiny_base, config=AdaptConfig().override({"grid.size": 20, "loop.epochs": 1}), progress=False)
    refs = r.report.references
    laughing = [f for f in refs["frames"] if 240 <= f <= 471]
    assert refs["near_neutral"] is not None
    if laughing:
        assert refs["near_neutral"] is False and refs["neutralized"], refs
    assert r.report.synthetic["real_frames"]["kind"] == "clip"
