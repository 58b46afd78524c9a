"""The FACS Action Unit vocabulary the generators speak, and the A..E intensity scale.

Column names are ``AU01``, ``AU02``, ... ``AU45`` (two digits) everywhere. Intensities are FACS
0..5: 0 absent, 1..5 = A (trace), B (slight), C (marked), D (severe), E (maximum).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from fewshot.errors import ConfigError


@dataclass(frozen=True)
class ActionUnit:
    number: int
    name: str  # FACS name
    region: str  # the part of the face it moves

    @property
    def code(self) -> str:
        return au_code(self.number)


_TABLE = [
    (1, "inner brow raiser", "brows"),
    (2, "outer brow raiser", "brows"),
    (4, "brow lowerer", "brows and glabella"),
    (5, "upper lid raiser", "upper eyelids"),
    (6, "cheek raiser", "cheeks, lower eyelids, crow's feet"),
    (7, "lid tightener", "eyelids"),
    (9, "nose wrinkler", "nose, glabella, upper lip"),
    (10, "upper lip raiser", "upper lip, nasolabial furrow"),
    (12, "lip corner puller", "lip corners, cheeks"),
    (14, "dimpler", "lip corners"),
    (15, "lip corner depressor", "lip corners"),
    (17, "chin raiser", "chin boss, lower lip"),
    (20, "lip stretcher", "lip corners"),
    (23, "lip tightener", "lips"),
    (24, "lip presser", "lips"),
    (25, "lips part", "lips"),
    (26, "jaw drop", "jaw, lower lip"),
    (27, "mouth stretch", "jaw, lips"),
    (43, "eyes closed", "upper eyelids"),
    (45, "blink", "upper eyelids"),
]

AU_VOCABULARY: dict[str, ActionUnit] = {f"AU{n:02d}": ActionUnit(n, name, region) for n, name, region in _TABLE}
AU_CODES: tuple[str, ...] = tuple(AU_VOCABULARY)

# AUs that open the mouth: without one of them the inner lips touch.
MOUTH_OPENING = ("AU25", "AU26", "AU27")
# AUs that cannot be on together (the later one supersedes or contradicts the earlier).
EXCLUSIVE = (("AU43", "AU45"), ("AU26", "AU27"), ("AU05", "AU43"), ("AU05", "AU45"))

INTENSITY_LETTERS = "ABCDE"
MAX_INTENSITY = 5.0


def au_code(au: int | str) -> str:
    """Normalise 1, '1', 'AU1', 'au01', 'AU01_r' -> 'AU01'. Raises ConfigError for an unknown AU."""
    m = re.fullmatch(r"(?i)(?:au)?0*(\d+)(?:_[a-z]+)?", str(au).strip())
    if not m:
        raise ConfigError(f"{au!r} is not an Action Unit; use e.g. AU12 or 12 (known: {', '.join(AU_CODES)})")
    code = f"AU{int(m.group(1)):02d}"
    if code not in AU_VOCABULARY:
        raise ConfigError(f"{code} is not in the vocabulary; known AUs: {', '.join(AU_CODES)}")
    return code


def parse_aus(aus) -> list[str]:
    """A list of AU codes from a sequence or a comma-separated string, de-duplicated, order kept."""
    items = aus.split(",") if isinstance(aus, str) else list(aus)
    out: list[str] = []
    for a in items:
        if str(a).strip():
            c = au_code(a)
            if c not in out:
                out.append(c)
    if not out:
        raise ConfigError("no Action Units given; name at least one, e.g. AU06,AU12")
    return out


def letter_to_intensity(letter: str) -> int:
    """FACS intensity letter A..E -> 1..5 ('0' or '' -> 0)."""
    s = str(letter).strip().upper()
    if s in ("", "0"):
        return 0
    if len(s) != 1 or s not in INTENSITY_LETTERS:
        raise ConfigError(f"{letter!r} is not a FACS intensity; use A, B, C, D or E")
    return INTENSITY_LETTERS.index(s) + 1


def intensity_to_letter(value: float) -> str:
    """Intensity 0..5 -> '' (absent) or A..E (rounded to the nearest level)."""
    k = int(np.clip(np.round(value), 0, 5))
    return "" if k == 0 else INTENSITY_LETTERS[k - 1]


def parse_au_spec(spec: str) -> dict[str, float]:
    """'6C+12C+25B' or '6+12' (default C) -> {'AU06': 3, 'AU12': 3, 'AU25': 2}."""
    out: dict[str, float] = {}
    for part in re.split(r"[+,\s]+", spec.strip()):
        if not part:
            continue
        m = re.fullmatch(r"(?i)(?:au)?(\d+)([a-e]?)", part)
        if not m:
            raise ConfigError(f"{part!r} in {spec!r} is not an AU with an optional A-E intensity (e.g. 12C)")
        out[au_code(m.group(1))] = float(letter_to_intensity(m.group(2) or "C"))
    return out


# FACS intensity levels as a share of the AU's maximum movement. FACS's intensity bands are unequal
# (A and E narrow, C and D wide); the knots sit near the middle of each band, E at the maximum.
INTENSITY_LEVELS = np.array([0.0, 0.1, 0.25, 0.5, 0.775, 1.0])


def intensity_level(intensity) -> np.ndarray:
    """Piecewise-linear map of FACS intensity 0..5 to a movement level 0..1 (vectorised)."""
    return np.interp(np.clip(np.asarray(intensity, float), 0.0, MAX_INTENSITY), np.arange(6), INTENSITY_LEVELS)


PRESENT_FROM = 2.0  # FACS / DISFA occurrence: an AU is present from intensity B; A (trace) is neither


def occurrence_from_intensity(intensity, present_from: float = PRESENT_FROM) -> np.ndarray:
    """float32 occurrence labels of FACS intensities (0..5, NaN unknown): 1 from ``present_from``
    (default B = 2, DISFA's protocol), 0 at 0, NaN (unknown, masked in training and scoring) for a
    trace below ``present_from`` and for unknown intensities. ``present_from`` 1 counts A as present."""
    x = np.asarray(intensity, np.float32)
    out = np.where(x >= present_from, 1.0, np.where(x <= 0, 0.0, np.nan))
    return np.where(np.isnan(x), np.nan, out).astype(np.float32)
