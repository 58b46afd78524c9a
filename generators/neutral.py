"""How far a face is from neutral, and a profile with its expression taken out.

    from generators.neutral import face_expressions, neutralize_profile
    table = face_expressions(faces)       # one row per face: AUxx_fit codes, expression_score, near_neutral
    profile = neutralize_profile(profile) # shape3d without the source's expression (profile.source_expression)

**Fitted expression.** Each face's 68 landmarks are fitted with the ICT-FaceKit model at the face's own
pose (:func:`generators.facemodel.fit_landmarks`: identity, expression weights, pose) and the weights
read as FACS intensities (:meth:`~generators.facemodel.FaceModel.aus_of_weights`). A neutral face does
not code 0: the landmarks' noise and whatever of a face's own shape the identity basis leaves to the
expression shapes (a low brow codes AU4, a full lower lip AU17) give every neutral face some code. So
the codes are compared with a **neutral population**: :class:`NeutralNorms`, the per-AU mean and
spread of the codes on the 40 neutral photos of the FRL Canada set (``../shared``; never used as
expression data), derived by ``scripts/derive_neutral_norms.py`` into
``generators/data/neutral_norms.json`` (attribution: ``generators/data/FRL_Canada_LICENSE.txt``).

**Expression score** of a face: ``sqrt(sum_AU max(0, z_AU)^2)`` with ``z_AU = (code - mean) / (sd +
SD_FLOOR)``, standard deviations above the neutral population (0 at or below its mean; one AU at
z = 3 scores 3). A face is **near neutral** when its score is at most :attr:`NeutralNorms.threshold`,
the 95th percentile of the population's own scores, each left out of the statistics it is scored
against. An AU is **expressed** when its z exceeds :data:`EXPRESSED_Z`.

**Neutralizing** a profile (:func:`neutralize_profile`): the expressed AUs of its reference face
(fitted as the mesh generator fits it, :func:`generators.facemodel.fit_profile_views`) are taken out of
``shape3d`` (the landmark displacement of their expression shapes, in the profile's head frame and
scale), and recorded in ``PersonProfile.source_expression``; rows are then rendered with absolute AUs.
Closed eyes (:data:`SCORED_ONLY`) count in the score but are never taken out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from fewshot.errors import InputError
from fewshot.landmarks import interocular

from .facemodel import FaceModel, fit_landmarks, fit_profile_views, load_face_model

NORMS_PATH = Path(__file__).with_name("data") / "neutral_norms.json"
SD_FLOOR = 0.3  # FACS units added to each AU's spread: AUs a neutral population never codes (sd 0) stay finite
EXPRESSED_Z = 2.0  # an AU counts as expressed above this many spreads over the neutral mean
NEAR_NEUTRAL_PERCENTILE = 95.0
# AUs the score counts but neutralizing never takes out: closed eyes are not neutral, yet a photo's
# closed lids cannot be opened by moving its pixels
SCORED_ONLY = ("AU43",)


@dataclass(frozen=True, eq=False)
class NeutralNorms:
    """Per-AU mean and spread of the fitted codes of a neutral population (FACS 0..5), and the
    near-neutral threshold of the expression score. ``meta``: source, count, fit settings."""

    aus: tuple[str, ...]
    mean: np.ndarray
    sd: np.ndarray
    threshold: float
    meta: Mapping[str, Any] = field(default_factory=dict)

    def z(self, codes: np.ndarray) -> np.ndarray:
        """(n, len(aus)) codes -> their z against the population."""
        return (np.asarray(codes, float) - self.mean) / (self.sd + SD_FLOOR)

    def score(self, codes: np.ndarray) -> np.ndarray:
        """(n, len(aus)) codes -> (n,) expression scores (module doc)."""
        return np.sqrt((np.maximum(self.z(codes), 0.0) ** 2).sum(-1))

    def expressed(self, codes: Mapping[str, float], removable: bool = False) -> dict[str, float]:
        """{AU: code} of the AUs of ``codes`` above :data:`EXPRESSED_Z` (``removable``: without
        :data:`SCORED_ONLY`, the ones neutralizing can take out)."""
        row = np.array([[codes.get(a, 0.0) for a in self.aus]])
        z = self.z(row)[0]
        return {a: round(float(codes[a]), 3) for a, zz in zip(self.aus, z)
                if zz > EXPRESSED_Z and a in codes and not (removable and a in SCORED_ONLY)}

    def to_json(self) -> dict:
        return {"aus": list(self.aus), "mean": np.round(self.mean, 4).tolist(), "sd": np.round(self.sd, 4).tolist(),
                "threshold": round(float(self.threshold), 4), "meta": dict(self.meta)}


def fit_norms(codes: np.ndarray, aus: Sequence[str], meta: Mapping[str, Any] | None = None) -> NeutralNorms:
    """Norms of a neutral population's (n, len(aus)) codes; the threshold is the
    :data:`NEAR_NEUTRAL_PERCENTILE` of each face's score against the others' statistics."""
    codes = np.asarray(codes, float)
    if codes.ndim != 2 or len(codes) < 5 or codes.shape[1] != len(aus):
        raise InputError(f"neutral norms need (n >= 5, {len(aus)}) codes, got shape {codes.shape}")
    loo = []
    for i in range(len(codes)):
        rest = np.delete(codes, i, axis=0)
        loo.append(NeutralNorms(tuple(aus), rest.mean(0), rest.std(0), 0.0).score(codes[i:i + 1])[0])
    thr = float(np.percentile(loo, NEAR_NEUTRAL_PERCENTILE))
    return NeutralNorms(tuple(aus), codes.mean(0), codes.std(0), thr, MappingProxyType({**(meta or {}), "n": len(codes)}))


@lru_cache(maxsize=2)
def _read_norms(path: str) -> NeutralNorms:
    p = Path(path)
    try:
        d = json.loads(p.read_text())
        return NeutralNorms(tuple(d["aus"]), np.asarray(d["mean"], float), np.asarray(d["sd"], float), float(d["threshold"]),
                            MappingProxyType(dict(d.get("meta", {}))))
    except FileNotFoundError:
        raise InputError(f"{p}: no neutral norms file; rebuild it with `python scripts/derive_neutral_norms.py`") from None
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{p}: not a neutral norms file ({e}); rebuild it with `python scripts/derive_neutral_norms.py`") from None


def load_neutral_norms(path: str | Path | None = None) -> NeutralNorms:
    """The shipped norms (default) or a file written by ``scripts/derive_neutral_norms.py``."""
    return _read_norms(str(Path(path) if path is not None else NORMS_PATH))


def fitted_codes(landmarks: np.ndarray, image_size: tuple[int, int], pose=None, aus: Sequence[str] = (),
                 model: FaceModel | None = None) -> dict[str, float]:
    """FACS codes {AU: 0..5} of one face's fitted expression (module doc): (68, 2) px ``landmarks`` in
    an image of ``image_size`` (width, height), ``pose`` its head pose (a start for the fit)."""
    model = load_face_model() if model is None else model
    fit = fit_landmarks(np.asarray(landmarks, float), image_size, model, pose=pose)
    return model.aus_of_weights(fit.expression, list(aus) or None)


def face_expressions(faces: Sequence[Any], norms: NeutralNorms | None = None, model: FaceModel | None = None) -> pd.DataFrame:
    """One row per face (``fewshot.analysis.Face``-like: ``.landmarks``, ``.image_size``, ``.pose``,
    ``.frame``): ``frame``, the fitted codes ``AUxx_fit`` of the norms' AUs, ``expression_score`` and
    ``near_neutral`` (module doc). About 30 ms a face."""
    norms = load_neutral_norms() if norms is None else norms
    model = load_face_model() if model is None else model
    codes = np.array([[c[a] for a in norms.aus] for c in
                      (fitted_codes(f.landmarks, f.image_size, getattr(f, "pose", None), norms.aus, model) for f in faces)])
    codes = codes.reshape(len(faces), len(norms.aus))
    score = norms.score(codes) if len(faces) else np.zeros(0)
    table = pd.DataFrame(np.round(codes, 3), columns=[f"{a}_fit" for a in norms.aus])
    table.insert(0, "frame", [int(getattr(f, "frame", i)) for i, f in enumerate(faces)])
    table["expression_score"] = np.round(score, 3)
    table["near_neutral"] = score <= norms.threshold
    return table


def expressed_aus(row: Mapping[str, Any], norms: NeutralNorms | None = None) -> dict[str, float]:
    """The expressed AUs {AU: code} of one :func:`face_expressions` row."""
    norms = load_neutral_norms() if norms is None else norms
    return norms.expressed({a: float(row[f"{a}_fit"]) for a in norms.aus if f"{a}_fit" in row})


def neutralize_profile(profile, norms: NeutralNorms | None = None, model: FaceModel | None = None):
    """``profile`` (a :class:`generators.profile.PersonProfile`) with the expressed AUs of its reference
    face taken out of ``shape3d`` and recorded in ``source_expression`` (module doc); the profile itself
    when nothing is expressed."""
    norms = load_neutral_norms() if norms is None else norms
    model = load_face_model() if model is None else model
    fit = fit_profile_views(profile, model)
    expressed = norms.expressed(model.aus_of_weights(fit.expression, norms.aus), removable=True)
    if not expressed:
        return profile
    without = model.without_aus(fit.expression, expressed)
    full = model.landmarks(fit.identity, fit.expression).astype(float)
    delta = full - model.landmarks(fit.identity, without).astype(float)  # (68, 3) mm, the model's head frame
    to_profile = np.asarray(profile.pose.matrix).T @ fit.pose.matrix
    scale = profile.iod_mm / float(interocular(full[:, :2]))
    shape = np.asarray(profile.shape3d, float) - scale * delta @ to_profile.T
    return replace(profile, shape3d=shape, source_expression=MappingProxyType(dict(expressed)))


__all__ = ["NeutralNorms", "face_expressions", "expressed_aus", "fit_norms", "fitted_codes", "load_neutral_norms",
           "neutralize_profile", "EXPRESSED_Z", "SD_FLOOR"]
