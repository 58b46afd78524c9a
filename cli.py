"""The ``fewshot`` command: a thin Typer layer over the stage APIs.

Each command parses its options, calls one library function and prints a short summary. Every
user-facing failure is a :class:`fewshot.errors.FewshotError`, printed as one line on stderr with
exit code 2 (no traceback).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Callable, Optional

import typer

from fewshot.errors import FewshotError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="fewshot: specialise a facial Action Unit detector to one person from a photo or a short clip.",
)


def friendly(fn: Callable) -> Callable:
    """Turn FewshotError (and Ctrl-C) into one line on stderr and exit code 2 / 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FewshotError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(code=e.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: outputs already written are complete; partial ones were removed", err=True)
            raise typer.Exit(code=130) from None

    return wrapper


def _backend_options(weights: Optional[Path]) -> dict:
    return {"weights": str(weights)} if weights else {}


@app.command()
@friendly
def detect(
    input: Optional[Path] = typer.Argument(None, help="An image, a folder of images or a video file (default: the shipped example photo)."),
    out: Path = typer.Option(Path("faces.csv"), "--out", "-o", help="CSV to write (OpenFace columns)."),
    backend: str = typer.Option("dlib", help="Face backend: dlib, mediapipe, face-alignment, insightface."),
    weights: Optional[Path] = typer.Option(None, help="Weights file/folder for face-alignment or insightface."),
    faces: str = typer.Option("largest", help="largest | all | error (when a frame holds several faces)."),
    overlay: Optional[Path] = typer.Option(None, help="Folder to write each frame with its landmarks drawn."),
    embed: Optional[bool] = typer.Option(None, "--embed/--no-embed", help="Add emb_* identity columns (default: on for photos and folders, off for videos)."),
    track: bool = typer.Option(True, help="On videos, search near the previous face first."),
    select: int = typer.Option(0, help="Also print the best N reference frames (sharp, frontal, neutral)."),
) -> None:
    """Detect faces, 68 landmarks, head pose (and identity embeddings) in INPUT."""
    from fewshot.analysis import Analyzer
    from fewshot.io import VIDEO_EXTENSIONS

    if input is None:
        from fewshot.data import example_photo

        input = example_photo()
        typer.echo(f"no INPUT given: analysing the shipped example photo {input.name}", err=True)
    if embed is None:
        embed = input.suffix.lower() not in VIDEO_EXTENSIONS
    analyzer = Analyzer(backend=backend, faces=faces, embed=embed, track=track, backend_options=_backend_options(weights))  # type: ignore[arg-type]
    result = analyzer.analyze(input, overlay_dir=overlay)
    result.to_csv(out, embeddings=embed)
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
    backend: str = typer.Option("dlib"),
    weights: Optional[Path] = typer.Option(None),
) -> None:
    """Pick the k best reference frames (confidence, sharpness, frontal pose, closeness to neutral)."""
    from fewshot.analysis import Analyzer
    from fewshot.io import write_table
    from fewshot.selection import select_frames

    result = Analyzer(backend=backend, embed=False, backend_options=_backend_options(weights)).analyze(input)
    best = select_frames(result, k)
    if out:
        write_table(best, out)
    typer.echo(best.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


@app.command()
def backends() -> None:
    """List the registered backends of every kind."""
    from fewshot.backends import FACE_BACKENDS

    typer.echo("face backends:")
    for name, doc in FACE_BACKENDS.describe().items():
        typer.echo(f"  {name:16s} {doc}")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
