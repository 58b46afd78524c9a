"""The batch runner: a YAML grid -> cells with stable ids -> parallel runs -> one results table.

    from experiments.runner import run_experiment
    summary = run_experiment("experiments/configs/bp4d.yaml", workers=2)   # RunSummary
    summary.results                                                         # results.parquet

Config (YAML; every key but ``datasets`` optional)::

    name: bp4d                     # run folder default: runs/<name>
    out: runs/bp4d                 # run folder (relative paths: to the current directory)
    cell: per_identity             # registered cell kind (experiments.protocol.CELL_KINDS)
    datasets:
      - name: bp4d                 # experiments.datasets name
        root: /data/BP4D
        options: {}                # load_dataset options
        folds: [1, 2, 3]           # standard subject-exclusive folds (other data sets: seeded 3-way);
                                   # [0] = no fold: every subject is a test subject (needs base.checkpoint)
        subjects: test             # 'test' = every test subject of each fold, or a list
    k: [1, 5]                      # reference frames per subject
    generators: [warp]             # 'none' = no synthesis (strategies run on the real references)
    strategies: [generic, calibration, finetune_real, replay, ewc]
    plasticity: [0.25, 0.5, 0.75]
    seeds: [0, 1]
    base:
      checkpoint: null             # a model path (may contain {dataset} and {fold}), 'shipped' (the base model
                                   # `fewshot adapt` uses), or null = train one per fold
      train: {backbone: compact, epochs: 20, crop_size: 112, seed: 0, ...}   # experiments.train.train_base options
    protocol: {...}                # experiments.protocol.PROTOCOL_DEFAULTS
    adapt: {loop: {epochs: 5}}     # fewshot.adaptation.AdaptConfig sections (unknown keys are errors)
    threads: 1                     # torch threads per cell

A loader may record ``info['digest']`` (the clip loader does: its YAML and video): cells then carry it as
``data``, and the run's index and cache are named by it, so an edited description gives new cells.

Grid: datasets x folds x subjects x k x strategies x generators x plasticity x seeds, where the
baseline strategies (``Strategy.baseline``: generic, calibration, finetune_real) take no generator and
no plasticity, and the deterministic ones (``Strategy.deterministic``: generic, calibration) run with
the first seed only. A cell's id hashes its whole
configuration (:func:`experiments.protocol.cell_id`), so a changed setting gives new cells and an
unchanged one is found again.

Run folder: ``config.yaml`` (the config as run), ``cells.csv`` (id and config of every cell),
``prepared/`` (frame indexes), ``cache/`` (aligned faces), ``base/`` (base models trained per fold),
``cells/<cell_id>.parquet`` (each finished cell, written atomically: temp file + rename),
``errors/<cell_id>.txt`` (a failed cell's traceback), ``run_log.jsonl`` (one JSON line per event:
start / done / skip / unreadable / fail) and ``results.parquet`` + ``results.csv`` (every finished cell
of the grid, one row per cell per AU). A re-run skips cells whose file exists and reads back (an
unreadable one is run again), so an interrupted run (even by kill -9) continues where it stopped.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd

from au_models import base_model_path
from au_models.align import AlignConfig
from au_models.cache import build_cache
from au_models.checkpoint import load_checkpoint
from fewshot.adaptation import STRATEGIES, AdaptConfig
from fewshot.adaptation.config import NO_SYNTHESIS, flatten
from fewshot.errors import ConfigError, Interrupted
from fewshot.io import atomic_path, write_table
from generators.render import GENERATORS

from .datasets import load_dataset
from .protocol import CELL_KINDS, PROTOCOL_DEFAULTS, cell_id, run_cell
from .train import cache_path, fold_subjects, train_base

# set by the grid's axes (strategies, plasticity, seeds, generators) and the runner: not in `adapt:`
AXIS_KEYS = ("strategy.name", "strategy.plasticity", "seed", "synthesis.generator", "loop.threads", "analysis.reference_frames")

TOP_KEYS = {"name", "out", "cell", "datasets", "k", "generators", "strategies", "plasticity", "seeds", "base", "protocol", "adapt", "threads"}
DATASET_KEYS = {"name", "root", "options", "folds", "subjects"}
BASE_KEYS = {"checkpoint", "train"}
TRAIN_DEFAULTS: dict[str, Any] = {"backbone": "compact", "epochs": 20, "crop_size": 112, "seed": 0, "batch_size": 64, "lr": 2e-3}
BACKENDS = ("local", "ray")
SHIPPED = "shipped"  # base.checkpoint value: the shipped base model (au_models.base_model_path)
NO_FOLD = 0  # datasets[].folds value: every subject is a test subject of one given base model


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    root: str
    options: dict
    folds: list[int]
    subjects: str | list[str]  # 'test' or explicit subject ids


@dataclass(frozen=True)
class ExperimentConfig:
    """A parsed experiment config (see the module docstring)."""

    name: str
    out: Path
    cell: str
    datasets: list[DatasetSpec]
    k: list[int]
    generators: list[str]
    strategies: list[str]
    plasticity: list[float]
    seeds: list[int]
    base: dict
    protocol: dict
    adapt: dict
    threads: int = 1
    source: dict = field(default_factory=dict, compare=False)
    file: str = field(default="", compare=False)  # the YAML it was read from (named by every ConfigError)


@dataclass
class Plan:
    """What validation found: the cells, and per (dataset, fold) the context a cell needs."""

    config: ExperimentConfig
    cells: list[dict]
    ids: list[str]
    contexts: dict[tuple[str, int], dict]  # filled by prepare()
    frames: dict[str, Any]  # dataset name -> AUFrames
    test_subjects: dict[tuple[str, int], list[str]]


@dataclass
class RunSummary:
    run_dir: Path
    results: Path
    n_cells: int
    ran: list[str]
    skipped: list[str]
    failed: dict[str, str]
    seconds: float


# -- config ----------------------------------------------------------------------------------------
@contextlib.contextmanager
def _in_file(path: str) -> Iterator[None]:
    """Prefix a ConfigError raised in the block with the config file it concerns (once)."""
    try:
        yield
    except ConfigError as e:
        if not path or str(e).startswith(f"{path}:"):
            raise
        raise ConfigError(f"{path}: {e}") from None


def _as_list(value, field_name: str, kind: type | tuple = (str,)) -> list:
    vals = value if isinstance(value, list) else [value]
    for v in vals:
        if isinstance(v, bool) or not isinstance(v, kind):
            raise ConfigError(f"{field_name}: {v!r} is not a {getattr(kind, '__name__', kind)}")
    return vals


def _mapping(value, field_name: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{field_name}: expected a mapping, got {type(value).__name__}")
    return dict(value)


def parse_config(raw: dict, source: str = "config") -> ExperimentConfig:
    """Check the shape and types of a config mapping (no file system access); ConfigError names the field."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a YAML mapping at the top level")
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise ConfigError(f"{source}: unknown field(s) {', '.join(unknown)}; fields: {', '.join(sorted(TOP_KEYS))}")
    if not raw.get("datasets"):
        raise ConfigError(f"{source}: datasets: at least one data set (name, root) is required")
    datasets = []
    for i, d in enumerate(raw["datasets"] if isinstance(raw["datasets"], list) else [raw["datasets"]]):
        where = f"datasets[{i}]"
        d = _mapping(d, where)
        bad = sorted(set(d) - DATASET_KEYS)
        if bad:
            raise ConfigError(f"{where}: unknown field(s) {', '.join(bad)}; fields: {', '.join(sorted(DATASET_KEYS))}")
        for key in ("name", "root"):
            if not d.get(key):
                raise ConfigError(f"{where}.{key}: required")
        folds = _as_list(d.get("folds", [1, 2, 3]), f"{where}.folds", int)
        if folds != [NO_FOLD] and any(f not in (1, 2, 3) for f in folds):
            raise ConfigError(f"{where}.folds: {folds}: folds are 1, 2 and 3, or [0] alone (no fold: every subject is a test subject)")
        subjects = d.get("subjects", "test")
        if subjects != "test":
            subjects = [str(s) for s in (subjects if isinstance(subjects, list) else [subjects])]
        datasets.append(DatasetSpec(str(d["name"]), str(d["root"]), _mapping(d.get("options"), f"{where}.options"), folds, subjects))
    k = _as_list(raw.get("k", [1]), "k", int)
    if any(v < 1 for v in k):
        raise ConfigError(f"k: {k}: every k must be >= 1")
    plasticity = [float(p) for p in _as_list(raw.get("plasticity", [0.5]), "plasticity", (int, float))]
    if any(not 0.0 <= p <= 1.0 for p in plasticity):
        raise ConfigError(f"plasticity: {plasticity}: values must lie in [0, 1]")
    base = _mapping(raw.get("base"), "base")
    bad = sorted(set(base) - BASE_KEYS)
    if bad:
        raise ConfigError(f"base: unknown field(s) {', '.join(bad)}; use checkpoint or train")
    base = {"checkpoint": base.get("checkpoint"), "train": {**TRAIN_DEFAULTS, **_mapping(base.get("train"), "base.train")}}
    protocol = _mapping(raw.get("protocol"), "protocol")
    bad = sorted(set(protocol) - set(PROTOCOL_DEFAULTS))
    if bad:
        raise ConfigError(f"protocol: unknown field(s) {', '.join(bad)}; fields: {', '.join(PROTOCOL_DEFAULTS)}")
    protocol = {**PROTOCOL_DEFAULTS, **protocol}
    if protocol["reference"] not in ("neutral", "first", "given"):
        raise ConfigError(f"protocol.reference: {protocol['reference']!r}: use neutral, first or given")
    if protocol["reference_labels"] not in ("neutral", "dataset"):
        raise ConfigError(f"protocol.reference_labels: {protocol['reference_labels']!r}: use neutral or dataset")
    name = str(raw.get("name") or Path(source).stem)
    return ExperimentConfig(
        name=name, out=Path(raw.get("out") or Path("runs") / name), cell=str(raw.get("cell", "per_identity")), datasets=datasets, k=k,
        generators=[str(g) for g in _as_list(raw.get("generators", [NO_SYNTHESIS]), "generators")],
        strategies=[str(s) for s in _as_list(raw.get("strategies", ["generic"]), "strategies")],
        plasticity=plasticity, seeds=_as_list(raw.get("seeds", [0]), "seeds", int), base=base, protocol=protocol,
        adapt=_adapt_section(raw.get("adapt")), threads=int(raw.get("threads", 1)), source=dict(raw),
    )  # fmt: skip


def load_config(path: str | os.PathLike) -> ExperimentConfig:
    """Read and parse a YAML config (ConfigError for a missing file, bad YAML or a bad field)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file")
    try:
        raw = yaml.safe_load(p.read_text())
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a text file; pass an experiment YAML (examples: experiments/configs/)") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{p}: not valid YAML{where} ({what}); fix it there") from None
    with _in_file(str(p)):
        return replace(parse_config(raw, str(p)), file=str(p))


def _adapt_section(raw: Any) -> dict:
    """The ``adapt:`` mapping, checked against :class:`AdaptConfig` (an unknown key is an error)."""
    adapt = _mapping(raw, "adapt")
    AdaptConfig.from_dict(adapt, "adapt")
    set_by_grid = sorted(set(flatten(adapt, "adapt")) & set(AXIS_KEYS))
    if set_by_grid:
        raise ConfigError(f"adapt: {', '.join(set_by_grid)} are set by the grid (strategies, plasticity, seeds, generators, k, threads), not in adapt:")
    return adapt


def _strategy_names() -> list[str]:
    return STRATEGIES.names()


def _generator_names() -> list[str]:
    return [NO_SYNTHESIS, *GENERATORS.names()]


def checkpoint_for(config: ExperimentConfig, dataset: str, fold: int, run_dir: Path) -> Path:
    """The base model of (dataset, fold): the configured one, or ``base/<dataset>_fold<k>.pt`` of the run."""
    ck = config.base.get("checkpoint")
    if ck == SHIPPED:
        return base_model_path()
    if ck:
        return Path(str(ck).format(dataset=dataset, fold=fold)).expanduser()
    return run_dir / "base" / f"{dataset}_fold{fold}.pt"


def validate(config: ExperimentConfig) -> Plan:
    """Check everything a run needs before any work: cell kind, strategies, generators, data set roots,
    folds, subjects, k and base checkpoints. Returns the expanded plan; ConfigError names the config
    file (when read from one) and the bad field."""
    with _in_file(config.file):
        return _validate(config)


def _validate(config: ExperimentConfig) -> Plan:
    if config.cell not in CELL_KINDS:
        raise ConfigError(f"cell: unknown cell kind {config.cell!r}; choose one of: {', '.join(CELL_KINDS.names())}")
    known = _strategy_names()
    for s in config.strategies:
        if s not in known:
            raise ConfigError(f"strategies: unknown strategy {s!r}; choose from: {', '.join(known)}")
    gens = _generator_names()
    for g in config.generators:
        if g not in gens:
            raise ConfigError(f"generators: unknown generator {g!r}; choose from: {', '.join(gens)}")
    if len(set(config.strategies)) != len(config.strategies):
        raise ConfigError(f"strategies: {config.strategies} lists a strategy twice")
    if config.threads < 1:
        raise ConfigError("threads: must be >= 1")
    for key in ("seed", "epochs", "crop_size"):
        if not isinstance(config.base["train"].get(key), int) or isinstance(config.base["train"].get(key), bool):
            raise ConfigError(f"base.train.{key}: {config.base['train'].get(key)!r} is not an integer")
    run_dir = config.out
    frames_by_name: dict[str, Any] = {}
    test_subjects: dict[tuple[str, int], list[str]] = {}
    targets: list[tuple[DatasetSpec, int, str]] = []
    names = [d.name for d in config.datasets]
    if len(set(names)) != len(names):
        raise ConfigError(f"datasets: {names} lists a data set twice")
    for i, spec in enumerate(config.datasets):
        where = f"datasets[{i}]"
        if not Path(spec.root).expanduser().exists():
            raise ConfigError(f"{where}.root: {spec.root} does not exist; point it at the {spec.name} folder")
        try:
            frames = load_dataset(spec.name, spec.root, **spec.options)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        frames_by_name[spec.name] = frames
        have = set(frames.subjects())
        if spec.folds == [NO_FOLD] and not config.base.get("checkpoint"):
            raise ConfigError(f"{where}.folds: [0] (no fold: every subject is a test subject) needs a given base model; "
                              f"set base.checkpoint to a model file or '{SHIPPED}'")  # fmt: skip
        if spec.subjects != "test":
            absent = [s for s in spec.subjects if s not in have]
            if absent:
                raise ConfigError(f"{where}.subjects: {', '.join(absent)} not in the {spec.name} data under {spec.root}")
        placed: set[str] = set()
        for fold in spec.folds:
            test = frames.subjects() if fold == NO_FOLD else fold_subjects(frames, fold, int(config.base["train"]["seed"]))[1]
            if not test:
                raise ConfigError(f"{where}.folds: fold {fold} has no test subject in the data under {spec.root}")
            test_subjects[(spec.name, fold)] = test
            chosen = test if spec.subjects == "test" else [s for s in spec.subjects if s in test]
            placed.update(chosen)
            targets += [(spec, fold, s) for s in chosen]
            ck = checkpoint_for(config, spec.name, fold, run_dir)
            if config.base.get("checkpoint") == SHIPPED and not ck.is_file():
                raise ConfigError(f"base.checkpoint: {SHIPPED}: the shipped base model {ck} is missing; rebuild it with "
                                  "`python scripts/make_base_model.py` or name a model file")  # fmt: skip
            if config.base.get("checkpoint") and not ck.is_file():
                raise ConfigError(f"base.checkpoint: {ck} (dataset {spec.name}, fold {fold}) does not exist")
        if spec.subjects != "test":
            stray = [s for s in spec.subjects if s not in placed]
            if stray:
                raise ConfigError(f"{where}.subjects: {', '.join(stray)} are test subjects of none of folds {spec.folds}")
        counts = frames.table.groupby("subject").size()
        spare = 0 if config.protocol["eval_includes_references"] else 1
        for _, _, s in targets:
            if s in counts and counts[s] < max(config.k) + spare:
                raise ConfigError(f"k: {max(config.k)} references leave subject {s} of {spec.name} ({counts[s]} frames) nothing to evaluate on")
    digests = {name: f.info["digest"] for name, f in frames_by_name.items() if f.info.get("digest")}
    cells = expand(config, targets, digests)
    return Plan(config, cells, [cell_id(c) for c in cells], {}, frames_by_name, test_subjects)


def expand(config: ExperimentConfig, targets: list[tuple[DatasetSpec, int, str]], digests: dict[str, str] | None = None) -> list[dict]:
    """Every cell of the grid (see the module docstring), in a stable order. ``digests``: data set
    name -> its loader's content digest, carried by the cells as ``data`` (absent for the others)."""
    shared = {"cell": config.cell, "protocol": config.protocol, "adapt": config.adapt}
    cells = []
    for spec, fold, subject in targets:
        base = _base_key(config, spec.name, fold)
        data = {"data": digests[spec.name]} if digests and spec.name in digests else {}
        for k in config.k:
            for strategy in config.strategies:
                kind = STRATEGIES.get(strategy)
                baseline = kind.baseline
                gens = [NO_SYNTHESIS] if baseline else config.generators
                plas: list[float | None] = [None] if baseline else list(config.plasticity)
                seeds = config.seeds[:1] if kind.deterministic else config.seeds
                for g in gens:
                    for p in plas:
                        for seed in seeds:
                            cells.append({
                                "dataset": spec.name, "root": str(spec.root), "dataset_options": spec.options, "fold": fold,
                                "subject": subject, "k": k, "generator": g, "strategy": strategy, "plasticity": p, "seed": seed, "base": base, **data, **shared,
                            })  # fmt: skip
    ids = [cell_id(c) for c in cells]
    if len(set(ids)) != len(ids):  # pragma: no cover - identical configs can only come from duplicate list entries
        raise ConfigError("the grid holds two identical cells; remove duplicate values from k, plasticity or seeds")
    return cells


def _base_key(config: ExperimentConfig, dataset: str, fold: int) -> dict:
    """What identifies a cell's base model in its id: the given checkpoint's content hash (a re-trained
    file gives new cells), or the training spec of the run's own base models."""
    if config.base.get("checkpoint"):
        ck = checkpoint_for(config, dataset, fold, config.out)
        name = SHIPPED if config.base["checkpoint"] == SHIPPED else str(ck)  # the shipped one: wherever the checkout lies
        return {"checkpoint": name, "sha1": _file_hash(ck)}
    return {"train": config.base["train"]}


def _file_hash(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


# -- preparation (after validation: the first real work) ------------------------------------------
def prepare(plan: Plan, run_dir: Path, progress: bool = False) -> None:
    """Per data set: the frame index and the aligned cache; per fold: the base model (trained if not
    given). Each step is skipped when its output exists (train_base and build_cache resume)."""
    import warnings

    config = plan.config
    tr = dict(config.base["train"])
    for spec in config.datasets:
        frames = plan.frames[spec.name]
        digest = f"_{frames.info['digest']}" if frames.info.get("digest") else ""
        index_path = run_dir / "prepared" / f"{spec.name}{digest}_index.parquet"
        if not index_path.is_file():
            cols = ["subject", "sequence", "frame", "image_path", "video_path", "video_frame"]
            write_table(frames.table[cols].astype({"subject": str, "sequence": str, "image_path": str, "video_path": str}), index_path)
        for fold in spec.folds:
            ck = checkpoint_for(config, spec.name, fold, run_dir)
            if config.base.get("checkpoint"):
                model, _ = load_checkpoint(ck)
                align = model.align
                cache = run_dir / "cache" / f"{spec.name}_{align.crop_size}px_{_file_hash(ck)}{digest}.h5"
            else:
                align = AlignConfig(crop_size=int(tr["crop_size"]))
                cache = cache_path(frames, run_dir / "cache", align.crop_size)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                build_cache(frames, cache, align, progress=progress)
                if not ck.is_file():
                    opts = {k: v for k, v in tr.items() if k not in ("crop_size",)}
                    train_base(spec.name, spec.root, fold, out=ck, crop_size=align.crop_size, cache_dir=run_dir / "cache",
                               dataset_options=spec.options, progress=progress, **opts)  # fmt: skip
            model, _ = load_checkpoint(ck)
            plan.contexts[(spec.name, fold)] = {
                "checkpoint": str(ck), "cache": str(cache), "index": str(index_path), "aus": list(frames.aus),
                "intensity_aus": list(frames.intensity_aus), "test_subjects": plan.test_subjects[(spec.name, fold)],
                "threads": config.threads, "model_aus": list(model.aus),
            }  # fmt: skip


# -- execution -------------------------------------------------------------------------------------
def execute_cell(kind: str, cell: dict, context: dict) -> pd.DataFrame:
    """Worker entry point (a module-level function, so spawn / Ray can import it)."""
    import warnings

    warnings.filterwarnings("ignore")
    return run_cell(cell, context, kind)


def _log(run_dir: Path, event: str, cid: str, **extra) -> None:
    line = json.dumps({"time": time.time(), "event": event, "cell": cid, "pid": os.getpid(), **extra}) + "\n"
    fd = os.open(run_dir / "run_log.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read_log(run_dir: str | os.PathLike) -> pd.DataFrame:
    """The run log as a table (time, event, cell, pid...); empty if none."""
    p = Path(run_dir) / "run_log.jsonl"
    if not p.is_file():
        return pd.DataFrame(columns=["time", "event", "cell", "pid"])
    rows = []
    for line in p.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by kill -9
            continue
    return pd.DataFrame(rows)


def _cell_file(run_dir: Path, cid: str) -> Path:
    return run_dir / "cells" / f"{cid}.parquet"


def _read_cell(path: Path) -> pd.DataFrame | None:
    """A finished cell's rows; None when the file is missing or unreadable (a disk fault, a copy cut
    short): such a cell counts as not done and is run again."""
    try:
        return pd.read_parquet(path)
    except Exception:  # noqa: BLE001 - FileNotFoundError, ArrowInvalid, OSError...: all mean "not done"
        return None


def _finish(run_dir: Path, cid: str, df: pd.DataFrame, backend: str) -> None:
    df = df.copy()
    df["backend"] = backend
    write_table(df, _cell_file(run_dir, cid))
    _log(run_dir, "done", cid, rows=len(df))


def _fail(run_dir: Path, cid: str, err: BaseException | str) -> str:
    text = err if isinstance(err, str) else "".join(traceback.format_exception(type(err), err, err.__traceback__))
    (run_dir / "errors").mkdir(parents=True, exist_ok=True)
    (run_dir / "errors" / f"{cid}.txt").write_text(text)
    _log(run_dir, "fail", cid)
    last = text.strip().splitlines()[-1] if text.strip() else "failed"
    return last


def _run_local(plan: Plan, todo: list[int], run_dir: Path, workers: int, progress: Callable[[str], None]) -> tuple[list[str], dict[str, str]]:
    import concurrent.futures as cf
    import multiprocessing as mp

    ran, failed = [], {}
    cfg = plan.config
    if workers <= 1:
        for i in todo:
            cid, cell = plan.ids[i], plan.cells[i]
            _log(run_dir, "start", cid)
            try:
                df = execute_cell(cfg.cell, cell, plan.contexts[(cell["dataset"], cell["fold"])])
            except Exception as e:  # noqa: BLE001 - one failed cell must not stop the grid
                failed[cid] = _fail(run_dir, cid, e)
                continue
            _finish(run_dir, cid, df, "local")
            ran.append(cid)
            progress(cid)
        return ran, failed
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {}
        for i in todo:
            cid, cell = plan.ids[i], plan.cells[i]
            _log(run_dir, "start", cid)
            futures[pool.submit(execute_cell, cfg.cell, cell, plan.contexts[(cell["dataset"], cell["fold"])])] = cid
        for fut in cf.as_completed(futures):
            cid = futures[fut]
            try:
                df = fut.result()
            except Exception as e:  # noqa: BLE001
                failed[cid] = _fail(run_dir, cid, e)
                continue
            _finish(run_dir, cid, df, "local")
            ran.append(cid)
            progress(cid)
    return ran, failed


def _run_ray(plan: Plan, todo: list[int], run_dir: Path, workers: int, progress: Callable[[str], None]) -> tuple[list[str], dict[str, str]]:
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray: the ray package is not installed; pip install -e '.[ray]'") from None
    started = False
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=max(1, workers), **kwargs)
        started = True
    ran, failed = [], {}
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(execute_cell)
        cfg = plan.config
        pending = {}
        for i in todo:
            cid, cell = plan.ids[i], plan.cells[i]
            _log(run_dir, "start", cid)
            pending[remote.remote(cfg.cell, cell, plan.contexts[(cell["dataset"], cell["fold"])])] = cid
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                cid = pending.pop(ref)
                try:
                    df = ray.get(ref)
                except Exception as e:  # noqa: BLE001
                    failed[cid] = _fail(run_dir, cid, e)
                    continue
                _finish(run_dir, cid, df, "ray")
                ran.append(cid)
                progress(cid)
    finally:
        if started:
            ray.shutdown()
    return ran, failed


def collect(run_dir: str | os.PathLike, ids: list[str] | None = None) -> pd.DataFrame:
    """One table of the finished cells (those of ``ids``, default every cell file), without duplicates;
    written to ``results.parquet`` and ``results.csv`` in ``run_dir``."""
    run_dir = Path(run_dir)
    files = sorted((run_dir / "cells").glob("*.parquet")) if ids is None else [_cell_file(run_dir, c) for c in ids]
    parts = [df for df in map(_read_cell, files) if df is not None]
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if len(df):
        df = df.drop_duplicates(["cell_id", "au"], keep="last")
        df = df.sort_values(["dataset", "fold", "subject", "k", "strategy", "generator", "plasticity", "seed", "au"], kind="stable", na_position="first")
        df = df.reset_index(drop=True)
    write_table(df, run_dir / "results.parquet")
    write_table(df, run_dir / "results.csv")
    return df


def run_experiment(
    config: str | os.PathLike | ExperimentConfig,
    run_dir: str | os.PathLike | None = None,
    workers: int = 1,
    backend: str = "local",
    progress: bool = False,
) -> RunSummary:
    """Validate the whole config, prepare data and base models, run every unfinished cell, collect.

    Raises ConfigError (before any work) for a bad config. Cells that fail are recorded in
    ``errors/`` and reported in the summary; the other cells still run.
    """
    t0 = time.perf_counter()
    if backend not in BACKENDS:
        raise ConfigError(f"--backend {backend!r}: use local or ray")
    if workers < 1:
        raise ConfigError(f"--workers {workers}: must be >= 1")
    if backend == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError("--backend ray: the ray package is not installed; pip install -e '.[ray]'") from None
    cfg = config if isinstance(config, ExperimentConfig) else load_config(config)
    if run_dir is not None:
        cfg = replace(cfg, out=Path(run_dir))
    plan = validate(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cells").mkdir(exist_ok=True)
    import yaml

    with atomic_path(out / "config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(cfg.source, sort_keys=False))
    listing = pd.DataFrame([{"cell_id": c, **{k: (json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v) for k, v in cell.items()}}
                            for c, cell in zip(plan.ids, plan.cells)])  # fmt: skip
    write_table(listing, out / "cells.csv")
    prepare(plan, out, progress=progress)
    todo, skipped = [], []
    for i, cid in enumerate(plan.ids):
        if _read_cell(_cell_file(out, cid)) is not None:
            skipped.append(cid)
            _log(out, "skip", cid)
        else:
            if _cell_file(out, cid).exists():
                _log(out, "unreadable", cid)  # run again; its new file replaces the bad one
            todo.append(i)
    n_done = [len(skipped)]

    def tick(cid: str) -> None:
        n_done[0] += 1
        if progress:
            print(f"[{n_done[0]}/{len(plan.ids)}] {cid}", file=sys.stderr)

    runner = _run_ray if backend == "ray" else _run_local
    try:
        ran, failed = runner(plan, todo, out, workers, tick) if todo else ([], {})
    except KeyboardInterrupt:
        kept = sum(_cell_file(out, c).is_file() for c in plan.ids)
        raise Interrupted(f"{out}: {kept} of {len(plan.ids)} cells are finished and kept; run the same command again to run the rest") from None
    collect(out, plan.ids)
    return RunSummary(out, out / "results.parquet", len(plan.ids), ran, skipped, failed, time.perf_counter() - t0)


__all__ = ["ExperimentConfig", "RunSummary", "load_config", "parse_config", "validate", "expand", "prepare", "run_experiment", "collect", "read_log"]
