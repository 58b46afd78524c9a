"""The configuration of an adaptation run: typed, nested, with its defaults in one place.

    cfg = AdaptConfig()                                            # the defaults of `fewshot adapt`
    cfg = AdaptConfig.from_dict({"loop": {"epochs": 5}, "synthesis": {"generator": "warp+refiner", "refiner": "r.pt"}})
    cfg = cfg.override({"strategy.name": "ewc", "seed": 3})
    cfg.to_dict()                                                  # what report.json records

One dataclass per stage (:class:`AnalysisConfig`, :class:`GridConfig`, :class:`SynthesisConfig`,
:class:`LoopConfig`, :class:`StrategyConfig`). The CLI options of ``fewshot adapt`` are generated from
:func:`cli_fields` and the experiment YAML's ``adapt:`` section is read by :meth:`AdaptConfig.from_dict`:
an unknown key is an error there, never dropped.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from generators.grid import GRID_STRATEGIES
from generators.mesh import TEXTURE_NAMES
from generators.motion import MOTION_NAMES
from generators.render import generator_options

from ..errors import ConfigError, InputError
from .strategies import STRATEGIES

NO_SYNTHESIS = "none"  # synthesis.generator value: adapt on the real references alone


def _opt(default: Any, help: str, flag: str | None = None, choices: str | None = None) -> Any:
    """A config field with its CLI flag (default: --<field name>) and help text; ``choices`` names a
    registry whose members the help lists."""
    return field(default=default, metadata={"help": help, "flag": flag, "choices": choices})


@dataclass(frozen=True)
class AnalysisConfig:
    """Stage 1 on the person's photo, clip or folder."""

    reference_frames: int = _opt(5, "Best frames of a clip used for the profile and the neutral references.")
    backend: str = _opt("dlib", "Face backend for the references.", choices="face backend")


@dataclass(frozen=True)
class GridConfig:
    """Stage 2: what to synthesize."""

    size: int = _opt(200, "Synthetic samples to design and render.", flag="--grid-size")
    strategy: str = _opt("expressions", "Grid design strategy.", flag="--grid-strategy", choices="grid strategy")


@dataclass(frozen=True)
class SynthesisConfig:
    """Stage 3: how the grid is rendered."""

    generator: str = _opt("mesh", f"Generator ('{NO_SYNTHESIS}': adapt on the real references alone).", choices="generator")
    appearance: str | None = _opt(None, "Learned AU appearance .npz from `fewshot fit-appearance` (default: procedural).")
    motion: str | None = _opt("ict", "AU motion model .npz from `fewshot fit-motion`, 'ict' (the shipped ICT-FaceKit shapes, default) or 'facs' (the hand-written FACS fields).")
    refiner: str | None = _opt(None, "Refiner weights from `fewshot train-generator` (generator warp+refiner).")
    texture: str | None = _opt(None, "Expression texture .npz from `fewshot fit-appearance --texture`, or 'none' (generator mesh; default: the London one).")
    render_size: int = _opt(128, "Synthesis resolution in pixels (the model's own crop size is applied after).")


@dataclass(frozen=True)
class LoopConfig:
    """The training loop (all strategies that train)."""

    epochs: int = _opt(3, "Epochs on the person's data.")
    lr: float = _opt(1e-3, "Learning rate (a strategy may scale it by plasticity).")
    batch_size: int = _opt(32, "Mini-batch size.")
    holdout: float = _opt(0.2, "Share of synthetic rows kept out of training for the person's metrics.")
    consolidate_epochs: int = _opt(1, "Epochs of base-data consolidation before the person (ewc, si).")
    threads: int = _opt(2, "torch CPU threads (fixed, so results repeat bit for bit).")
    real_weight: float = _opt(1.0, "Weight of the real-frame loss: the person's own unlabeled frames (a clip's, or copies of the photo) "
                                   "pulled toward the base model's outputs where it is confident (0 = off).")
    real_confidence: float = _opt(0.9, "Base-model probability (or 1 - it) from which its output on a real frame is a target.")


@dataclass(frozen=True)
class StrategyConfig:
    """The continual-learning strategy and its rigidity/plasticity knob."""

    name: str = _opt("si", "Adaptation strategy.", flag="--strategy", choices="adaptation strategy")
    plasticity: float = _opt(0.5, "0 = keep the base model, 1 = learn this face freely.")


SECTIONS = ("analysis", "grid", "synthesis", "loop", "strategy")


@dataclass(frozen=True)
class AdaptConfig:
    """Every knob of an adaptation run (recorded in the report)."""

    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    seed: int = _opt(0, "Random seed (same seed, same model, byte for byte).")

    @property
    def synthesizes(self) -> bool:
        return self.synthesis.generator != NO_SYNTHESIS

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping | None, where: str = "adapt") -> "AdaptConfig":
        """Build from a nested mapping (missing keys keep their defaults). ``where`` prefixes error
        messages (e.g. the YAML file and section)."""
        return cls().override(flatten(data or {}, where), where)

    def override(self, values: Mapping[str, Any], where: str = "config") -> "AdaptConfig":
        """A copy with dotted keys replaced (``{"loop.epochs": 5, "seed": 1}``); unknown keys are errors."""
        sections = {s: getattr(self, s) for s in SECTIONS}
        top: dict[str, Any] = {}
        for key, value in values.items():
            parts = key.split(".")
            if len(parts) == 1 and parts[0] in _leaves(AdaptConfig):
                top[parts[0]] = _coerce(AdaptConfig, parts[0], value, f"{where}.{key}")
                continue
            if len(parts) != 2 or parts[0] not in sections or parts[1] not in _leaves(type(sections[parts[0]])):
                raise ConfigError(f"{where}: unknown key {key!r}; keys: {', '.join(all_keys())}")
            sec = sections[parts[0]]
            sections[parts[0]] = dataclasses.replace(sec, **{parts[1]: _coerce(type(sec), parts[1], value, f"{where}.{key}")})
        return dataclasses.replace(self, **sections, **top)

    def generator_options(self) -> dict[str, Any]:
        """The chosen generator's constructor options (checked against what it takes)."""
        s = self.synthesis
        return generator_options(s.generator, appearance=s.appearance, refiner=s.refiner, texture=s.texture)

    def validate(self) -> "AdaptConfig":
        """Check every value (registries, ranges, files) before any work; returns self."""
        STRATEGIES.get(self.strategy.name)
        GRID_STRATEGIES.get(self.grid.strategy)
        if self.synthesizes:
            self.generator_options()
        elif (self.synthesis.appearance or self.synthesis.refiner or self.synthesis.texture
              or self.synthesis.motion not in (None, SynthesisConfig().motion)):
            raise ConfigError(f"generator {NO_SYNTHESIS!r} renders nothing, so --appearance, --motion, --refiner and --texture do not apply")
        checks = [
            (0.0 <= self.strategy.plasticity <= 1.0, f"--plasticity must be in [0, 1], not {self.strategy.plasticity}"),
            (self.grid.size >= 10, f"--grid-size must be at least 10, not {self.grid.size}"),
            (32 <= self.synthesis.render_size <= 1024, f"--render-size must be in 32..1024 pixels, not {self.synthesis.render_size}"),
            (self.loop.epochs >= 1, f"--epochs must be at least 1 (the person's data is trained on for that many epochs), not {self.loop.epochs}"),
            (self.loop.consolidate_epochs >= 0, f"--consolidate-epochs must be >= 0, not {self.loop.consolidate_epochs}"),
            (self.loop.lr > 0, f"--lr must be positive, not {self.loop.lr}"),
            (self.loop.batch_size >= 2, f"--batch-size must be at least 2, not {self.loop.batch_size}"),
            (0.0 < self.loop.holdout < 0.9, f"--holdout must be in (0, 0.9), not {self.loop.holdout}"),
            (self.loop.threads >= 1, f"--threads must be at least 1, not {self.loop.threads}"),
            (self.loop.real_weight >= 0, f"--real-weight must be >= 0, not {self.loop.real_weight}"),
            (0.5 < self.loop.real_confidence < 1.0, f"--real-confidence must be in (0.5, 1), not {self.loop.real_confidence}"),
            (self.analysis.reference_frames >= 1, f"--reference-frames must be at least 1, not {self.analysis.reference_frames}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        for name in ("appearance", "motion", "refiner", "texture"):
            path = getattr(self.synthesis, name)
            named = path in {"texture": TEXTURE_NAMES, "motion": MOTION_NAMES}.get(name, ())
            if path is not None and not named and not Path(path).is_file():
                raise InputError(f"{path}: no such {name} file (--{name})")
        return self


def _leaves(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if f.name not in SECTIONS}


def flatten(data: Mapping, where: str = "config") -> dict[str, Any]:
    """A nested config mapping -> dotted keys (``{"loop": {"epochs": 5}}`` -> ``{"loop.epochs": 5}``)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of sections ({', '.join(SECTIONS)}), not {type(data).__name__}")
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in SECTIONS:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}.{key}: expected a mapping, not {value!r}")
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[str(key)] = value
    return flat


def _coerce(cls, name: str, value: Any, where: str) -> Any:
    """``value`` as the field's type (int, float, str, optional str); ConfigError naming ``where``."""
    hint = typing.get_type_hints(cls)[name]
    optional = type(None) in typing.get_args(hint)
    base = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where}: a value is required")
    if isinstance(value, Path):
        value = str(value)
    try:
        if base is int and isinstance(value, bool) or base is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        if base is str and not isinstance(value, str):
            raise ValueError
        return base(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {value!r} is not a valid {base.__name__}") from None


@dataclass(frozen=True)
class CliField:
    """One leaf of :class:`AdaptConfig` as a command-line option."""

    key: str  # dotted config key, e.g. 'loop.epochs'
    flag: str  # e.g. '--epochs'
    type: type  # int, float or str
    optional: bool  # None allowed (file options)
    default: Any
    help: str
    choices: str | None  # kind of the registry whose names the help should list (Registry.kind)


def cli_fields() -> list[CliField]:
    """Every leaf of the configuration with its flag (unique), type, default and help."""
    out = []
    default = AdaptConfig()
    for section in (*SECTIONS, None):
        cls = AdaptConfig if section is None else type(getattr(default, section))
        obj = default if section is None else getattr(default, section)
        hints = typing.get_type_hints(cls)
        for name, f in _leaves(cls).items():
            hint = hints[name]
            base = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
            key = name if section is None else f"{section}.{name}"
            flag = f.metadata.get("flag") or "--" + name.replace("_", "-")
            out.append(CliField(key, flag, base, type(None) in typing.get_args(hint), getattr(obj, name), f.metadata.get("help", ""), f.metadata.get("choices")))
    flags = [f.flag for f in out]
    assert len(set(flags)) == len(flags), f"two config fields share a flag: {flags}"
    return out


def all_keys() -> list[str]:
    return [f.key for f in cli_fields()]
