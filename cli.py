"""The ``fewshot`` command: a thin Typer layer over the stage APIs.

Each command parses its options, calls one library function and prints a short summary. Every
user-facing failure is a :class:`fewshot.errors.FewshotError`, printed as one line on stderr with
exit code 2 (no traceback).
"""

from __future__ import annotations

import functools
import inspect
import sys
from pathlib import Path
from typing import Callable, Optional

import typer

from experiments.datasets import DATASETS
from fewshot.adaptation.config import NO_SYNTHESIS, AdaptConfig, cli_fields
from fewshot.adaptation.strategies import STRATEGIES
from fewshot.backends import FACE_BACKENDS
from fewshot.errors import FewshotError, Interrupted
from generators.grid import DEFAULT_AUS, GRID_STRATEGIES
from generators.render import GENERATORS

# help strings name the registered parts (none is listed by hand); torch-free imports only
FACE_HELP = f"Face backend: {', '.join(FACE_BACKENDS.names())}."

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="fewshot: specialise a facial Action Unit detector to one person from a photo or a short clip.",
)


def friendly(fn: Callable) -> Callable:
    """Turn FewshotError (and Ctrl-C) into one line on stderr and exit code 2 / 130. A stage that keeps
    partial work to resume raises :class:`Interrupted`, whose message says so."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FewshotError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(code=e.exit_code) from None
        except Interrupted as e:
            typer.echo(f"interrupted: {e}", err=True)
            raise typer.Exit(code=130) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: outputs already written are complete; partial ones were removed", err=True)
            raise typer.Exit(code=130) from None

    return wrapper


def _backend_options(weights: Optional[Path]) -> dict:
    return {"weights": str(weights)} if weights else {}


def _warn_unreadable(table) -> None:
    """One stderr line per photo of a folder that could not be read (its row has success=0)."""
    errors = [e for e in table["error"] if isinstance(e, str) and e]
    for e in errors:
        typer.echo(f"skipped: {e}", err=True)
    if errors:
        typer.echo(f"warning: {len(errors)} of {len(table)} file(s) could not be read; their rows have success=0 and the reason in 'error'", err=True)


@app.command()
@friendly
def detect(
    input: Optional[Path] = typer.Argument(None, help="An image, a folder of images or a video file (default: the shipped example photo)."),
    out: Path = typer.Option(Path("faces.csv"), "--out", "-o", help="CSV to write (OpenFace columns)."),
    backend: str = typer.Option("dlib", help=FACE_HELP),
    weights: Optional[Path] = typer.Option(None, help="Weights file/folder for face-alignment or insightface."),
    faces: str = typer.Option("largest", help="largest | all | error (when a frame holds several faces)."),
    overlay: Optional[Path] = typer.Option(None, help="Folder to write each frame with its landmarks drawn."),
    embed: Optional[bool] = typer.Option(None, "--embed/--no-embed", help="Add emb_* identity columns (default: on for photos and folders, off for videos)."),
    track: bool = typer.Option(True, help="On videos, search near the previous face first."),
    select: int = typer.Option(0, help="Also print the best N reference frames (sharp, frontal, neutral)."),
) -> None:
    """Detect faces, 68 landmarks, head pose (and identity embeddings) in INPUT."""
    from fewshot.analysis import Analyzer
    from fewshot.io import VIDEO_EXTENSIONS, check_output_file
    from fewshot.selection import check_k

    check_output_file(out, "--out", "faces.csv")
    if select:
        check_k(select, str(input or ""), "--select")
    if input is None:
        from fewshot.data import example_photo

        input = example_photo()
        typer.echo(f"no INPUT given: analysing the shipped example photo {input.name}", err=True)
    if embed is None:
        embed = input.suffix.lower() not in VIDEO_EXTENSIONS
    analyzer = Analyzer(backend=backend, faces=faces, embed=embed, track=track, backend_options=_backend_options(weights))  # type: ignore[arg-type]
    result = analyzer.analyze(input, overlay_dir=overlay)
    result.to_csv(out, embeddings=embed)
    _warn_unreadable(result.table)
    ok = int(result.table.success.sum())
    typer.echo(f"{out}: {len(result.table)} rows, {result.n_frames} frames, face found in {ok} ({100.0 * ok / max(1, len(result.table)):.1f}%) [{result.backend}]")
    if select:
        from fewshot.selection import select_frames

        typer.echo(select_frames(result, select).to_string(index=False, float_format=lambda v: f"{v:.3f}"))


@app.command("select-frames")
@friendly
def select_frames_cmd(
    input: Path = typer.Argument(..., help="A video file or a folder of photos of one person."),
    k: int = typer.Option(5, "-k", help="How many frames to pick."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="CSV of the chosen frames and their scores."),
    backend: str = typer.Option("dlib", help=FACE_HELP),
    weights: Optional[Path] = typer.Option(None),
) -> None:
    """Pick the k best reference frames (confidence, sharpness, frontal pose, closeness to neutral)."""
    from fewshot.analysis import Analyzer
    from fewshot.io import check_output_file, write_table
    from fewshot.selection import check_k, select_frames

    check_k(k, str(input))
    if out:
        check_output_file(out, "--out", "frames.csv")
    result = Analyzer(backend=backend, embed=False, backend_options=_backend_options(weights)).analyze(input)
    best = select_frames(result, k)
    if out:
        write_table(best, out)
    typer.echo(best.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


@app.command()
@friendly
def design(
    photo: Path = typer.Option(..., "--photo", help="Neutral photo (or clip / folder) of the person."),
    out: Path = typer.Option(Path("grid.parquet"), "--out", "-o", help="Grid table to write (.parquet or .csv)."),
    n: int = typer.Option(500, "--n", help="Number of samples (factorial: 0 = the full design)."),
    strategy: str = typer.Option("expressions", help=f"Grid strategy: {', '.join(GRID_STRATEGIES.names())}."),
    aus: str = typer.Option(",".join(DEFAULT_AUS), help="Comma-separated AUs."),
    seed: int = typer.Option(0, help="Random seed (same seed, same grid)."),
    motion: Optional[Path] = typer.Option(None, help="Motion model .npz from `fewshot fit-motion`, or 'ict' (the shipped ICT-FaceKit shapes) (default: FACS fields)."),
    sheet: Optional[Path] = typer.Option(None, help="PNG contact sheet of target landmarks over the photo."),
    backend: str = typer.Option("dlib", help=FACE_HELP),
) -> None:
    """Design a balanced pose x expression x AU grid of landmark targets for the person in --photo."""
    from fewshot.io import check_output_file, write_image
    from generators import contact_sheet, design_grid, fit_profile, grid_balance, load_motion_model, write_grid

    check_output_file(out, "--out", "grid.parquet")
    if sheet:
        check_output_file(sheet, "--sheet", "sheet.png")
    model = load_motion_model(motion) if motion else None
    profile = fit_profile(photo, backend=backend, motion=model)
    grid = design_grid(profile, n=n or None, strategy=strategy, aus=aus, seed=seed)
    try:
        write_grid(grid, out)
    except ImportError as e:  # pyarrow missing or built against another numpy
        raise FewshotError(f"{out}: cannot write parquet ({str(e).splitlines()[0]}); fix pyarrow or use --out grid.csv") from None
    if sheet:
        write_image(sheet, contact_sheet(profile, grid))
    bal = grid_balance(grid)
    au = bal[bal.kind == "au"]
    bins = bal[bal.kind == "pose_bin"]
    typer.echo(f"{out}: {len(grid)} samples, {len(bins)} pose bins ({bins['count'].min()}-{bins['count'].max()} each), "
               f"AU on-share {au['share'].min():.2f}-{au['share'].max():.2f} (per pose bin {au['bin_share_min'].min():.2f}-"
               f"{au['bin_share_max'].max():.2f}); expressions: {', '.join(f'{r.name} {r.count}' for r in bal[bal.kind == 'expression'].itertuples())} "
               f"[{strategy}, seed {seed}]")


@app.command("fit-motion")
@friendly
def fit_motion_cmd(
    dataset: str = typer.Option(..., "--dataset", help="disfa | bp4d"),
    root: Path = typer.Option(..., "--root", help="The data set folder (holding ActionUnit_Labels or AUCoding)."),
    out: Path = typer.Option(Path("motion.npz"), "--out", "-o", help="Motion model to write (.npz)."),
    ridge: float = typer.Option(1.0, help="Pull towards the FACS default fields (in full-intensity samples)."),
    max_frames: int = typer.Option(0, help="Use at most this many frames per subject (0 = all)."),
) -> None:
    """Learn AU displacement fields (and AU co-occurrence) from DISFA or BP4D landmarks and labels."""
    from experiments.datasets import load_dataset
    from fewshot.errors import ConfigError
    from generators.motion import fit_motion_table

    if dataset not in ("disfa", "bp4d"):
        raise ConfigError(f"--dataset must be disfa or bp4d, not {dataset!r}")
    opts = {"aus": "all"} if dataset == "disfa" else {}
    frames = load_dataset(dataset, root, frames="none", **opts)
    model = fit_motion_table(frames.table, source=f"{dataset}:{root}", ridge=ridge, max_frames_per_subject=max_frames or None)
    model.save(out)
    typer.echo(f"{out}: fields for {', '.join(str(a) for a in model.meta['labelled_aus'])} from "
               f"{model.meta['n_frames']} frames of {model.meta['n_subjects']} subjects [{dataset}]")


@app.command("train-base")
@friendly
def train_base_cmd(
    dataset: str = typer.Option(..., help=f"Data set: {', '.join(DATASETS.names())}."),
    root: Path = typer.Option(..., help="Data set folder (synthetic: the .h5 store)."),
    fold: str = typer.Option("1", help="1, 2, 3, 'all', a list like 1,3, or 0 = train on every subject."),
    backbone: str = typer.Option("compact", help="AU backbone (`fewshot backends` lists them)."),
    out: Path = typer.Option(Path("model.pt"), "--out", "-o", help="Checkpoint to write (+ <stem>.metrics.csv)."),
    epochs: int = typer.Option(20),
    lr: float = typer.Option(2e-3),
    batch_size: int = typer.Option(64),
    seed: int = typer.Option(0),
    crop_size: int = typer.Option(112, help="Aligned crop side (pixels)."),
    cache_dir: Optional[Path] = typer.Option(None, help="Where the aligned HDF5 cache and resumable run state go (default: next to --out)."),
    weights: Optional[Path] = typer.Option(None, help="resnet18 only: a torchvision ResNet-18 weights file to start from."),
    threads: int = typer.Option(2, help="torch CPU threads."),
) -> None:
    """Train a base AU model on a data set's subject-exclusive fold(s) and print its test metrics."""
    from experiments.train import train_base

    res = train_base(dataset, root, fold, backbone, out, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, crop_size=crop_size,
                     cache_dir=cache_dir, backbone_config={"weights": str(weights)} if weights else None, threads=threads)  # fmt: skip
    for p in res.checkpoints:
        typer.echo(f"wrote {p}")
    if len(res.metrics):
        typer.echo(res.metrics.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


@app.command()
@friendly
def predict(
    input: Path = typer.Argument(..., help="An image, a folder of images or a video file."),
    model: Optional[Path] = typer.Option(None, help="AU model checkpoint, or a `fewshot adapt` output folder (default: the shipped base model)."),
    out: Path = typer.Option(Path("aus.csv"), "--out", "-o", help="CSV to write (OpenFace columns + AUxx_r/_c/_p + expr_*)."),
    backend: str = typer.Option("dlib", help=FACE_HELP),
    threshold: float = typer.Option(0.5, help="Probability above which AUxx_c = 1."),
) -> None:
    """Predict AU intensity/occurrence and expression for every face of INPUT."""
    from au_models import base_model_path
    from au_models.predict import predict as run_predict
    from fewshot.io import check_output_file, write_table

    check_output_file(out, "--out", "aus.csv")
    df = run_predict(model or base_model_path(), input, backend=backend, threshold=threshold)
    write_table(df, out)
    _warn_unreadable(df)
    ok = int(df.success.sum())
    typer.echo(f"{out}: {len(df)} rows, face found in {ok}; AU columns: {', '.join(c for c in df.columns if c.endswith('_c'))}")


def config_options(fn: Callable) -> Callable:
    """Add one option per leaf of :class:`fewshot.adaptation.AdaptConfig` to a command (flags, types,
    defaults and help from the dataclasses; registry members listed from the registries) and hand the
    command the built ``config`` instead."""
    fields = cli_fields()
    params = [p for p in inspect.signature(fn).parameters.values() if p.name != "config"]
    taken = {p.name for p in params}
    extra = []
    for f in fields:
        name = f.key.replace(".", "_")
        assert name not in taken, f"{fn.__name__}: option {name} clashes with a config field"
        help_ = f.help + (f" One of: {', '.join(_registry_names(f.choices))}." if f.choices else "")
        annotation = Optional[Path] if f.optional else f.type
        extra.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                                       default=typer.Option(f.default, f.flag, help=help_, show_default=f.default is not None)))

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        values = {f.key: kwargs.pop(f.key.replace(".", "_")) for f in fields}
        return fn(*args, config=AdaptConfig().override(values, "options"), **kwargs)

    wrapper.__signature__ = inspect.Signature(params + extra)  # type: ignore[attr-defined]
    return wrapper


def _registry_names(kind: str) -> list[str]:
    names = next(r.names() for r in (FACE_BACKENDS, GRID_STRATEGIES, GENERATORS, STRATEGIES) if r.kind == kind)
    return [*names, NO_SYNTHESIS] if kind == "generator" else names


@app.command()
@friendly
@config_options
def adapt(
    photo: Optional[Path] = typer.Option(None, "--photo", help="A photo of the person (default: the shipped example photo)."),
    clip: Optional[Path] = typer.Option(None, "--clip", help="A short clip (or a folder of photos) of the person."),
    base: Optional[Path] = typer.Option(None, "--base", help="Base AU model checkpoint (default: the shipped base model)."),
    eval: Optional[Path] = typer.Option(None, "--eval", help="Real labelled frames of this person (a folder/CSV data set) to measure plasticity on."),
    out: Path = typer.Option(Path("adapted"), "--out", "-o", help="Output folder (model.pt, report.json, synthetic.png, curves.png, curves.csv)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier result in --out (otherwise refused)."),
    keep_anyway: bool = typer.Option(False, "--keep-anyway", help="Write the adapted model even where the keep-or-reject guard "
                                     "finds it lost on the person's held-out checks or on the base validation data."),
    config=None,
) -> None:
    """Specialise the base AU model to one person: analyse, design a grid, synthesize, adapt, evaluate (and keep the
    adapted model only where it does not lose on held-out checks; see report.json's guard)."""
    from fewshot.adaptation import adapt_person, check_out_dir

    if photo and clip:
        raise typer.BadParameter("give --photo or --clip, not both")
    config.validate()  # adapt_person checks again; here so a bad option is the only line printed
    check_out_dir(out, overwrite)
    source = photo or clip
    if source is None:
        from fewshot.data import example_photo

        source = example_photo()
        typer.echo(f"no --photo/--clip given: adapting to the shipped example photo {source.name}", err=True)
    eval_data = None
    if eval is not None:
        from experiments.datasets import load_dataset

        eval_data = load_dataset("folder", eval)
    res = adapt_person(source, base=base, config=config, out_dir=out, eval_data=eval_data, overwrite=overwrite, keep_anyway=keep_anyway)
    r = res.report
    p, g = r.plasticity, r.rigidity
    person = (f"person held-out macro F1 {p['person_holdout_macro_f1_before']:.3f} -> {p['person_holdout_macro_f1_after']:.3f}; "
              if "person_holdout_macro_f1_before" in p else "")
    written = "" if r.guard.get("kept", True) else " = the BASE model (the guard refused the adapted one: " + ", ".join(r.guard["failed"]) + ")"
    typer.echo(f"{out}/model.pt{written}: {r.strategy['name']} ({r.strategy['parameter'] or 'no parameter'}={r.strategy['value']:.3g}) "
               f"[{r.synthetic['generator']}]; {person}"
               f"base macro F1 {g.get('base_macro_f1_before', float('nan')):.3f} -> {g.get('base_macro_f1_after', float('nan')):.3f}; "
               f"{sum(s['seconds'] for s in r.stages):.1f} s")


@app.command()
@friendly
def synthesize(
    grid: Path = typer.Option(..., "--grid", help="Grid from `fewshot design` (.parquet or .csv)."),
    out: Path = typer.Option(Path("person.h5"), "--out", "-o", help="HDF5 store to write (resumed if it exists)."),
    photo: Optional[Path] = typer.Option(None, "--photo", help="The person's neutral photo (the grid's source)."),
    clip: Optional[Path] = typer.Option(None, "--clip", help="Or a clip: its most frontal face is the source."),
    size: int = typer.Option(256, help="Aligned crop size in pixels."),
    chunk: int = typer.Option(64, help="Samples per HDF5 chunk (the unit of resuming)."),
    generator: str = typer.Option("warp", help=f"Generator: {', '.join(GENERATORS.names())}."),
    appearance: Optional[Path] = typer.Option(None, help="Learned AU appearance .npz from `fewshot fit-appearance`."),
    refiner: Optional[Path] = typer.Option(None, help="Refiner weights from `fewshot train-generator` (warp+refiner)."),
    texture: Optional[str] = typer.Option(None, help="Expression texture .npz from `fewshot fit-appearance --texture`, or 'none' (mesh; default: the London one)."),
    full_frame: bool = typer.Option(False, "--full-frame", help="Also store full frames (source image frame)."),
    compression: str = typer.Option("gzip", help="Image compression: gzip (level 1) | lzf | none."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    allow_other_source: bool = typer.Option(False, "--allow-other-source",
                                            help="Render a grid designed on another photo (its targets are that face's landmarks)."),
) -> None:
    """Render a grid of the person into an HDF5 store (images, landmarks, AUs, pose) + a contact sheet."""
    from generators.store import synthesize_files

    rep = synthesize_files(grid, out, photo=photo, clip=clip, appearance=appearance, refiner=refiner, texture=texture, size=size, chunk=chunk,
                           generator=generator, full_frame=full_frame, compression=compression, progress=progress,
                           allow_other_source=allow_other_source)
    typer.echo(f"{out}: {rep.n} samples, {rep.chunks_rendered} chunk(s) rendered, {rep.chunks_skipped} already done "
               f"({rep.seconds:.1f}s){'; contact sheet ' + str(rep.contact_sheet) if rep.contact_sheet else ''}")


@app.command("fit-appearance")
@friendly
def fit_appearance_cmd(
    without: Path = typer.Option(..., "--without", help="Folder of photos without the AU (e.g. frl_london/neutral_front)."),
    with_: Path = typer.Option(..., "--with", help="Folder of the same people with it (e.g. frl_london/smiling_front)."),
    out: Path = typer.Option(Path("appearance.npz"), "--out", "-o", help="Appearance template to write."),
    au: str = typer.Option("AU06", help="The AU whose appearance to learn: AU04, AU06, AU09, AU10, AU17."),
    intensity: float = typer.Option(3.0, help="Typical FACS intensity (0-5) of the AU in the 'with' photos."),
    intensities: Optional[Path] = typer.Option(None, help="CSV of per-identity codes (columns 'identity' and the AU, FACS 0-5); "
                                                         "overrides --intensity."),
    ids: Optional[str] = typer.Option(None, help="Comma-separated identities to learn from (default: all pairs)."),
    texture: bool = typer.Option(False, "--texture", help="Learn the mesh generator's expression texture (AU6 and AU12 "
                                                          "skin change, e.g. from smiles) instead: --intensities then needs "
                                                          "columns AU06 and AU12 (else --intensity is used for both)."),
) -> None:
    """Learn an AU's skin appearance (shading, wrinkle strength) from photo pairs of the same people."""
    from generators.appearance import TEXTURE_AUS, fit_appearance_from_folders, read_intensities

    if texture:
        from generators.appearance import fit_texture_from_folders

        levels = {a: read_intensities(intensities, a) for a in TEXTURE_AUS} if intensities else intensity
        tex = fit_texture_from_folders(without, with_, levels, identities=ids.split(",") if ids else None)
        tex.save(out)
        typer.echo(f"{out}: expression texture ({', '.join(tex.fields)}) from {tex.meta['n_pairs']} pairs; "
                   f"use it with generator 'mesh' (texture={out})")
        return
    level = read_intensities(intensities, au) if intensities else intensity
    model = fit_appearance_from_folders(without, with_, au=au, intensity=level, identities=ids.split(",") if ids else None)
    model.save(out)
    typer.echo(f"{out}: {au} appearance from {model.meta['n_pairs']} pairs (texture x{model.texture_scale[au]:.2f})")


@app.command()
@friendly
def quality(
    store: Path = typer.Argument(..., help="HDF5 store from `fewshot synthesize`."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Per-image CSV to write."),
    source: Optional[Path] = typer.Option(None, help="Source photo (default: the store's 'source' attribute)."),
    real: Optional[Path] = typer.Option(None, help="Folder of real face photos: adds FID/KID."),
    inception: Optional[Path] = typer.Option(None, help="torchvision Inception-v3 state dict for FID/KID (default: offline dlib128 substitute)."),
    arcface: Optional[Path] = typer.Option(None, help="insightface buffalo_l folder: adds ArcFace identity distance."),
    max_images: Optional[int] = typer.Option(None, help="Score only the first N samples."),
    au_model: Optional[Path] = typer.Option(None, help="AU model for AU fidelity (default: the shipped base model)."),
    au: bool = typer.Option(True, "--au/--no-au", help="Score AU fidelity (an AU model on the generated crops)."),
    expression: bool = typer.Option(True, "--expression/--no-expression",
                                    help="Score expression readability with an independent FER-2013 classifier "
                                         "(when the rows carry an intended expression)."),
) -> None:
    """Identity kept, landmark fidelity, AU fidelity, expression readability, per-pose breakdown and FID/KID of a synthetic store."""
    from fewshot.io import write_table
    from generators.expression_judge import JUDGE_NOTE
    from generators.quality import evaluate_quality

    rep = evaluate_quality(store, source=source, real=real, inception=inception, arcface=arcface, max_images=max_images,
                           progress=True, au_model=au_model if au else False, expression=expression)
    if out:
        write_table(rep.per_image, out)
        if rep.au_fidelity is not None:
            write_table(rep.au_fidelity, out.with_name(f"{out.stem}_au{out.suffix}"))
        if rep.expression_readability is not None:
            write_table(rep.expression_readability, out.with_name(f"{out.stem}_expression{out.suffix}"))
    if rep.au_fidelity is not None:
        typer.echo(rep.au_fidelity.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if rep.expression_readability is not None:
        typer.echo(f"expression readability: {JUDGE_NOTE}")
        typer.echo(rep.expression_readability.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.3f}"))
    typer.echo(rep.per_pose.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    typer.echo("  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in rep.summary.items()))


@app.command("train-generator")
@friendly
def train_generator_cmd(
    without: Path = typer.Option(..., "--without", help="Folder of source photos (e.g. frl_london/neutral_front)."),
    with_: Path = typer.Option(..., "--with", help="Folder of target photos of the same people (e.g. smiling_front)."),
    out: Path = typer.Option(Path("refiner.pt"), "--out", "-o", help="Refiner weights to write."),
    epochs: int = typer.Option(3, help="Training epochs."),
    size: int = typer.Option(128, help="Training crop size."),
    ids: Optional[str] = typer.Option(None, help="Comma-separated identities to train on (default: all pairs)."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Train the optional neural refiner of the 'warp+refiner' generator on photo pairs (CPU)."""
    from generators.refiner import train_refiner_from_folders

    rep = train_refiner_from_folders(without, with_, out, epochs=epochs, size=size, identities=ids.split(",") if ids else None, seed=seed)
    typer.echo(f"{out}: refiner trained on {rep['n_pairs']} pairs, {epochs} epochs; L1 {rep['l1_warp']:.4f} (warp) -> {rep['l1_refined']:.4f} (refined) on the training pairs")


experiment_app = typer.Typer(no_args_is_help=True, help="Batch experiments: run an adaptation grid, report its results.")
app.add_typer(experiment_app, name="experiment")


@experiment_app.command("run")
@friendly
def experiment_run(
    config: Path = typer.Argument(..., help="Experiment YAML (examples: experiments/configs/)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default: the config's out, else runs/<name>)."),
    workers: int = typer.Option(1, "--workers", "-w", help="Cells run in parallel."),
    backend: str = typer.Option("local", help="local (spawned processes) | ray (RAY_ADDRESS, else a local Ray instance)."),
    progress: bool = typer.Option(False, "--progress/--quiet", help="Print each finished cell on stderr."),
) -> None:
    """Run every unfinished cell of an experiment grid (finished cells are kept and skipped)."""
    from experiments.runner import run_experiment

    s = run_experiment(config, out, workers=workers, backend=backend, progress=progress)
    typer.echo(f"{s.results}: {s.n_cells} cells ({len(s.ran)} run, {len(s.skipped)} already done, {len(s.failed)} failed) in {s.seconds:.1f} s")
    for cid, msg in s.failed.items():
        typer.echo(f"failed {cid}: {msg} (see {s.run_dir / 'errors' / (cid + '.txt')})", err=True)
    if s.failed:
        raise typer.Exit(1)


@experiment_app.command("report")
@friendly
def experiment_report(
    results: Path = typer.Argument(..., help="results.parquet / results.csv, or a run folder."),
    out: Path = typer.Option(Path("report"), "--out", "-o", help="Folder for the tables (CSV, Markdown) and plots (PNG)."),
) -> None:
    """Aggregate a results table: summary, per-AU generic vs adapted, forgetting, rigidity-plasticity."""
    from experiments.report import write_report

    paths = write_report(results, out)
    typer.echo(f"{out}: {', '.join(sorted(p.name for p in paths.values()))}")


@app.command()
def backends() -> None:
    """List the registered swappable parts of every kind (face backends, grid strategies, generators,
    AU backbones, adaptation strategies, experiment cell kinds, data sets)."""
    from au_models.backbones import BACKBONES
    from experiments.protocol import CELL_KINDS

    for reg in [FACE_BACKENDS, GRID_STRATEGIES, GENERATORS, BACKBONES, STRATEGIES, CELL_KINDS, DATASETS]:
        typer.echo(f"{reg.kind}:")
        for name, doc in reg.describe().items():
            typer.echo(f"  {name:16s} {doc}")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
