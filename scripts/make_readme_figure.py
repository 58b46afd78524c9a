"""The README's figure: the shipped example photo | part of its synthetic grid | the adaptation curves.

    python scripts/make_readme_figure.py [--out docs/overview.png] [--adapted DIR]

Runs the real pipeline through the CLI (``fewshot adapt --photo <example> --out <tmp>/adapted``, the
defaults otherwise), then composes the photo, the top-left quarter of the run's contact sheet
(``synthetic.png``) and its curves (``curves.csv``: macro F1 on the person's held-out synthetic rows
and on the base model's validation buffer, before adaptation and after every epoch) into one PNG.
``--adapted DIR`` reuses the outputs of an earlier ``fewshot adapt`` instead of running it.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MAX_BYTES = 400_000
CURVE_LABELS = {"f1_person_holdout": "this person (held-out synthetic rows)",
                "f1_base_validation": "base model's validation set (rigidity)"}


def fewshot_command() -> list[str]:
    """The ``fewshot`` console script of this interpreter's environment (else the one on PATH)."""
    here = Path(sys.executable).with_name("fewshot")
    found = str(here) if here.exists() else shutil.which("fewshot")
    return [found] if found else [sys.executable, "-c", "from cli import main; main()"]


def run_adapt(photo: Path, out: Path) -> None:
    cmd = [*fewshot_command(), "adapt", "--photo", str(photo), "--out", str(out)]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def compose(photo: Path, adapted: Path, out: Path) -> int:
    """Write the three-panel figure to ``out`` (PNG, palette-quantised if it would exceed
    MAX_BYTES); returns its size in bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    from PIL import Image

    from fewshot.io import read_image

    image = read_image(photo)                                  # uint8 RGB
    sheet = read_image(adapted / "synthetic.png")
    part = sheet[: sheet.shape[0] // 2, : sheet.shape[1] // 2]  # top-left quarter of the contact sheet
    curves = pd.read_csv(adapted / "curves.csv")
    report = json.loads((adapted / "report.json").read_text())
    strategy, config = report["strategy"], report["config"]
    n_synthetic = config["grid"].get("size") if isinstance(config.get("grid"), dict) else config.get("grid_size")

    fig = plt.figure(figsize=(12.6, 3.9), dpi=100)
    widths = [image.shape[1] / image.shape[0], part.shape[1] / part.shape[0], 1.55]
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": widths, "wspace": 0.2})
    axes[0].imshow(image)
    axes[0].set_title("1. one photo", fontsize=11)
    axes[1].imshow(part)
    axes[1].set_title("2. its synthetic grid (poses x AUs x intensities)" if n_synthetic is None
                      else f"2. synthetic grid (a few of {n_synthetic})", fontsize=11)
    for ax in axes[:2]:
        ax.set_xticks([])
        ax.set_yticks([])
    ax = axes[2]
    x = list(range(len(curves)))
    ticks = [{"start": "before", "base": "base"}.get(s, str(e)) for s, e in zip(curves.stage, curves.epoch)]
    for col in [c for c in curves.columns if c.startswith("f1_")]:
        y = curves[col].to_numpy()
        ax.plot(x, y, "o-", label=CURVE_LABELS.get(col, col))
        ax.annotate(f"{y[0]:.2f} -> {y[-1]:.2f}", (x[-1], y[-1]), textcoords="offset points", xytext=(-4, 7), ha="right", fontsize=9)
    ax.set_xticks(x, ticks)
    ax.set_xlabel("epoch on the person (base: consolidation pass on the base data)")
    ax.set_ylabel("macro F1")
    ax.legend(fontsize=8.5, loc="upper left")
    ax.grid(alpha=0.3)
    ax.set_title(f"3. adaptation ({strategy['name']}, {strategy['parameter']}={strategy['value']:.3g})", fontsize=11)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.91, bottom=0.15)

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    data = buf.getvalue()
    if len(data) > MAX_BYTES:  # photos compress badly as truecolour PNG; 256 colours look the same here
        img = Image.open(io.BytesIO(data)).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
        data = buf.getvalue()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    return len(data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "overview.png")
    ap.add_argument("--adapted", type=Path, default=None, help="outputs of an earlier `fewshot adapt` (skip the run)")
    a = ap.parse_args()
    from fewshot.data import example_photo

    photo = Path(example_photo())
    if a.adapted:
        size = compose(photo, a.adapted, a.out)
    else:
        with tempfile.TemporaryDirectory() as d:
            run_adapt(photo, Path(d) / "adapted")
            size = compose(photo, Path(d) / "adapted", a.out)
    print(f"{a.out}: {size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
