"""The person's data for adaptation: the real references (stage 1) and the synthetic set (stages 2-3),
aligned as the base model expects and split into training and held-out rows.

    refs = analyse_references("photo.jpg", config.analysis)      # References
    person = build_person_set(refs, model, meta, config)          # PersonSet
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from au_models.align import align_faces
from au_models.losses import occurrence_targets
from generators import design_grid, fit_profile, generate, load_motion_model
from generators.aus import AU_CODES, occurrence_from_intensity
from generators.neutral import expressed_aus, face_expressions, load_neutral_norms, neutralize_profile

from ..analysis import Analyzer, Face
from ..errors import CheckpointError, NoFaceError
from ..io import FrameSource, read_image
from ..selection import pick_frames, score_frames, weighted_score
from .config import AdaptConfig, AnalysisConfig
from .loop import tensor_set

# A reference must be detected confidently: a hand over the face lowers dlib's confidence (0.73-0.85 on
# the Pexels clip's hand-over-mouth frames, >= 0.98 on its open faces) and drags the landmarks with it.
MIN_REFERENCE_CONFIDENCE = 0.9
# expression-score units (standard deviations over a neutral population, generators.neutral) above the
# near-neutral threshold (or the clip's least expressive face, when none is near neutral) at which a
# frame's neutral term falls to 1/e
EXPRESSION_SCALE = 1.0
# the face-model fit costs ~30 ms a frame: a clip's frames are ranked by the cheap terms first and the
# expression is fitted on the best of them
EXPRESSION_CANDIDATES = 48
# a clip's real frames in blocks of about a second; every REAL_HOLDOUT_EVERY-th block is held out (the
# guard's real-frame check), the others take part in adaptation. A photo takes part as jittered copies.
REAL_HOLDOUT_EVERY = 4
PHOTO_COPIES = 16


@dataclass
class References:
    """The person's real reference frames (taken as neutral unless ``labels`` says otherwise).

    frames: uint8 RGB frames and ``faces`` their stage-1 faces (what a profile is fitted on); either
    may be empty when only aligned crops are known (an experiment's cache). ``crops`` / ``crop_landmarks``:
    the faces aligned to the base model's crop, (k, S, S, 3) uint8 RGB and (k, 68, 2) crop pixels.
    ``labels``: (k, n_occ + n_int) targets in the model's layout (NaN unknown), None = neutral.
    """

    frames: list[np.ndarray]
    faces: list[Face]
    source: str
    crops: np.ndarray | None = None
    crop_landmarks: np.ndarray | None = None
    labels: np.ndarray | None = None
    expression: pd.DataFrame | None = None  # per reference: frame, AUxx_fit codes, expression_score, near_neutral
    clip_faces: list[Face] | None = field(default=None, repr=False)  # every face of a clip (its unlabeled real frames)
    fps: float = 0.0

    def __len__(self) -> int:
        return len(self.faces) if self.crops is None else len(self.crops)

    @property
    def frame_numbers(self) -> list[int]:
        return [int(f.frame) for f in self.faces]

    def aligned(self, model) -> tuple[np.ndarray, np.ndarray]:
        """(crops, crop landmarks) for ``model``'s alignment (computed once from frames and faces)."""
        if self.crops is None:
            lm = np.stack([f.landmarks for f in self.faces])
            self.crops, self.crop_landmarks, _ = align_faces(self.frames, lm, model.align)
        return self.crops, self.crop_landmarks

    @property
    def near_neutral(self) -> bool | None:
        """Whether the references' least expressive face is near neutral (None: not measured)."""
        if self.expression is None or not len(self.expression):
            return None
        return bool(self.expression["near_neutral"].any())

    def expressed(self) -> list[dict[str, float]]:
        """Per reference, the AUs its fitted expression shows ({} for near-neutral ones; [] unmeasured)."""
        if self.expression is None:
            return []
        return [expressed_aus(row) for _, row in self.expression.iterrows()]

    def targets(self, model) -> np.ndarray:
        """Training targets of the references: ``labels``; else neutral (every AU absent, intensity 0)
        where the face was measured near neutral or not measured, and for an expressive face its
        expressed AUs as coded (present from the model's convention) with the rest unknown."""
        if self.labels is not None:
            return np.asarray(self.labels, np.float32)
        n_occ, n_int = len(model.aus), len(model.intensity_aus)
        y = np.zeros((len(self), n_occ + n_int), np.float32)
        if self.expression is None:
            return y
        for i, (_, row) in enumerate(self.expression.iterrows()):
            if bool(row["near_neutral"]):
                continue
            shown = expressed_aus(row)
            y[i] = np.nan
            for j, a in enumerate(model.aus):
                if a in shown:
                    y[i, j] = occurrence_from_intensity(np.array([shown[a]]))[0]
            for j, a in enumerate(model.intensity_aus):
                if a in shown:
                    y[i, n_occ + j] = shown[a]
        return y

    def summary(self) -> dict:
        """What the report says about the references: frames, how expressive each was, whether any was
        near neutral."""
        out: dict[str, Any] = {"frames": self.frame_numbers}
        if self.expression is not None:
            out.update(near_neutral=self.near_neutral, threshold=round(float(load_neutral_norms().threshold), 3),
                       expression_score=[round(float(v), 3) for v in self.expression["expression_score"]],
                       expressed=self.expressed())
        return out


def choose_references(result, k: int, min_gap: int | None = None) -> tuple[list[Face], pd.DataFrame]:
    """The k reference faces of a clip or folder (an ``AnalysisResult``) and their fitted expressions
    (:func:`generators.neutral.face_expressions`, one row per reference, best first).

    Every face is scored as :func:`fewshot.selection.score_frames` does; faces detected with confidence
    below :data:`MIN_REFERENCE_CONFIDENCE` are candidates only when too few others are; the best
    :data:`EXPRESSION_CANDIDATES` are fitted with the face model, and their neutral term becomes absolute:
    ``exp(-max(0, score - max(threshold, least)) / EXPRESSION_SCALE)`` of the expression score against
    a neutral population (``least``: the least expressive candidate's), so a clip with no neutral frame
    does not make its calmest smile "neutral" (the references' ``near_neutral`` says so), and still
    starts from its least expressive faces."""
    scores = score_frames(result)
    if scores.empty:
        raise NoFaceError(f"{result.source}: no face found in any frame; use a clip with a visible, roughly frontal face")
    if min_gap is None:
        min_gap = int(round(0.5 * result.fps)) if result.fps > 0 else 0
    confident = scores[scores.confidence >= MIN_REFERENCE_CONFIDENCE]
    pool = confident if len(confident) >= k else scores
    pool = pool.sort_values("score", ascending=False, kind="stable").head(max(EXPRESSION_CANDIDATES, 8 * k)).reset_index(drop=True)
    by_frame = {f.frame: f for f in result.faces if f.face_id == 0}
    norms = load_neutral_norms()
    expr = face_expressions([by_frame[fr] for fr in pool.frame], norms)
    score = expr["expression_score"].to_numpy()
    # near neutral is neutral; with no such face the least expressive one is the best there is
    pool["neutral"] = np.exp(-np.maximum(score - max(norms.threshold, float(score.min())), 0.0) / EXPRESSION_SCALE)
    pool["score"] = weighted_score(pool)
    best = pick_frames(pool, k, min_gap)
    expr = expr.set_index("frame").loc[best.frame].reset_index()
    return [by_frame[fr] for fr in best.frame], expr


def analyse_references(references, config: AnalysisConfig = AnalysisConfig()) -> References:
    """Stage 1 on the person: a photo path (its face), a clip or folder (its ``reference_frames`` best
    frames, :func:`fewshot.selection.reference_faces`), or a list of uint8 RGB arrays (the first face
    of each). NoFaceError when no face is found."""
    an = Analyzer(backend=config.backend, embed=True)
    if isinstance(references, (str, os.PathLike)):
        src = FrameSource(references)
        if src.kind == "image":
            img = read_image(references)
            faces = an.analyze_image(img, str(references))
            if not faces:
                raise NoFaceError(f"{references}: no face found in the photo; use a well-lit, roughly frontal face at least 80 px wide")
            return References([img], faces[:1], str(references), expression=face_expressions(faces[:1]))
        # embeddings cost ~0.1 s a frame: analyse the whole clip without them, embed the chosen frames
        result = Analyzer(backend=config.backend, embed=False).analyze(references, progress=False)
        faces, expression = choose_references(result, config.reference_frames)
        wanted = {f.frame for f in faces}
        frames = {fr.index: fr.image for fr in FrameSource(references) if fr.index in wanted}
        faces = [dataclasses.replace(f, embedding=an.backend.embed(frames[f.frame], f.landmarks)) for f in faces]
        every = [f for f in result.faces if f.face_id == 0] if src.kind == "video" else None
        return References([frames[f.frame] for f in faces], faces, str(references), expression=expression,
                          clip_faces=every, fps=float(result.fps or 0.0))
    faces, frames = [], []
    for i, img in enumerate(references):
        found = an.analyze_image(np.asarray(img), f"<reference {i}>")
        if found:
            faces.append(dataclasses.replace(found[0], frame=i))
            frames.append(np.asarray(img))
    if not faces:
        raise NoFaceError("no face found in any reference image; use well-lit, roughly frontal faces")
    return References(frames, faces, "<arrays>", expression=face_expressions(faces))


@dataclass
class RealFrames:
    """The person's own real frames, unlabeled, for adaptation (:func:`real_frames`).

    train / holdout: TensorSets whose occurrence targets are the base model's probabilities where it is
    confident (>= ``confidence`` or <= 1 - it) and NaN elsewhere, intensities NaN; holdout is None for
    a photo. frames: the frame numbers of train then holdout ([] for photo copies). kind: 'clip' | 'photo'.
    """

    train: Any
    holdout: Any
    frames: list[int]
    kind: str
    confidence: float

    @property
    def summary(self) -> dict:
        def confident(ts):
            return 0 if ts is None else int((~np.isnan(ts.y.numpy())).any(1).sum())

        return {"kind": self.kind, "train": len(self.train), "holdout": 0 if self.holdout is None else len(self.holdout),
                "confident_train": confident(self.train), "confident_holdout": confident(self.holdout), "confidence": self.confidence}


def confident_targets(model, crops: np.ndarray, landmarks: np.ndarray, confidence: float) -> np.ndarray:
    """(N, n_occ + n_int) targets in the model layout from ``model``'s own outputs on aligned crops: the
    occurrence probability where it is at least ``confidence`` or at most 1 - ``confidence``, NaN
    elsewhere and for every intensity."""
    p = model.predict_arrays(crops, landmarks)["occ_prob"]
    occ = np.where((p >= confidence) | (p <= 1.0 - confidence), p, np.nan).astype(np.float32)
    return np.concatenate([occ, np.full((len(p), len(model.intensity_aus)), np.nan, np.float32)], axis=1)


def photo_copies(crops: np.ndarray, landmarks: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` jittered copies of aligned crops (uint8 RGB (k, S, S, 3) and (k, 68, 2) crop px): shifts of
    up to 3 px, gain 0.8-1.2 and a gamma 0.8-1.25 (what another photo of the same moment would vary)."""
    rng = np.random.default_rng(seed)
    out, lms = [], []
    for i in range(n):
        j = i % len(crops)
        dx, dy = rng.integers(-3, 4, 2)
        img = np.roll(crops[j], (int(dy), int(dx)), axis=(0, 1)).astype(np.float32) / 255.0
        img = np.clip(rng.uniform(0.8, 1.2) * img ** rng.uniform(0.8, 1.25), 0, 1)
        out.append((img * 255 + 0.5).astype(np.uint8))
        lms.append(landmarks[j] + np.array([dx, dy], np.float32))
    return np.stack(out), np.stack(lms)


def real_frames(references: References, model, confidence: float, seed: int = 0) -> RealFrames:
    """The person's unlabeled real frames aligned for ``model`` (the base model, before adaptation:
    its confident outputs are the targets): every face of a clip, split into adaptation and held-out
    blocks (:data:`REAL_HOLDOUT_EVERY`), or :data:`PHOTO_COPIES` jittered copies of the references."""
    if references.clip_faces:
        faces = sorted(references.clip_faces, key=lambda f: f.frame)
        wanted = {f.frame: f for f in faces}
        imgs, lms, nums = [], [], []
        for fr in FrameSource(references.source):
            if fr.index in wanted:
                imgs.append(fr.image)
                lms.append(wanted[fr.index].landmarks)
                nums.append(fr.index)
        crops, clm, ok = align_faces(imgs, np.stack(lms), model.align)
        crops, clm, nums = crops[ok], clm[ok], np.asarray(nums)[ok]
        y = confident_targets(model, crops, clm, confidence)
        block = nums // max(1, int(round(references.fps or 25.0)))
        hold = block % REAL_HOLDOUT_EVERY == REAL_HOLDOUT_EVERY - 1
        return RealFrames(tensor_set(model, crops[~hold], clm[~hold], y[~hold]), tensor_set(model, crops[hold], clm[hold], y[hold]),
                          [int(v) for v in np.r_[nums[~hold], nums[hold]]], "clip", confidence)
    crops, clm = references.aligned(model)
    crops, clm = photo_copies(crops, clm, PHOTO_COPIES, seed)
    return RealFrames(tensor_set(model, crops, clm, confident_targets(model, crops, clm, confidence)), None, [], "photo", confidence)


@dataclass
class PersonSet:
    """The person's adaptation data, aligned for one base model.

    train / holdout: TensorSets (:mod:`fewshot.adaptation.loop`); holdout is None without synthesis.
    grid: the designed grid (rows that rendered and aligned), images: the rendered crops (render size),
    generator: what rendered them ('none' without synthesis).
    """

    references: References
    train: Any
    holdout: Any
    aus: list[str]  # the model's occurrence AUs
    grid_aus: list[str]  # those the grid synthesizes
    occurrence_threshold: float
    generator: str
    rows: int = 0  # grid rows designed
    grid: pd.DataFrame | None = None
    images: np.ndarray | None = field(default=None, repr=False)
    neutralized: dict = field(default_factory=dict)  # {AU: code} taken out of a profile whose source was not neutral
    neutral: tuple | None = field(default=None, repr=False)  # (crops, crop landmarks) of the person's neutral face
    real: RealFrames | None = field(default=None, repr=False)  # the person's unlabeled real frames

    @property
    def summary(self) -> dict:
        return {"rows": self.rows, "rendered": len(self.train) + (len(self.holdout) if self.holdout is not None else 0),
                "train": len(self.train), "holdout": len(self.holdout) if self.holdout is not None else 0,
                "aus": self.grid_aus, "occurrence_threshold": self.occurrence_threshold, "generator": self.generator,
                "neutralized": dict(self.neutralized), "real_frames": None if self.real is None else self.real.summary}

    def neutral_reference(self, model) -> tuple[np.ndarray, np.ndarray]:
        """(crops, crop landmarks) of the person's neutral face for calibration: the real references,
        or where the profile was neutralized the neutral face rendered at the reference's pose."""
        return self.neutral if self.neutral is not None else self.references.aligned(model)


def grid_targets(grid: pd.DataFrame, aus: Sequence[str], intensity_aus: Sequence[str], threshold: float) -> np.ndarray:
    """Targets in the model layout: occurrence 0/1 (present from ``threshold``, the base model's own
    convention; a trace between 0 and it unknown: :func:`generators.aus.occurrence_from_intensity`) then
    intensity 0..5; NaN where the grid has no such AU column."""
    n = len(grid)
    occ = np.full((n, len(aus)), np.nan, np.float32)
    for j, a in enumerate(aus):
        if a in grid:
            occ[:, j] = occurrence_from_intensity(grid[a].to_numpy(float), threshold)
    inten = np.full((n, len(intensity_aus)), np.nan, np.float32)
    for j, a in enumerate(intensity_aus):
        if a in grid:
            inten[:, j] = grid[a].to_numpy(np.float32)
    return np.concatenate([occ, inten], axis=1)


def buffer_targets(buf: dict, n_occ: int, n_int: int) -> np.ndarray:
    """Targets of a checkpoint's replay/validation buffer (stored int -1 = unknown) in the model layout."""
    occ = occurrence_targets(buf["occ"])
    inten = np.asarray(buf["intensity"], np.float32).reshape(len(occ), -1)[:, :n_int]
    if inten.shape[1] < n_int:
        inten = np.concatenate([inten, np.full((len(occ), n_int - inten.shape[1]), np.nan, np.float32)], 1)
    return np.concatenate([occ[:, :n_occ], inten], axis=1)


def synthesizable_aus(model, base_path) -> list[str]:
    """The base model's AUs that the generators can render (CheckpointError when there is none)."""
    aus = [a for a in model.aus if a in set(AU_CODES)]
    if not aus:
        raise CheckpointError(f"{base_path}: incompatible base model: none of its AUs ({', '.join(model.aus)}) can be synthesized; use a model over FACS AUs")
    return aus


def build_person_set(references: References, model, meta: dict, config: AdaptConfig, base_path: Any = "base model",
                     mark: Callable[[str], None] = lambda stage: None) -> PersonSet:
    """Stages 2-3 for ``references`` and the base ``model``: fit the profile, design the grid, render
    it with the configured generator, align the rendered faces as the model expects and split them into
    training and held-out rows (seeded). Without synthesis (generator 'none') the real references are
    the training rows. ``mark(stage)`` is called after each stage (timings)."""
    aus = list(model.aus)
    threshold = float(meta.get("occurrence_threshold", 1.0))
    real = real_frames(references, model, config.loop.real_confidence, config.seed) if config.loop.real_weight > 0 else None
    if not config.synthesizes:
        crops, lm = references.aligned(model)
        train = tensor_set(model, crops, lm, references.targets(model))
        return PersonSet(references, train, None, aus, [], threshold, config.synthesis.generator, rows=0, real=real)
    grid_aus = synthesizable_aus(model, base_path)
    motion = load_motion_model(config.synthesis.motion) if config.synthesis.motion else None
    # the profile's reference is the most frontal face; hand its pixels over (arrays have no file)
    # the profile's reference: the best reference (they come best first) where their expression was
    # measured, else the most frontal face
    faces = references.faces
    ref_i = 0 if references.expression is not None else int(np.argmin([float(np.abs(f.pose.rotation[:2]).sum()) for f in faces]))
    profile = fit_profile(faces, image=references.frames[ref_i], motion=motion, reference=ref_i)
    expressive = references.expression is not None and not bool(references.expression["near_neutral"].iloc[ref_i])
    if expressive:  # no near-neutral face to start from: take the fitted expression out of the profile
        profile = neutralize_profile(profile)
    grid = design_grid(profile, n=config.grid.size, strategy=config.grid.strategy, aus=grid_aus, seed=config.seed)
    if profile.source_expression:  # and render the neutral face the calibration and the report need
        grid = pd.concat([grid, neutral_row(grid, profile)], ignore_index=True).__finalize__(grid)
    mark("design grid")
    batch = generate(profile, grid, size=config.synthesis.render_size, generator=config.synthesis.generator, **config.generator_options())
    mark("synthesize")
    crops, crop_lm, ok = align_faces(batch.images, batch.landmarks, model.align)
    neutral = None
    if profile.source_expression:
        if ok[-1]:
            neutral = (crops[-1:], crop_lm[-1:])
        crops, crop_lm, ok, grid = crops[:-1], crop_lm[:-1], ok[:-1], grid.iloc[:-1]
        batch = dataclasses.replace(batch, images=batch.images[:-1])
    y = grid_targets(grid, aus, model.intensity_aus, threshold)
    crops, crop_lm, y, grid_ok = crops[ok], crop_lm[ok], y[ok], grid[ok].reset_index(drop=True)
    n = len(crops)
    perm = np.random.default_rng(config.seed).permutation(n)
    n_hold = max(1, int(round(config.loop.holdout * n)))
    hold, train = np.sort(perm[:n_hold]), np.sort(perm[n_hold:])
    mark("align")
    return PersonSet(
        references, tensor_set(model, crops[train], crop_lm[train], y[train]), tensor_set(model, crops[hold], crop_lm[hold], y[hold]),
        aus, grid_aus, threshold, batch.generator, rows=len(grid), grid=grid_ok, images=batch.images[ok],
        neutralized=dict(profile.source_expression), neutral=neutral, real=real,
    )


def neutral_row(grid: pd.DataFrame, profile) -> pd.DataFrame:
    """One more grid row: ``profile``'s neutral face (every AU 0) at its reference's own pose."""
    row = grid.iloc[[0]].copy()
    yaw, pitch, roll = profile.pose_degrees
    row[["yaw", "pitch", "roll"]] = [yaw, pitch, roll]
    for c in row.columns:
        if c.startswith(("AU", "sem_AU")):
            row[c] = 0.0
    if "expression" in row:
        row["expression"] = "neutral"
    lm = profile.landmarks_for(yaw, pitch, roll, {})
    row[[f"tx_{i}" for i in range(68)]] = lm[:, 0]
    row[[f"ty_{i}" for i in range(68)]] = lm[:, 1]
    row["sample_id"] = int(grid["sample_id"].max()) + 1
    return row


def buffer_set(model, buf: dict | None):
    """A checkpoint's replay or validation buffer as a TensorSet for ``model`` (None when absent or empty)."""
    if buf is None or not len(buf.get("images", [])):
        return None
    return tensor_set(model, buf["images"], buf["landmarks"], buffer_targets(buf, len(model.aus), len(model.intensity_aus)))


def labelled_frames_set(model, frames):
    """Real labelled frames of the person (an ``experiments.datasets.AUFrames``) -> TensorSet, aligned
    with their own landmarks (or stage 1's)."""
    t = frames.table
    imgs = [frames.load_image(i) for i in range(len(t))]
    lm = frames.landmarks() if hasattr(frames, "landmarks") else np.full((len(t), 68, 2), np.nan)
    if np.isnan(lm).all():
        an = Analyzer(embed=False)
        found = [an.analyze_image(im) for im in imgs]
        lm = np.stack([f[0].landmarks if f else np.full((68, 2), np.nan) for f in found])
    crops, clm, ok = align_faces(imgs, lm, model.align)
    occ = np.full((len(t), len(model.aus)), np.nan, np.float32)
    for j, a in enumerate(model.aus):
        if a in t:
            occ[:, j] = occurrence_targets(t[a].to_numpy(float))
    y = np.concatenate([occ, np.full((len(t), len(model.intensity_aus)), np.nan, np.float32)], 1)
    return tensor_set(model, crops[ok], clm[ok], y[ok])
