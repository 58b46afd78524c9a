"""Dataset loaders against format-faithful DISFA/BP4D trees (tests/fixtures_au.py), the generic folder and
synthetic loaders, splits, interop lists, and the FRL London set."""

from __future__ import annotations

import pickle
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

from experiments.datasets import AUFrames, DATASETS, export_me_graphau_lists, load_dataset, read_me_graphau_lists
from experiments.datasets.base import LANDMARK_COLUMNS, META_COLUMNS
from fewshot.errors import ConfigError, DatasetFormatError
from tests.fixtures_au import make_bp4d_tree, make_disfa_tree, marker_level, read_marker

KEY = ["subject", "sequence", "frame"]


def assert_matches_planted(frames: AUFrames, planted: pd.DataFrame) -> None:
    """Every planted value equals the loaded one (NaN where NaN), and the rows are exactly the planted ones."""
    got = frames.table
    assert len(got) == len(planted)
    merged = planted.merge(got, on=KEY, how="left", suffixes=("_want", ""), indicator=True)
    assert (merged["_merge"] == "both").all()
    for col in planted.columns:
        if col in KEY:
            continue
        want = merged[f"{col}_want"].to_numpy(np.float64)
        have = merged[col].to_numpy(np.float64)
        np.testing.assert_allclose(have, want, atol=1e-3, equal_nan=True, err_msg=col)


@pytest.fixture(scope="module")
def disfa_video(tmp_path_factory):
    return make_disfa_tree(tmp_path_factory.mktemp("disfa_video") / "DISFA", variant="video", lm_naming="subject", seed=1)


@pytest.fixture(scope="module")
def disfa_images(tmp_path_factory):
    return make_disfa_tree(tmp_path_factory.mktemp("disfa_img"), subjects=("SN003",), variant="both", lm_naming="l0", missing_landmark=1, seed=2)


@pytest.fixture(scope="module")
def bp4d(tmp_path_factory):
    return make_bp4d_tree(tmp_path_factory.mktemp("bp4d"), subjects=("F001", "M011", "F007"), tasks=("T1", "T2"), seed=3)


# -- DISFA -------------------------------------------------------------------------------------------
def test_disfa_video_labels_landmarks_and_frames(disfa_video):
    root = disfa_video["root"]
    d = load_dataset("disfa", root.parent)  # the parent of DISFA/ works too
    assert d.name == "disfa" and d.root == root
    assert d.aus == ["AU01", "AU02", "AU04", "AU06", "AU09", "AU12", "AU25", "AU26"]
    assert len(d.intensity_aus) == 12
    assert list(d.table.columns[:6]) == META_COLUMNS
    assert d.table["AU01"].dtype == np.int8 and d.table["AU01_int"].dtype == np.float32
    assert_matches_planted(d, disfa_video["table"])
    # inner-mouth corners absent from DISFA's 66 points; the missing frame 5 copies frame 4
    lm = d.landmarks()
    assert np.isnan(lm[:, [60, 64]]).all() and not np.isnan(lm[:, 61]).any()
    sn1 = d.table["subject"] == "SN001"
    np.testing.assert_allclose(lm[sn1][4], lm[sn1][3])
    assert d.info["landmarks_filled"] == {"SN001": 1, "SN002": 1}
    # pixels come from the video, 0-based, in any access order (seek) and sequentially
    assert (d.table["image_path"] == "").all()
    np.testing.assert_array_equal(d.table["video_frame"], d.table["frame"] - 1)
    for i in [7, 2, 3, 4, 11, 0, 13]:
        row = d.table.iloc[i]
        img = d.load_image(row)
        assert img.dtype == np.uint8 and img.shape == (160, 160, 3)
        assert abs(read_marker(img) - marker_level(int(row["frame"]) - 1)) < 8, i
    # a loaded object with open videos still pickles (DataLoader workers)
    clone = pickle.loads(pickle.dumps(d))
    assert abs(read_marker(clone.load_image(5)) - marker_level(5)) < 8


def test_disfa_images_variant_l0_naming_and_frame_choice(disfa_images):
    root = disfa_images["root"]
    d = load_dataset("disfa", root, aus="all")
    assert len(d.aus) == 12
    assert_matches_planted(d, disfa_images["table"])
    assert d.info["frames"] == {"SN003": "images"}  # auto prefers extracted frames
    assert d.table["image_path"].str.endswith(".png").all() and (d.table["video_frame"] == -1).all()
    for i in (0, 9):
        assert abs(read_marker(d.load_image(i)) - marker_level(i)) < 8
    # missing first landmark file: nearest neighbour is the next frame
    lm = d.landmarks()
    np.testing.assert_allclose(lm[0], lm[1])
    v = load_dataset("disfa", root, frames="video", landmarks=False)
    assert v.info["frames"] == {"SN003": "video"} and v.table[LANDMARK_COLUMNS].isna().all().all()
    assert abs(read_marker(v.load_image(9)) - marker_level(9)) < 8


def test_disfa_threshold_option(disfa_video):
    d = load_dataset("disfa", disfa_video["root"], threshold=4, landmarks=False, frames="none")
    t = d.table
    known = t["AU12_int"].notna()
    np.testing.assert_array_equal(t.loc[known, "AU12"], (t.loc[known, "AU12_int"] >= 4).astype(int))
    assert (t.loc[t["AU12_int"] == 3, "AU12"] == 0).all()


def test_disfa_subject_with_missing_au_rows_is_unknown(tmp_path):
    planted = make_disfa_tree(tmp_path, subjects=("SN001",), n_frames=6, missing_landmark=None)
    f = tmp_path / "ActionUnit_Labels" / "SN001" / "SN001_au26.txt"
    f.write_text("".join(f"{i},0\n" for i in range(1, 5)))  # frames 5 and 6 not coded for AU26
    d = load_dataset("disfa", tmp_path)
    assert d.table["AU26"].tolist() == [0, 0, 0, 0, -1, -1]
    assert d.table["AU26_int"].isna().tolist() == [False] * 4 + [True] * 2
    assert len(planted["table"]) == 6


@pytest.mark.parametrize(
    "content, line, what",
    [
        ("1,0\n2,0\nabc\n", 3, "abc"),
        ("1,0\n2,0,1\n", 2, "2 comma-separated"),
        ("1,0\n2,7\n", 2, "0..5"),
        ("1,0\n1,2\n", 2, "twice"),
        ("0,1\n", 1, "1-based"),
    ],
)
def test_disfa_malformed_label_names_file_and_line(tmp_path, content, line, what):
    make_disfa_tree(tmp_path, subjects=("SN001",), n_frames=3, missing_landmark=None)
    bad = tmp_path / "ActionUnit_Labels" / "SN001" / "SN001_au4.txt"
    bad.write_text(content)
    with pytest.raises(DatasetFormatError) as e:
        load_dataset("disfa", tmp_path)
    assert f"SN001_au4.txt:{line}:" in str(e.value) and what in str(e.value)


def test_disfa_layout_errors(tmp_path):
    make_disfa_tree(tmp_path, subjects=("SN001",), n_frames=3, missing_landmark=None)
    (tmp_path / "ActionUnit_Labels" / "SN001" / "SN001_au6.txt").unlink()
    with pytest.raises(DatasetFormatError, match="SN001_au6.txt"):
        load_dataset("disfa", tmp_path)
    with pytest.raises(ConfigError, match="ActionUnit_Labels"):
        load_dataset("disfa", tmp_path / "Landmark_Points")
    with pytest.raises(ConfigError, match="no such folder"):
        load_dataset("disfa", tmp_path / "nowhere")


def test_disfa_corrupt_landmark_file(tmp_path):
    make_disfa_tree(tmp_path, subjects=("SN001",), n_frames=3, missing_landmark=None)
    bad = tmp_path / "Landmark_Points" / "SN001" / "tmp_frame_lm" / "SN001_0001_lm.mat"
    bad.write_bytes(b"not a mat file at all")
    with pytest.raises(DatasetFormatError, match="SN001_0001_lm.mat"):
        load_dataset("disfa", tmp_path)
    import scipy.io

    scipy.io.savemat(bad, {"points": np.zeros((66, 2))})
    with pytest.raises(DatasetFormatError, match="no variable 'pts'"):
        load_dataset("disfa", tmp_path)


# -- BP4D --------------------------------------------------------------------------------------------
def test_bp4d_labels_unknowns_landmarks_and_images(bp4d):
    d = load_dataset("bp4d", bp4d["root"])
    assert d.aus == ["AU01", "AU02", "AU04", "AU06", "AU07", "AU10", "AU12", "AU14", "AU15", "AU17", "AU23", "AU24"]
    assert d.intensity_aus == ["AU06", "AU10", "AU12", "AU14", "AU17"]
    assert_matches_planted(d, bp4d["table"])
    # 9 = not coded -> -1 (occurrence) / NaN (intensity); planted at ~10%
    raw = np.concatenate([v[:, 1:] for v in bp4d["occ_raw"].values()])
    assert (d.table[[f"AU{a:02d}" for a in range(1, 28)]].to_numpy() == -1).sum() == (raw == 9).sum() > 0
    assert d.table["AU06_int"].isna().any()
    lm = d.landmarks()
    assert np.isnan(lm[:, :17]).all() and np.isnan(lm[:, [60, 64]]).all()
    empty = [(s, t, f) for (s, t), f in bp4d["empty_landmark"].items()]
    for s, t, f in empty:
        row = d.table.index[(d.table.subject == s) & (d.table.sequence == t) & (d.table.frame == f)][0]
        assert np.isnan(lm[row]).all()
    assert (~np.isnan(lm[:, 17:60])).all(axis=(1, 2)).sum() == len(d) - len(empty)
    for i in (0, 5, 30):
        row = d.table.iloc[i]
        assert row["image_path"].endswith(f"/{row['subject']}/{row['sequence']}/{row['frame']}.jpg")
        assert abs(read_marker(d.load_image(row)) - marker_level(int(row["frame"]) - 40)) < 8


def test_bp4d_zero_padded_frames_and_filters(tmp_path):
    planted = make_bp4d_tree(tmp_path / "BP4D", subjects=("F002",), tasks=("T1", "T3"), n_frames=5, pad=True, start_frame=7, seed=4)
    d = load_dataset("bp4d", tmp_path, tasks=["T3"])
    assert d.table["sequence"].unique().tolist() == ["T3"]
    assert_matches_planted(d, planted["table"][planted["table"].sequence == "T3"])
    assert d.table["image_path"].iloc[0].endswith("T3/0007.jpg")
    assert abs(read_marker(d.load_image(4)) - marker_level(4)) < 8
    # landmark frame offset is an option: shifting it moves which track entry a frame reads
    shifted = load_dataset("bp4d", tmp_path, tasks=["T3"], lm_first_frame=0)
    np.testing.assert_allclose(shifted.landmarks()[0], d.landmarks()[1])
    assert not np.allclose(shifted.landmarks()[0][17:60], d.landmarks()[0][17:60])


@pytest.mark.parametrize(
    "target, content, match",
    [
        ("occ", "0,1,2\n40,1,0\n41,1\n", r"F001_T1.csv:3: 2 columns"),
        ("occ", "0,1,2\n40,1,0\n41,x,0\n", r"F001_T1.csv:3: value 'x'"),
        ("occ", "0,1,2\n40,1,5\n", r"F001_T1.csv:2: AU02 = 5"),
        ("occ", "frame,AU1\n40,1\n", r"F001_T1.csv:1: header"),
        ("int", "40,1\n41,6\n", r"F001_T1_AU12.csv:2: intensity 6"),
        ("int", "40,1\n41\n", r"F001_T1_AU12.csv:2: expected 'frame,intensity'"),
    ],
)
def test_bp4d_malformed_files_name_file_and_line(tmp_path, target, content, match):
    make_bp4d_tree(tmp_path, subjects=("F001",), n_frames=3)
    p = tmp_path / "AUCoding" / ("AU_OCC/F001_T1.csv" if target == "occ" else "AU_INT/AU12/F001_T1_AU12.csv")
    p.write_text(content)
    with pytest.raises(DatasetFormatError, match=match):
        load_dataset("bp4d", tmp_path, aus=[1, 2])


def test_bp4d_layout_and_landmark_errors(tmp_path):
    make_bp4d_tree(tmp_path, subjects=("F001",), n_frames=3)
    with pytest.raises(ConfigError, match="AUCoding"):
        load_dataset("bp4d", tmp_path / "2DFeatures")
    (tmp_path / "AUCoding" / "AU_OCC" / "F001-T1.csv").write_text("0,1\n")
    with pytest.raises(DatasetFormatError, match="F001-T1.csv"):
        load_dataset("bp4d", tmp_path)
    (tmp_path / "AUCoding" / "AU_OCC" / "F001-T1.csv").unlink()
    (tmp_path / "2DFeatures" / "F001_T1.mat").write_bytes(b"garbage")
    with pytest.raises(DatasetFormatError, match="F001_T1.mat"):
        load_dataset("bp4d", tmp_path)
    shutil.rmtree(tmp_path / "2DFeatures")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        d = load_dataset("bp4d", tmp_path)
    assert d.table[LANDMARK_COLUMNS].isna().all().all() and any("landmark files missing" in str(x.message) for x in w)


# -- splits, subsets, registry -------------------------------------------------------------------------
def test_splits_follow_me_graphau_folds(bp4d):
    d = load_dataset("bp4d", bp4d["root"], landmarks=False)
    expected_test = {1: {"F007"}, 2: {"M011"}, 3: {"F001"}}  # F001 part1, M011 part2, F007 part3
    for fold, test_subjects in expected_test.items():
        train, test = d.split(fold)
        assert set(test.subjects()) == test_subjects
        assert set(train.subjects()) == {"F001", "M011", "F007"} - test_subjects
        assert len(train) + len(test) == len(d)
    train, test = d.split("fold1")
    assert test.table["subject"].eq("F007").all() and test.info["fold"] == 1
    with pytest.raises(ConfigError, match="fold"):
        d.split(4)
    sub = d.subset(["M011"])
    assert sub.subjects() == ["M011"] and len(sub) == len(d.table[d.table.subject == "M011"])
    with pytest.raises(ConfigError, match="F099"):
        d.subset(["F099"])


def test_split_warns_about_subjects_in_no_part(disfa_video, tmp_path):
    d = load_dataset("disfa", disfa_video["root"], landmarks=False, frames="none")
    train, test = d.split(3)  # SN001, SN002 are both in part1
    assert test.subjects() == ["SN001", "SN002"] and len(train) == 0
    custom = {"DISFA": {"parts": {"part1": ["SN001"], "part2": [], "part3": []}}}
    with pytest.warns(UserWarning, match="SN002"):
        train, test = d.split(3, splits=custom)
    assert test.subjects() == ["SN001"] and len(train) == 0


def test_registry_and_options():
    assert set(DATASETS.names()) >= {"disfa", "bp4d", "folder", "london", "synthetic"}
    with pytest.raises(ConfigError, match="unknown dataset"):
        load_dataset("affwild", ".")
    with pytest.raises(ConfigError, match="threshhold"):
        load_dataset("disfa", ".", threshhold=2)


# -- generic folder, synthetic, interop ---------------------------------------------------------------
def test_folder_csv_loader(tmp_path, example_image):
    from fewshot.io import write_image

    write_image(tmp_path / "ann" / "a.png", example_image)
    write_image(tmp_path / "ann" / "b.png", example_image[:, ::-1])
    (tmp_path / "labels.csv").write_text(
        "image_path,AU1,au12_c,AU12_r,expression,x_30,y_30\n"
        "ann/a.png,1,0,0.5,neutral,10.5,20\n"
        "ann/b.png,,1,9,smiling,11,21\n"
    )
    d = load_dataset("folder", tmp_path)
    t = d.table
    assert d.aus == ["AU01", "AU12"] and d.intensity_aus == ["AU12"]
    assert t["subject"].tolist() == ["ann", "ann"]  # from the parent folder
    assert t["AU01"].tolist() == [1, -1] and t["AU12"].tolist() == [0, 1]
    assert t["AU12_int"].iloc[0] == 0.5 and np.isnan(t["AU12_int"].iloc[1])
    assert t["expression"].tolist() == ["neutral", "smiling"]
    assert d.landmarks()[1, 30].tolist() == [11, 21] and np.isnan(d.landmarks()[0, 0]).all()
    np.testing.assert_array_equal(d.load_image(1)[:, ::-1], d.load_image(0))
    (tmp_path / "bad.csv").write_text("image_path,AU01\nann/a.png,1\nann/b.png,yes\n")
    with pytest.raises(DatasetFormatError, match=r"bad.csv:3: column AU01"):
        load_dataset("folder", tmp_path / "bad.csv")
    (tmp_path / "gone.csv").write_text("image_path,AU01\nann/a.png,1\nann/zzz.jpg,1\n")
    with pytest.raises(DatasetFormatError, match=r"gone.csv:3: image .*zzz.jpg"):
        load_dataset("folder", tmp_path / "gone.csv")


def test_synthetic_hdf5_loader(tmp_path):
    import h5py

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)
    aus = rng.uniform(0, 5, (5, 3)).astype(np.float32)
    aus[0, 1] = aus[3, 2] = 0.0
    with h5py.File(tmp_path / "syn.h5", "w") as f:
        f.create_dataset("images", data=images)
        f.create_dataset("aus", data=aus).attrs["au_names"] = ["AU6", "AU12", "AU17"]
        f.create_dataset("landmarks", data=rng.uniform(0, 32, (5, 68, 2)))
        f.create_dataset("pose", data=rng.normal(0, 0.2, (5, 3)))
        f.create_dataset("expression", data=np.array([b"smile", b"neutral", b"smile", b"x", b"y"]))
        f.attrs["seed"] = 7
        f.attrs["subject"] = "alice"
    d = load_dataset("synthetic", tmp_path / "syn.h5", threshold=2.0)
    assert d.aus == ["AU06", "AU12", "AU17"] and d.info["seed"] == 7
    np.testing.assert_allclose(d.intensity(), aus)
    # FACS / DISFA: present from B, absent at 0, a trace in between unknown
    np.testing.assert_array_equal(d.occurrence(), np.where(aus >= 2, 1, np.where(aus <= 0, 0, -1)).astype(np.int8))
    assert "trace" in d.info["occurrence"]
    np.testing.assert_array_equal(d.load_image(3), images[3])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(d)).load_image(4), images[4])
    assert d.table["subject"].eq("alice").all() and d.table["expression"].iloc[0] == "smile"
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f.create_dataset("images", data=images)
    with pytest.raises(DatasetFormatError, match="'aus'"):
        load_dataset("synthetic", tmp_path / "bad.h5")


def test_me_graphau_lists_roundtrip(bp4d, tmp_path):
    d = load_dataset("bp4d", bp4d["root"], landmarks=False)
    files = export_me_graphau_lists(d, tmp_path, fold=1)
    assert files["test_img"].name == "BP4D_test_img_path_fold1.txt"
    paths = files["test_img"].read_text().splitlines()
    assert paths and all(p.startswith("F007/T") and p.endswith(".jpg") for p in paths)
    known = d.table[(d.table.subject == "F007") & (d.occurrence() >= 0).all(axis=1)]
    assert len(paths) == len(known)  # frames with an unknown protocol AU are dropped
    back = read_me_graphau_lists(files["test_img"], files["test_label"], bp4d["root"] / "2D+3D", d.aus)
    merged = back.table.merge(d.table, on=KEY, suffixes=("", "_orig"))
    assert len(merged) == len(paths)
    for a in d.aus:
        np.testing.assert_array_equal(merged[a], merged[f"{a}_orig"])
    assert abs(read_marker(back.load_image(0)) - marker_level(int(back.table.frame.iloc[0]) - 40)) < 8


# -- real data -----------------------------------------------------------------------------------------
@pytest.mark.shared
def test_london_loader(london):
    d = load_dataset("london", london)
    assert len(d) == 80 and len(d.subjects()) == 40
    assert d.aus == ["AU12"] and (d.table["AU12"] == -1).all()  # no AU was coded
    assert set(d.table["expression"]) == {"neutral", "smiling"}
    assert d.table.loc[d.table.subject == "001", "age"].iloc[0] == 24
    img = d.load_image(0)
    assert img.shape == (1350, 1350, 3)
    proxy = load_dataset("london", london.parent, proxy_au12=True)
    np.testing.assert_array_equal(proxy.table["AU12"], (proxy.table["expression"] == "smiling").astype(int))


def test_synthetic_loader_reads_stage3_store(tmp_path):
    """A store written by stage 3 (pose in degrees, yaw/pitch/roll) loads with OpenFace radians."""
    from generators import design_grid, fit_profile
    from generators.store import synthesize
    from fewshot.data import example_photo

    prof = fit_profile(str(example_photo()))
    grid = design_grid(prof, n=8, seed=1)
    out = tmp_path / "s.h5"
    synthesize(prof, grid, out, size=64, chunk=4)
    fr = load_dataset("synthetic", out)
    assert len(fr.table) == 8
    np.testing.assert_allclose(np.degrees(fr.table.pose_Ry.to_numpy()), grid.yaw.to_numpy(), atol=1e-3)
    np.testing.assert_allclose(np.degrees(fr.table.pose_Rx.to_numpy()), grid.pitch.to_numpy(), atol=1e-3)
    assert fr.load_image(0).shape == (64, 64, 3)
