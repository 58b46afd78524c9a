"""Stage 5: person-specific adaptation (the main job), one pipeline for the CLI, the experiments and
the scripts.

    from fewshot.adaptation import AdaptConfig, adapt_person
    res = adapt_person("photo.jpg", out_dir="adapted/")
    res = adapt_person("clip.mp4", config=AdaptConfig().override({"strategy.name": "ewc", "loop.epochs": 5}))

Stage calls: :func:`analyse_references` -> :func:`build_person_set` -> :func:`adapt` -> :func:`evaluate`
-> :func:`write_outputs` (:mod:`fewshot.adaptation.pipeline`). Strategies: :data:`STRATEGIES`
(:mod:`fewshot.adaptation.strategies`); the training loop: :mod:`fewshot.adaptation.loop` (torch).
"""

from __future__ import annotations

from .config import AdaptConfig, AnalysisConfig, GridConfig, LoopConfig, StrategyConfig, SynthesisConfig
from .strategies import STRATEGIES, AdaptRun, Outcome, Strategy, calibrate_to_neutral

# the pipeline needs torch: its names load on first use, so `fewshot --help` and the config stay light
_LAZY = {
    "PersonSet": "person", "References": "person", "analyse_references": "person", "build_person_set": "person",
    "AdaptReport": "pipeline", "AdaptResult": "pipeline", "adapt": "pipeline", "adapt_person": "pipeline",
    "check_out_dir": "pipeline", "evaluate": "pipeline", "load_base": "pipeline", "write_outputs": "pipeline",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AdaptConfig", "AnalysisConfig", "GridConfig", "LoopConfig", "StrategyConfig", "SynthesisConfig",
    "STRATEGIES", "AdaptRun", "Outcome", "Strategy", "calibrate_to_neutral", *_LAZY,
]
