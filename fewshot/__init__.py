"""fewshot: specialise a facial Action Unit detector to one person from one photo or a short clip.

Stages (one public call each):

1. :func:`analyze` a photo, folder or clip -> faces with 68 landmarks, head pose, identity embedding.
2. ``generators.design_grid`` -> a balanced pose x expression x AU grid of targets.
3. ``generators.generate`` -> a synthetic data set of that person.
4. ``au_models`` -> the generic AU/expression classifier that gets specialised.
5. ``fewshot.adaptation.adapt_person`` -> the person-specific model (continual-learning strategies).
"""

from __future__ import annotations

__version__ = "0.1.0"

from .analysis import AnalysisResult, Analyzer, Face, analyze  # noqa: E402
from .errors import FewshotError  # noqa: E402
from .selection import reference_faces, select_frames  # noqa: E402

__all__ = ["__version__", "analyze", "Analyzer", "AnalysisResult", "Face", "FewshotError", "select_frames", "reference_faces"]
