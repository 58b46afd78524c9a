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

from ..analysis import Analyzer, Face
from ..errors import CheckpointError, NoFaceError
from ..io import FrameSource, read_image
from ..selection import reference_faces
from .config import AdaptConfig, AnalysisConfig
from .loop import tensor_set



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

    def targets(self, model) -> np.ndarray:
        """Training targets of the references: ``labels``, or neutral (every AU absent, intensity 0)."""
        if self.labels is not None:
            return np.asarray(self.labels, np.float32)
        return np.zeros((len(self), len(model.aus) + len(model.intensity_aus)), np.float32)


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
            return References([img], faces[:1], str(references))
        # embeddings cost ~0.1 s a frame: analyse the whole clip without them, embed the chosen frames
        result = Analyzer(backend=config.backend, embed=False).analyze(references, progress=False)
        faces = reference_faces(result, config.reference_frames)
        wanted = {f.frame for f in faces}
        frames = {fr.index: fr.image for fr in FrameSource(references) if fr.index in wanted}
        faces = [dataclasses.replace(f, embedding=an.backend.embed(frames[f.frame], f.landmarks)) for f in faces]
        return References([frames[f.frame] for f in faces], faces, str(references))
    faces, frames = [], []
    for i, img in enumerate(references):
        found = an.analyze_image(np.asarray(img), f"<reference {i}>")
        if found:
            faces.append(dataclasses.replace(found[0], frame=i))
            frames.append(np.asarray(img))
    if not faces:
        raise NoFaceError("no face found in any reference image; use well-lit, roughly frontal faces")
    return References(frames, faces, "<arrays>")


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

    @property
    def summary(self) -> dict:
        return {"rows": self.rows, "rendered": len(self.train) + (len(self.holdout) if self.holdout is not None else 0),
                "train": len(self.train), "holdout": len(self.holdout) if self.holdout is not None else 0,
                "aus": self.grid_aus, "occurrence_threshold": self.occurrence_threshold, "generator": self.generator}


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
    if not config.synthesizes:
        crops, lm = references.aligned(model)
        train = tensor_set(model, crops, lm, references.targets(model))
        return PersonSet(references, train, None, aus, [], threshold, config.synthesis.generator, rows=0)
    grid_aus = synthesizable_aus(model, base_path)
    motion = load_motion_model(config.synthesis.motion) if config.synthesis.motion else None
    # the profile's reference is the most frontal face; hand its pixels over (arrays have no file)
    faces = references.faces
    ref_i = int(np.argmin([float(np.abs(f.pose.rotation[:2]).sum()) for f in faces]))
    profile = fit_profile(faces, image=references.frames[ref_i], motion=motion)
    grid = design_grid(profile, n=config.grid.size, strategy=config.grid.strategy, aus=grid_aus, seed=config.seed)
    mark("design grid")
    batch = generate(profile, grid, size=config.synthesis.render_size, generator=config.synthesis.generator, **config.generator_options())
    mark("synthesize")
    crops, crop_lm, ok = align_faces(batch.images, batch.landmarks, model.align)
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
    )


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
