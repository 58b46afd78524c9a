"""Stage-3 checks on the 40 FRL London identities (tables in docs/results.md, per-identity CSVs in docs/).

    python scripts/stage3_checks.py identity --n 200          # identity + landmark fidelity, 40 x n images
    python scripts/stage3_checks.py smile                     # generated smile vs real smile, 2-fold -> docs/stage3_smile.csv
    python scripts/stage3_checks.py sheet --out docs/stage3_au_intensities.png
    python scripts/stage3_checks.py mouth                     # painted vs real mouth interiors -> docs/stage3_mouth.csv
    python scripts/stage3_checks.py reenact --generator warp  # self-reenactment realism -> docs/stage3_reenactment_warp.csv

Add ``--write-results`` to replace the command's section of docs/results.md (``--section`` names it;
default: the command's name; for ``reenact``: ``reenactment_<generator>``) with the summary it prints. The computations live in
:mod:`generators.checks` (the tests run the same functions on a few identities); this file parses,
calls them, prints and writes.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fewshot.errors import FewshotError  # noqa: E402
from generators import checks  # noqa: E402


def write_results(args, markdown: str) -> None:
    if args.write_results:
        from experiments.results_doc import invocation, update_section

        path = update_section(args.section or args.cmd, markdown, command=invocation(), machine=args.machine)
        print(f"{path}: section {args.section or args.cmd} updated")


def smile_markdown(summary: pd.DataFrame, csv_name: str) -> str:
    """The results table of :func:`generators.checks.smile_summary`."""
    from experiments.results_doc import markdown_table

    table = markdown_table(
        ["generator", "landmarks closer than the neutral photo", "landmark error, IOD (neutral)", "pixels closer",
         "grey-level distance (neutral)", "not closer on both"],
        [[r.generator, f"{r.landmarks_closer}/{r.identities}", f"{r.lm_mean:.4f} ({r.lm_neutral:.4f})",
          f"{r.pixels_closer}/{r.identities}", f"{r.px_mean:.2f} ({r.px_neutral:.2f})", r.not_closer or "-"]
         for r in summary.itertuples()])
    return table + f"\n\nPer identity (codes, measured pose, every generator): `{csv_name}`."


def mouth_markdown(df: pd.DataFrame, csv_name: str, sheet_name: str | None) -> str:
    """The results table of :func:`generators.checks.mouth_rows`."""
    from experiments.results_doc import markdown_table

    table = markdown_table(
        ["smiles with parted lips", "mean RGB difference inside the lips (abs.)", "grey p90 real vs generated", "grey mean real vs generated"],
        [[len(df), f"{df.rgb_diff.mean():.1f}", f"{df.real_p90.mean():.1f} vs {df.generated_p90.mean():.1f}",
          f"{df.real_mean.mean():.1f} vs {df.generated_mean.mean():.1f}"]])
    return table + f"\n\nPer smile: `{csv_name}`" + (f"; real and generated mouths side by side: `{sheet_name}`." if sheet_name else ".")


def identity_markdown(df: pd.DataFrame, n: int, seconds: float, summary_name: str) -> str:
    """The results tables of :func:`generators.checks.identity_rows` (overall, then per yaw bin)."""
    from experiments.results_doc import markdown_table

    per_id, by_yaw = checks.identity_per_id(df), checks.identity_by_yaw(df)
    worst, worst_lm = per_id.identity_ok.idxmin(), per_id.landmark_error.idxmax()
    table = markdown_table(["measure", "result"], [
        ["images (identities x balanced grid)", f"{len(df):,} ({df.id.nunique()} x {n})"],
        ["dlib distance to the source photo < 0.6", f"**{df.identity_ok.mean():.2%}**"],
        ["identities with >= 95%", f"{(per_id.identity_ok >= 0.95).sum()} of {len(per_id)}"],
        ["worst identity", f"{worst}: {per_id.identity_ok[worst]:.1%} at mean distance {per_id.identity_distance[worst]:.2f}"],
        ["mean identity distance", f"{df.identity_distance.mean():.2f}"],
        ["landmark error, re-detected vs rendered, / IOD",
         f"mean **{df.landmark_error.mean():.3f}**, median {df.landmark_error.median():.3f}, worst identity {worst_lm} {per_id.landmark_error[worst_lm]:.3f}"],
        ["face re-detected", f"{df.detected.mean():.2%}"],
        ["seconds", f"{seconds:.0f}"]])
    yaw_table = markdown_table(["yaw bin (deg)", "identity kept", "identity distance", "landmark error", "re-detected"],
                               [[int(b), f"{r.identity_ok:.1%}", f"{r.identity_distance:.3f}", f"{r.landmark_error:.3f}", f"{r.detected:.1%}"]
                                for b, r in by_yaw.iterrows()])
    return table + "\n\n" + yaw_table + f"\n\nPer identity: `{summary_name}`."


def cmd_smile(args) -> None:
    from fewshot.analysis import Analyzer

    t0 = time.time()
    lmc = checks.landmarks_cache()

    def show(row):
        print(" ".join(f"{c}={v:.4f}" if isinstance(v, float) else f"{c}={v}" for c, v in row.items()), flush=True)

    df = checks.smile_check(lmc, Analyzer(embed=False), args.step, args.au6, args.tolerance, args.pose == "matched",
                            args.jitter, args.save, args.appearance_out, on_row=show)
    df.round(5).to_csv(args.out, index=False)
    print(f"\n{len(df)} identities in {time.time() - t0:.0f}s -> {args.out}")
    summary = checks.smile_summary(df)
    for r in summary.itertuples():
        n = r.identities
        print(f"{r.generator:15s} landmarks closer than neutral: {r.landmarks_closer / n:.1%} (mean {r.lm_mean:.4f} vs {r.lm_neutral:.4f}); "
              f"pixels closer: {r.pixels_closer / n:.1%} (mean {r.px_mean:.3f} vs {r.px_neutral:.3f}); both {r.both_closer / n:.1%}; "
              f"not closer: {r.not_closer}")
    write_results(args, smile_markdown(summary, Path(args.out).name))


def reenact_markdown(summary: pd.DataFrame, csv_name: str) -> str:
    """The results table of :func:`generators.checks.realism_summary`."""
    from experiments.results_doc import markdown_table

    r = summary.iloc[0]
    n = r.identities
    table = markdown_table(
        ["measure (inside the face, vs the real smile)", f"`{r.generator}` reenacted", "neutral photo (baseline)", "real smile"],
        [["PSNR, dB (RGB)", f"**{r.psnr_rendered:.2f}** (higher than the neutral photo for {r.psnr_better}/{n})", f"{r.psnr_neutral:.2f}", "-"],
         ["SSIM (grey, Gaussian window)", f"**{r.ssim_rendered:.3f}** ({r.ssim_better}/{n})", f"{r.ssim_neutral:.3f}", "-"],
         ["FER-2013 P(happy), mean", f"**{r.happy_rendered:.3f}** ({r.happy_ratio:.2f} of the real smiles')", f"{r.happy_neutral:.3f}",
          f"{r.happy_real:.3f}"],
         [f"two-sample AUC vs real smiles (HOG + logistic regression, C={r.C:g}, identity-grouped {r.folds}-fold; 0.5 = indistinguishable)",
          f"**{r.auc_rendered:.3f}** ({r.auc_rendered_lo:.3f}-{r.auc_rendered_hi:.3f})", f"{r.auc_neutral:.3f} ({r.auc_neutral_lo:.3f}-{r.auc_neutral_hi:.3f})",
"-"]])
    return table + (f"\n\nAUC in brackets: the range over {r.seeds} shuffled fold assignments (seeds 0-{r.seeds - 1}). "
                     f"Per identity (codes, measured pose, PSNR, SSIM, P(happy)): `{csv_name}`.")


def reenact_section(generator: str) -> str:
    """The results section of one generator's reenactment check ('warp+shading' -> 'reenactment_warp_shading')."""
    return "reenactment_" + re.sub(r"[^A-Za-z0-9_.-]", "_", generator)


def cmd_reenact(args) -> int:
    t0 = time.time()
    out = args.out or str(ROOT / "docs" / f"stage3_{reenact_section(args.generator)}.csv")

    def show(row):
        print(" ".join(f"{c}={v:.4f}" if isinstance(v, float) else f"{c}={v}" for c, v in row.items()), flush=True)

    faces: dict = {}
    try:
        generator = checks.make_generator(args.generator, checks.parse_options(args.option))  # a bad name or option fails before any work
        identities = checks.ids()[args.skip: args.skip + args.ids]
        if not identities:
            print(f"error: no London photos in {checks.LONDON / 'neutral_front'} (set FEWSHOT_SHARED)", file=sys.stderr)
            return 2
        textures = fold_textures(generator, identities, args, checks.parse_options(args.option))
        df = checks.reenactment_rows(identities, checks.landmarks_cache(), generator, faces=faces, on_row=show, textures=textures)
    except FewshotError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    df.round(5).to_csv(out, index=False)
    summary = checks.realism_summary(df, faces)
    r = summary.iloc[0]
    print(f"\n{len(df)} identities, generator {args.generator}, {time.time() - t0:.0f}s -> {out}")
    print(f"PSNR in the face {r.psnr_rendered:.2f} dB (neutral photo {r.psnr_neutral:.2f}; higher for {r.psnr_better}/{r.identities}); "
          f"SSIM {r.ssim_rendered:.4f} ({r.ssim_neutral:.4f}; {r.ssim_better}/{r.identities})")
    print(f"P(happy) rendered {r.happy_rendered:.3f}, real smiles {r.happy_real:.3f} (ratio {r.happy_ratio:.2f}), neutral {r.happy_neutral:.3f}")
    print(f"two-sample AUC real smile vs rendered {r.auc_rendered:.3f} ({r.auc_rendered_lo:.3f}-{r.auc_rendered_hi:.3f} over "
          f"shuffled folds); vs neutral photo {r.auc_neutral:.3f} ({r.auc_neutral_lo:.3f}-{r.auc_neutral_hi:.3f})")
    args.section = args.section or reenact_section(args.generator)
    write_results(args, reenact_markdown(summary, Path(out).name))
    return 0


def fold_textures(generator, identities, args, opts: dict | None = None) -> dict | None:
    """Per identity an expression texture learned on the other folds' London pairs, for a generator
    that draws one (mesh) and was given none (``--texture-folds`` 0: its own)."""
    textures = checks.fold_textures(generator, identities, args.texture_folds, opts)
    if textures is not None:
        print(f"expression texture: learned on the other of {args.texture_folds} identity folds per identity", flush=True)
    return textures


def cmd_identity(args) -> None:
    t0 = time.time()

    def show(i, per):
        print(f"{i}: identity ok {per.identity_ok.mean():.1%}, distance {per.identity_distance.mean():.3f}, "
              f"landmark error {per.landmark_error.mean():.4f}, detected {per.detected.mean():.1%}", flush=True)

    motion = None
    if args.motion:
        from generators import load_motion_model

        motion = load_motion_model(args.motion)
    identities = checks.ids()[args.skip: args.skip + args.ids]
    generator = checks.make_generator(args.generator)
    df = checks.identity_rows(identities, args.n, on_identity=show, motion=motion, generator=generator,
                              textures=fold_textures(generator, identities, args))
    seconds = time.time() - t0
    df.to_csv(args.out, index=False)
    per_id = checks.identity_per_id(df)
    per_id.round(4).to_csv(args.summary)
    print(f"\n{len(df)} images of {df.id.nunique()} identities in {seconds:.0f}s")
    print(f"identity distance < 0.6: {df.identity_ok.mean():.2%}; identities with >= 95%: {(per_id.identity_ok >= 0.95).mean():.1%}")
    print(f"landmark error: mean {df.landmark_error.mean():.4f}, median {df.landmark_error.median():.4f}; face re-detected {df.detected.mean():.1%}")
    print(checks.identity_by_yaw(df).round(4).to_string())
    write_results(args, identity_markdown(df, args.n, seconds, Path(args.summary).name))


def cmd_sheet(args) -> None:
    from fewshot.io import write_image

    motion = None
    if args.motion:
        from generators import load_motion_model

        motion = load_motion_model(args.motion)
    identities = args.ids.split(",")
    generator = checks.make_generator(args.generator)
    sheet = checks.au_intensity_sheet(identities, args.tile, generator=generator, motion=motion,
                                      textures=fold_textures(generator, identities, args))
    write_image(args.out, sheet)
    print(f"{args.out}: {Path(args.out).stat().st_size / 1e3:.0f} kB")
    write_results(args, f"![AU6 and AU17 at 0, A, C, E]({Path(args.out).name})\n\n"
                        f"AU6 and AU17 at 0, A, C, E (each row: one identity, AU6 then AU17), identities {args.ids}, "
                        f"at each photo's own pose, generator `{args.generator}` (`{Path(args.out).name}`).")


def cmd_mouth(args) -> None:
    from fewshot.io import write_image

    t0 = time.time()
    tiles: list = []
    df = pd.DataFrame(checks.mouth_rows(checks.ids(), checks.landmarks_cache(), tiles))
    df.round(3).to_csv(args.out, index=False)
    print(df.round(1).to_string(index=False))
    print(f"\n{len(df)} smiles with parted lips ({time.time() - t0:.0f}s) -> {args.out}")
    print(f"inner mouth |RGB| difference {df.rgb_diff.mean():.1f}; grey p90 real {df.real_p90.mean():.1f} vs generated "
          f"{df.generated_p90.mean():.1f}; mean real {df.real_mean.mean():.1f} vs generated {df.generated_mean.mean():.1f}")
    if args.sheet:
        write_image(args.sheet, checks.mouth_sheet(tiles))
        print(f"{args.sheet}: real | generated pairs")
    write_results(args, mouth_markdown(df, Path(args.out).name, Path(args.sheet).name if args.sheet else None))


def main() -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--write-results", action="store_true", help="replace this check's section of docs/results.md")
    common.add_argument("--section", default=None, help="results section name (default: the command's name)")
    common.add_argument("--machine", default=None, help="machine description for the results header (default: detected)")
    common.add_argument("--texture-folds", type=int, default=2,
                   help="a generator with a learned expression texture (mesh) renders each identity with one learned on the "
                        "other London identities' pairs, dealt into this many folds (0: its own texture, e.g. trained on all)")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("smile", parents=[common])
    s.add_argument("--out", default=str(ROOT / "docs" / "stage3_smile.csv"))
    s.add_argument("--save", default=None, help="folder for neutral | generated | real triptychs")
    s.add_argument("--step", type=float, default=1.0, help="coding step: 1 = FACS letters, 0.5 = half-letters")
    s.add_argument("--au6", type=float, default=None, help="hold AU6 at this intensity (e.g. 1 = A) and code only AU12, AU25")
    s.add_argument("--pose", choices=["matched", "profile"], default="matched",
                   help="render at the real smile's measured head pose, or at the neutral photo's own")
    s.add_argument("--no-jitter", dest="jitter", action="store_false",
                   help="detect the landmarks of each crop once, not averaged over 9 half-pixel shifts")
    s.add_argument("--appearance-out", default=None, help="save fold 0's learned appearance (.npz)")
    s.add_argument("--tolerance", type=float, default=0.0,
                   help="parsimonious coding: the least intense codes within this landmark error (IOD) of the best")
    s = sub.add_parser("identity", parents=[common])
    s.add_argument("--n", type=int, default=200)
    s.add_argument("--ids", type=int, default=40)
    s.add_argument("--skip", type=int, default=0, help="start after this many identities (sorted)")
    s.add_argument("--out", default="/tmp/stage3_identity.csv", help="per-image table")
    s.add_argument("--summary", default=str(ROOT / "docs" / "stage3_identity.csv"), help="per-identity table")
    s.add_argument("--motion", default=None, help="AU motion model .npz (default: the FACS fields)")
    s.add_argument("--generator", default="warp", help="a registered generator (`fewshot backends` lists them)")
    s = sub.add_parser("sheet", parents=[common])
    s.add_argument("--generator", default="warp", help="a registered generator (`fewshot backends` lists them)")
    s.add_argument("--motion", default=None, help="AU motion model .npz (default: the FACS fields)")
    s.add_argument("--ids", default="001,012,024")
    s.add_argument("--tile", type=int, default=160)
    s.add_argument("--out", default=str(ROOT / "docs" / "stage3_au_intensities.png"))
    s = sub.add_parser("mouth", parents=[common])
    s.add_argument("--out", default=str(ROOT / "docs" / "stage3_mouth.csv"))
    s.add_argument("--sheet", default=str(ROOT / "docs" / "stage3_mouths.jpg"), help="real | generated mouths ('' = none)")
    s = sub.add_parser("reenact", parents=[common],
                       help="self-reenactment realism: neutral photos driven by their own smiles vs the real smiles")
    s.add_argument("--generator", default="warp", help="a registered generator (`fewshot backends` lists them)")
    s.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a constructor option of the generator (e.g. appearance=smile_au06.npz, refiner=r.pt); repeatable")
    s.add_argument("--ids", type=int, default=40)
    s.add_argument("--skip", type=int, default=0, help="start after this many identities (sorted)")
    s.add_argument("--out", default=None, help="per-identity table (default: docs/stage3_reenactment_<generator>.csv)")
    a = ap.parse_args()
    commands = {"smile": cmd_smile, "identity": cmd_identity, "sheet": cmd_sheet, "mouth": cmd_mouth, "reenact": cmd_reenact}
    sys.exit(commands[a.cmd](a) or 0)


if __name__ == "__main__":
    main()
