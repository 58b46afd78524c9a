"""Grid design: columns, balance, determinism, strategies, semantic masks, the design CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fewshot.errors import ConfigError
from fewshot.landmarks import interocular
from generators import design_grid, fit_profile, grid_balance, semantic_masks
from generators.grid import SEM_COLUMNS, TX, TY, default_cooccurrence, label_expressions

AUS8 = ["AU01", "AU02", "AU04", "AU06", "AU09", "AU12", "AU25", "AU26"]
BINS9 = [(y, p) for y in (-20, 0, 20) for p in (-10, 0, 10)]


@pytest.fixture(scope="module")
def profile(example_image):
    return fit_profile(example_image)


def test_columns_exactly(profile):
    df = design_grid(profile, n=20, aus=["AU06", "AU12", "AU17"], seed=1)
    expected = ["sample_id", "seed", "yaw", "pitch", "roll", "pose_bin", "AU06", "AU12", "AU17", "expression"] + TX + TY + SEM_COLUMNS
    assert list(df.columns) == expected
    assert SEM_COLUMNS == ["sem_AU06", "sem_AU17", "sem_AU04", "sem_AU09", "sem_AU10"]
    assert (df.sem_AU04 == 0).all() and df[SEM_COLUMNS].max().max() <= 1
    on17 = df.AU17 > 0
    assert (df.sem_AU17[on17] > 0).all() and (df.sem_AU17[~on17] == 0).all()


def test_balanced_500_over_8_aus_and_9_bins(profile):
    df = design_grid(profile, n=500, strategy="balanced", aus=AUS8, pose_bins=BINS9, seed=7)
    assert len(df) == 500 and df.sample_id.is_unique
    share = (df[AUS8] > 0).mean()
    assert share.between(0.4, 0.6).all(), share
    counts = df.pose_bin.value_counts()
    assert len(counts) == 9 and (abs(counts / 500 - 1 / 9) <= 0.1 / 9).all(), counts
    # every intensity A..E used about equally for every AU
    for a in AUS8:
        per = np.bincount(df[a].astype(int), minlength=6)[1:]
        assert per.min() >= per.max() - 2
    # poses stay inside their bins (jitter +-2 degrees)
    centre = df.pose_bin.str.extract(r"yaw([+-]\d+)_pitch([+-]\d+)").astype(float).to_numpy()
    assert np.abs(df[["yaw", "pitch"]].to_numpy() - centre).max() <= 2.0 + 1e-9
    # ... and never outside the outer bins
    outer = np.abs(np.array(BINS9)[:, :2]).max(0)
    assert df.yaw.abs().max() <= outer[0] and df.pitch.abs().max() <= outer[1]
    assert df.yaw.abs().max() > outer[0] - 1  # the outer bins are still reached
    bal = grid_balance(df)
    assert set(bal.kind) == {"au", "pose_bin", "expression"}
    assert bal.set_index("name").loc["AU12", "count"] == (df.AU12 > 0).sum()
    json.dumps(df.attrs)  # JSON-safe: survives parquet
    assert df.attrs["balance"][0]["name"] == "AU01"


def test_same_seed_same_grid_other_seed_differs(profile):
    a = design_grid(profile, n=300, aus=AUS8, pose_bins=BINS9, seed=3)
    b = design_grid(profile, n=300, aus=AUS8, pose_bins=BINS9, seed=3)
    c = design_grid(profile, n=300, aus=AUS8, pose_bins=BINS9, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert not a[AUS8].equals(c[AUS8])


def test_targets_are_the_profile_landmarks(profile):
    df = design_grid(profile, n=5, aus=["AU12", "AU25"], seed=0)
    r = df.iloc[3]
    lm = np.column_stack([r[TX].to_numpy(float), r[TY].to_numpy(float)])
    expect = profile.landmarks_for(r.yaw, r.pitch, r.roll, {"AU12": r.AU12, "AU25": r.AU25})
    assert np.allclose(lm, expect)


def test_factorial_full_and_subsampled(profile):
    full = design_grid(profile, n=None, strategy="factorial", aus=["AU06", "AU12", "AU25"], pose_bins=BINS9, levels=(0, 2, 4))
    assert len(full) == 9 * 27
    assert len(full.drop_duplicates(["pose_bin", "AU06", "AU12", "AU25"])) == 9 * 27
    sub = design_grid(profile, n=90, strategy="factorial", aus=["AU06", "AU12", "AU25"], pose_bins=BINS9)
    assert (sub.pose_bin.value_counts() == 10).all()
    excl = design_grid(profile, n=None, strategy="factorial", aus=["AU26", "AU27"], pose_bins=[(0, 0)])
    assert not ((excl.AU26 > 0) & (excl.AU27 > 0)).any() and len(excl) == 3
    with pytest.raises(ConfigError, match="full factorial"):
        design_grid(profile, n=None, strategy="factorial", aus=list(profile.motion.aus))


def test_cooccurrence_follows_the_matrix(profile):
    aus = ["AU06", "AU12", "AU04"]
    # AU06 and AU12 always together (share 0.4), AU04 never with either (share 0.3)
    J = np.array([[0.4, 0.4, 0.0], [0.4, 0.4, 0.0], [0.0, 0.0, 0.3]])
    df = design_grid(profile, n=3000, strategy="cooccurrence", aus=aus, cooccurrence=J, seed=0)
    on = df[aus].to_numpy() > 0
    assert abs(on[:, 0].mean() - 0.4) < 0.05 and abs(on[:, 2].mean() - 0.3) < 0.05
    assert on[on[:, 0], 1].mean() > 0.95 and on[~on[:, 0], 1].mean() < 0.05
    assert on[on[:, 0], 2].mean() < 0.05
    # defaults: EMFACS mixture (happiness makes 6 and 12 co-occur)
    d = design_grid(profile, n=3000, strategy="cooccurrence", aus=["AU06", "AU12", "AU15"], seed=0)
    on = d[["AU06", "AU12", "AU15"]].to_numpy() > 0
    assert on[on[:, 0], 1].mean() > 2 * on[~on[:, 0], 1].mean()
    assert default_cooccurrence(["AU06", "AU12"]).shape == (2, 2)


def test_expression_labels():
    aus = ["AU01", "AU02", "AU05", "AU06", "AU12", "AU14", "AU26"]
    inten = np.array([[0, 0, 0, 3, 3, 0, 0], [3, 3, 2, 0, 0, 0, 3], [0, 0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 4, 4, 0], [0] * 7], float)
    assert list(label_expressions(inten, aus)) == ["happiness", "surprise", "contempt", "none", "none"]


def test_errors(profile):
    with pytest.raises(ConfigError, match="unknown grid strategy"):
        design_grid(profile, strategy="random")
    with pytest.raises(ConfigError, match="AU16"):
        design_grid(profile, aus=["AU16"])
    with pytest.raises(ConfigError):
        design_grid(profile, n=0)


def test_semantic_masks_cover_the_right_regions(profile):
    lm = profile.landmarks
    h, w = profile.image.shape[:2]
    masks = semantic_masks(lm, h, w)
    assert set(masks) == {"AU06", "AU17", "AU04", "AU09", "AU10"}
    for m in masks.values():
        assert m.shape == (h, w) and m.dtype == np.float32 and 0 <= m.min() and m.max() <= 1 and m.max() > 0.9
    iod = interocular(lm)
    at = lambda m, p: m[int(round(p[1])), int(round(p[0]))]  # noqa: E731
    below_lip = (lm[57] + lm[8]) / 2
    assert at(masks["AU17"], below_lip) > 0.9 and at(masks["AU17"], lm[30]) < 0.05
    under_eye = lm[41] + np.array([0, 0.12 * iod])
    assert at(masks["AU06"], under_eye) > 0.5 and at(masks["AU06"], lm[57]) < 0.05
    assert at(masks["AU04"], (lm[21] + lm[22]) / 2) > 0.5 and at(masks["AU04"], lm[8]) < 0.05
    assert at(masks["AU10"], (lm[33] + lm[51]) / 2) > 0.9
    assert at(masks["AU09"], lm[29]) > 0.5


def test_design_cli_writes_parquet_and_sheet(tmp_path):
    from cli import app
    from fewshot.data import example_photo
    from fewshot.io import read_image

    try:
        import pyarrow  # noqa: F401

        suffix = ".parquet"
    except ImportError:  # an environment whose pyarrow does not import: the CSV path must still work
        suffix = ".csv"
    out, sheet = tmp_path / f"grid{suffix}", tmp_path / "sheet.png"
    res = CliRunner().invoke(app, ["design", "--photo", str(example_photo()), "--out", str(out), "--n", "60", "--seed", "2", "--sheet", str(sheet)])
    assert res.exit_code == 0, res.output
    df = pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out)
    assert len(df) == 60 and list(df.columns[:6]) == ["sample_id", "seed", "yaw", "pitch", "roll", "pose_bin"]
    if suffix == ".parquet":
        assert df.attrs["seed"] == 2 and df.attrs["strategy"] == "expressions"
    img = read_image(sheet)
    assert img.shape[0] >= 256 and img.std() > 10
    bad = CliRunner().invoke(app, ["design", "--photo", str(tmp_path / "none.jpg"), "--out", str(out)])
    assert bad.exit_code == 2 and "no such file" in bad.output
    bad2 = CliRunner().invoke(app, ["design", "--photo", str(example_photo()), "--out", str(out), "--strategy", "x"])
    assert bad2.exit_code == 2 and "unknown grid strategy" in bad2.output


# -- the typed grid ------------------------------------------------------------------------------------

def test_grid_object_round_trips_the_table(profile):
    from generators import Grid
    from generators.aus import intensity_level

    df = design_grid(profile, n=30, aus=["AU12", "AU06", "AU17", "AU25"], seed=4, strategy="balanced")
    g = Grid.from_table(df)
    back = g.to_table()
    assert back.equals(df) and list(back.columns) == list(df.columns) and (back.dtypes == df.dtypes).all()
    assert back.attrs == df.attrs
    assert g.aus == ("AU12", "AU06", "AU17", "AU25") and g.intensities.shape == (30, 4)
    assert g.targets.shape == (30, 68, 2) and g.pose.shape == (30, 3) and g.seeds.dtype == np.int64
    assert np.array_equal(g.targets[..., 0], df[TX].to_numpy()) and np.array_equal(g.targets[..., 1], df[TY].to_numpy())
    assert np.array_equal(g.pose, df[["yaw", "pitch", "roll"]].to_numpy())
    # semantic levels are found by AU name: AU06's channel carries 0.3 x AU12's level when AU12 pulls harder
    sem06 = g.semantic[:, g.semantic_aus.index("AU06")]
    lv = {a: intensity_level(g.intensities[:, g.aus.index(a)]) for a in ("AU06", "AU12", "AU17")}
    assert np.allclose(sem06, np.maximum(lv["AU06"], 0.3 * lv["AU12"])) and (sem06 > lv["AU06"]).any()
    assert np.allclose(g.semantic[:, g.semantic_aus.index("AU17")], lv["AU17"])
    assert (g.semantic[:, g.semantic_aus.index("AU04")] == 0).all()
    # a slice keeps the rows and the record; au_matrix fills AUs outside the design with 0
    part = g[5:9]
    assert len(part) == 4 and np.array_equal(part.sample_ids, [5, 6, 7, 8]) and part.source_fingerprint == g.source_fingerprint
    m = g.au_matrix(["AU01", "AU12"])
    assert (m[:, 0] == 0).all() and np.array_equal(m[:, 1], df.AU12.to_numpy())
    assert g.row_aus(0) == {a: float(df.loc[0, a]) for a in g.aus if df.loc[0, a] > 0}


def test_semantic_aus_are_one_definition():
    import generators.appearance as appearance
    import generators.semantic as semantic

    assert appearance.SEMANTIC_AUS is semantic.SEMANTIC_AUS
    assert set(appearance.PROCEDURAL) == set(semantic.SEMANTIC_AUS)
    assert SEM_COLUMNS == [f"sem_{a}" for a in semantic.SEMANTIC_AUS]


def test_design_without_au06_still_raises_its_cheeks(profile):
    """AU12 drives the AU06 channel by name even when AU06 is not designed (no positional sem[:, 0])."""
    df = design_grid(profile, n=20, aus=["AU17", "AU12"], seed=0)
    on = df.AU12 > 0
    assert (df.sem_AU06[on] > 0).all() and (df.sem_AU06[~on] == 0).all()
    assert (df.sem_AU17[df.AU17 > 0] > 0).all()


@pytest.mark.parametrize("edit, match", [
    (lambda t: t.assign(AU12=t.AU12 + 7), "AU12 outside 0..5"),
    (lambda t: t.assign(AU12=-t.AU12 - 1), "AU12 outside 0..5"),
    (lambda t: t.drop(columns=["tx_3"]), "lacks column.*tx_3"),
    (lambda t: t.drop(columns=["yaw"]), "lacks column.*yaw"),
    (lambda t: t.assign(ty_7=np.nan), "non-finite target"),
    (lambda t: t.rename(columns={"AU12": "AU99"}), "'AU99' is not an AU column.*known AUs"),
    (lambda t: t.rename(columns={"AU06": "AU6"}), "'AU6' is not an AU column.*rename it 'AU06'"),
    (lambda t: t.rename(columns={"AU12": "AU12_r"}), "rename it 'AU12'"),
    (lambda t: t.drop(columns=["AU12"]), "lacks the column.*AU12 of AUs its design lists"),
    (lambda t: t.assign(sem_AU12=0.5), "'sem_AU12' is not a semantic channel"),
    (lambda t: t.assign(sem_AU06=3.0), "sem_AU06 outside 0..1"),
    (lambda t: t.assign(sem_AU17=np.nan), "sem_AU17 outside 0..1"),
])
def test_grid_validation_names_the_file_and_the_remedy(profile, edit, match):
    from generators import Grid

    df = design_grid(profile, n=8, aus=["AU06", "AU12", "AU17"], seed=0)
    bad = edit(df.copy())
    bad.attrs = dict(df.attrs)
    with pytest.raises(ConfigError, match=match) as e:
        Grid.from_table(bad, path="grids/p1.csv")
    assert str(e.value).startswith("grids/p1.csv: ") and "\n" not in str(e.value)


def test_balance_reads_through_the_grid(profile):
    from generators import Grid

    df = design_grid(profile, n=40, aus=["AU06", "AU12"], seed=2)
    a, b = grid_balance(df), grid_balance(Grid.from_table(df))
    pd.testing.assert_frame_equal(a, b)
    assert a.set_index("name").loc["AU06", "count"] == (df.AU06 > 0).sum()
    assert df.attrs["balance"] == a.astype(object).where(a.notna(), None).to_dict("records")
    # hand-made rows without pose_bin / expression columns: only the AU part
    rows = df.drop(columns=["pose_bin", "expression"])
    assert set(grid_balance(rows).kind) == {"au"}


def test_grid_records_its_source_photo(tmp_path, profile):
    from fewshot.data import example_photo
    from fewshot.io import read_image
    from generators import source_fingerprint

    df = design_grid(profile, n=6, seed=0)
    assert df.attrs["source_fingerprint"] == source_fingerprint(read_image(example_photo()))
    assert df.attrs["source_fingerprint"] != source_fingerprint(read_image(example_photo("smiling")))
    named = design_grid(fit_profile(example_photo()), n=6, seed=0)
    from generators.grid import file_sha1

    assert named.attrs["source_sha1"] == file_sha1(example_photo()) and named.attrs["source"] == str(example_photo())
    assert named.attrs["source_fingerprint"] == df.attrs["source_fingerprint"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_written_grids_keep_their_attrs(tmp_path, profile, suffix):
    from generators import write_grid
    from generators.grid import grid_sidecar
    from generators.store import read_grid

    df = design_grid(profile, n=12, aus=["AU06", "AU12"], seed=1)
    path = tmp_path / f"grid{suffix}"
    write_grid(df, path)
    back = read_grid(path)
    assert back.attrs["source_fingerprint"] == df.attrs["source_fingerprint"] and back.attrs["seed"] == 1
    assert np.allclose(back[TX + TY].to_numpy(), df[TX + TY].to_numpy())
    assert grid_sidecar(path).exists() == (suffix == ".csv")
    if suffix == ".csv":  # an edited CSV no longer matches its sidecar: its record is not trusted
        back.iloc[:6].to_csv(path, index=False)
        assert "source_fingerprint" not in read_grid(path).attrs


def test_tile_sheet_spaces_and_captions():
    from generators import tile_sheet

    images = np.stack([np.full((32, 32, 3), 20 * i, np.uint8) for i in range(10)])
    sheet = tile_sheet(images, [f"#{i}\nline two" for i in range(10)], n=4, cols=2, tile=64)
    assert sheet.dtype == np.uint8 and sheet.ndim == 3 and sheet.shape[1] == 2 * 64
    cell = sheet.shape[0] // 2
    assert cell > 64  # a caption strip under each tile
    tiles = [sheet[r * cell:r * cell + 64, c * 64:(c + 1) * 64] for r in range(2) for c in range(2)]
    assert [int(t[32, 32, 0]) for t in tiles] == [0, 60, 120, 180]  # images 0, 3, 6, 9: evenly spaced, ends included
    strip = sheet[64:cell, :64]
    assert strip.min() < 128 and np.median(strip) == 255  # dark text on white
    assert tile_sheet(images).shape == (2 * 32, 6 * 32, 3)  # all ten, six per row, no captions
    with pytest.raises(ConfigError, match="uint8"):
        tile_sheet(images.astype(np.float32))
    with pytest.raises(ConfigError, match="captions"):
        tile_sheet(images, ["a"])


def test_landmark_sheet_is_built_on_the_tiler(profile):
    from generators import contact_sheet

    df = design_grid(profile, n=9, aus=["AU06", "AU12"], seed=0)
    sheet = contact_sheet(profile, df, n=9, tile=128)
    assert sheet.dtype == np.uint8 and sheet.shape[1] == 3 * 128 and sheet.shape[0] > 3 * 128
    green = (sheet[..., 1] > 200) & (sheet[..., 0] < 100)
    assert green.sum() > 500  # the targets are drawn


def test_default_grid_is_faces_people_make_with_every_au_balanced(profile):
    """The default 'expressions' design: BP4D's and DISFA's AUs (+ AU5, AU20), every EMFACS prototype
    and neutral faces at several intensities, every AU on in a quarter of each pose bin."""
    from generators import DEFAULT_AUS, EXPRESSIONS, grid_balance

    assert {"AU07", "AU10", "AU14", "AU15", "AU17", "AU23", "AU24"} <= set(DEFAULT_AUS) and len(DEFAULT_AUS) == 17
    df = design_grid(profile, n=300, seed=1)
    assert df.attrs["strategy"] == "expressions" and df.attrs["aus"] == list(DEFAULT_AUS)
    on = df[list(DEFAULT_AUS)].to_numpy() > 0
    for b, rows in df.groupby("pose_bin").groups.items():
        share = on[np.asarray(df.index.get_indexer(rows))].mean(0)
        assert np.abs(share - 0.25).max() <= 0.5 / len(rows) + 1e-9, (b, share)
    assert 3.5 < on.sum(1).mean() < 5.0  # about four AUs per face, not half of them
    counts = df.expression.value_counts()
    assert all(counts.get(e, 0) >= 10 for e in EXPRESSIONS), counts
    assert (on.sum(1) == 0).sum() >= 10  # neutral faces
    happy = df[df.expression == "happiness"]
    assert happy.AU12.nunique() >= 3  # several intensities
    bal = grid_balance(df)
    au = bal[bal.kind == "au"]
    assert (au.bin_share_min >= 0.2).all() and (au.bin_share_max <= 0.3).all()
    assert set(bal[bal.kind == "expression"].name) >= set(EXPRESSIONS)


def test_expressions_strategy_options_are_checked(profile):
    with pytest.raises(ConfigError, match="on_share"):
        design_grid(profile, n=20, on_share=1.5)
    df = design_grid(profile, n=60, aus=["AU06", "AU12"], seed=0)  # only happiness fits: the rest balances
    assert set(df.expression) <= {"happiness", "none"} and (df.expression == "happiness").sum() >= 15


def test_expressions_design_keeps_its_shares_with_a_row_or_two_per_bin(profile):
    from generators import DEFAULT_AUS

    df = design_grid(profile, n=24, seed=3)  # 15 pose bins: 1-2 rows each
    on = (df[list(DEFAULT_AUS)].to_numpy() > 0).mean(0)
    assert on.min() >= 0.2, dict(zip(DEFAULT_AUS, on.round(2)))
    assert (df.expression != "none").sum() >= 10  # about half are prototypes (neutral faces are 'none')
