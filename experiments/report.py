"""Aggregate a results table (``results.parquet`` of :mod:`experiments.runner`) into tables and figures.

    from experiments.report import load_results, summary_table, per_au_table, write_report
    df = load_results("runs/bp4d/results.parquet")
    summary_table(df)           # mean and std over subjects and seeds, per configuration
    write_report(df, "report/") # CSV + Markdown + PNG (matplotlib Agg)

A *configuration* is (dataset, k, generator, strategy, plasticity); its *units* are (fold, subject,
seed). Per unit, macro F1 is the mean over AUs of the per-AU F1 (NaN-skipping); tables report the mean
and the standard deviation over units. Every row carries the base model's F1 on the same frames, so
``gain`` = adapted - generic on the person and ``forgetting`` = generic - adapted on the other test
subjects (positive = worse on others). ``pooled_f1`` sums the confusion counts over units first.

Beside F1 every table carries the threshold-free scores of the real frames where the results have them
(:func:`experiments.protocol.confusion`; NaN in older tables): ``auc``, ``mean_p_pos`` (mean P on the
positive frames: the sensitivity of the scores), ``mean_p_neg`` (on the negative ones), ``brier``
(calibration of P against the labels), macro over AUs in the summary and per AU in the per-AU table,
and the expression head's ``expr_happy_on_other`` / ``expr_happy_on_happy`` (share of the frames with
another / the happy label it calls happy). :func:`headline_table` gives one AU's figures per
configuration as 'mean ± std' text, which ``python -m experiments.report RESULTS --au AU12
--write-results NAME`` writes into ``docs/results.md`` (:mod:`experiments.results_doc`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from fewshot.errors import FewshotError, InputError
from fewshot.io import atomic_path, write_table

from .results_doc import DEFAULT_PATH, markdown_table, update_section

CONFIG = ["dataset", "k", "generator", "strategy", "plasticity"]
UNIT = ["fold", "subject", "seed"]
RESULT_COLUMNS = [*CONFIG, *UNIT, "cell_id", "au", "f1", "f1_base", "f1_other", "f1_other_base", "tp", "fp", "fn", "tp_base", "fp_base", "fn_base"]
SHOWN_AUS = ("AU06", "AU17")  # appearance-driven AUs the synthesis conditions explicitly: always in the per-AU table
SCORES = ["auc", "mean_p_pos", "mean_p_neg", "brier"]  # per-AU real-frame scores (and their _base)
EXPRESSION_SCORES = ["expr_happy_on_other", "expr_happy_on_happy", "expr_acc"]  # per cell (and their _base)


def load_results(path: str | os.PathLike) -> pd.DataFrame:
    """A results table from .parquet or .csv (ConfigError-free: a missing file raises InputError)."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.parquet"
    if not p.is_file():
        raise InputError(f"{p}: no results table; run `fewshot experiment run CONFIG` first")
    try:
        df = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
    except Exception as e:  # noqa: BLE001 - not parquet, not CSV, truncated...: all mean "not a results table"
        raise InputError(f"{p}: not a readable results table ({type(e).__name__}); pass the results.parquet or results.csv "
                         "of `fewshot experiment run`, or its run folder") from None  # fmt: skip
    missing = [c for c in RESULT_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{p}: not a results table of `fewshot experiment run` (no {', '.join(missing[:4])}{'...' if len(missing) > 4 else ''} "
                         "column); pass its results.parquet or run folder")  # fmt: skip
    if not len(df):
        raise InputError(f"{p}: the results table is empty (no finished cell)")
    return df


def _f1(tp, fp, fn) -> np.ndarray:
    tp, fp, fn = (np.asarray(v, np.float64) for v in (tp, fp, fn))
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), np.nan)


def _with_scores(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with every score column of :data:`SCORES` / :data:`EXPRESSION_SCORES` (NaN where a
    results table from before these scores lacks it)."""
    wanted = [f"{c}{t}" for c in SCORES + EXPRESSION_SCORES for t in ("", "_base")]
    missing = [c for c in wanted if c not in df.columns]
    return df.assign(**{c: np.nan for c in missing}) if missing else df


def unit_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration x unit: macro F1 (adapted / generic) on the person and on the others,
    the macro real-frame scores (auc, mean_p_pos, mean_p_neg, brier and their _base) and the
    expression head's scores (one value per cell)."""
    df = _with_scores(df)
    cols = ["f1", "f1_base", "f1_other", "f1_other_base"] + [f"{c}{t}" for c in SCORES + EXPRESSION_SCORES for t in ("", "_base")]
    g = df.groupby(CONFIG + UNIT, dropna=False)
    out = g[cols].mean().reset_index()  # pandas mean skips NaN: macro over AUs with a defined score
    out["gain"] = out["f1"] - out["f1_base"]
    out["forgetting"] = out["f1_other_base"] - out["f1_other"]
    return out


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: n_units, mean and std over subjects x seeds of macro F1 (person, generic,
    gain, others, forgetting), the pooled F1 over every unit's frames, then the macro real-frame scores
    (auc, mean_p_pos, mean_p_neg, brier: mean and std adapted, mean generic) and the expression head's
    share of other-expression / happy frames called happy (same)."""
    units = unit_table(df)
    g = units.groupby(CONFIG, dropna=False)
    out = g.size().rename("n_units").to_frame()
    for c in ("f1", "f1_base", "gain", "f1_other", "forgetting"):
        out[f"{c}_mean"] = g[c].mean()
        out[f"{c}_std"] = g[c].std(ddof=0)
    pooled = df.groupby(CONFIG, dropna=False)[["tp", "fp", "fn", "tp_base", "fp_base", "fn_base"]].sum()
    out["pooled_f1"] = _f1(pooled["tp"], pooled["fp"], pooled["fn"])
    out["pooled_f1_base"] = _f1(pooled["tp_base"], pooled["fp_base"], pooled["fn_base"])
    for c in SCORES + EXPRESSION_SCORES[:2]:
        out[f"{c}_mean"] = g[c].mean()
        out[f"{c}_std"] = g[c].std(ddof=0)
        out[f"{c}_base_mean"] = g[f"{c}_base"].mean()
    return out.reset_index()


def per_au_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per configuration x AU: generic vs adapted F1 on the person (mean, std over units), the change,
    and on the other subjects, then the real-frame scores auc, mean_p_pos, mean_p_neg, brier (generic
    mean, adapted mean and std); AU6 and AU17 always appear (NaN where the data set does not code them)."""
    df = _with_scores(df)
    g = df.groupby(CONFIG + ["au"], dropna=False)
    out = g.size().rename("n_units").to_frame()
    for c in ("f1_base", "f1", "f1_other_base", "f1_other"):
        out[f"{c}_mean"] = g[c].mean()
    out["f1_std"] = g["f1"].std(ddof=0)
    for c in SCORES:
        out[f"{c}_base_mean"] = g[f"{c}_base"].mean()
        out[f"{c}_mean"] = g[c].mean()
        out[f"{c}_std"] = g[c].std(ddof=0)
    out = out.reset_index()
    out["f1_change"] = out["f1_mean"] - out["f1_base_mean"]
    missing = []
    for key, _ in df.groupby(CONFIG, dropna=False):
        have = set(out.loc[_nan_match(out, key), "au"])
        for au in SHOWN_AUS:
            if au not in have:
                missing.append({**dict(zip(CONFIG, key)), "au": au, "n_units": 0})
    if missing:
        out = pd.concat([out, pd.DataFrame(missing)], ignore_index=True)
    return out.sort_values(CONFIG + ["au"], kind="stable", na_position="first").reset_index(drop=True)


def headline_table(df: pd.DataFrame, au: str = "AU12") -> pd.DataFrame:
    """One AU's real-frame figures per configuration: n_units, n_seeds, then for auc, mean_p_pos,
    mean_p_neg, brier and the expression head's expr_happy_on_other: mean and std over units
    (subjects x seeds) adapted, mean generic. InputError when the results hold no row of ``au``."""
    df = _with_scores(df)
    if au not in set(df["au"]):
        raise InputError(f"no result rows for {au}; the results hold {', '.join(sorted(set(df['au'])))}")
    per = per_au_table(df)
    per = per[per["au"] == au]
    seeds = df[df["au"] == au].groupby(CONFIG, dropna=False)["seed"].nunique().rename("n_seeds").reset_index()
    expr = summary_table(df)[CONFIG + ["expr_happy_on_other_mean", "expr_happy_on_other_std", "expr_happy_on_other_base_mean"]]
    cols = [f"{c}{t}" for c in SCORES for t in ("_mean", "_std", "_base_mean")]
    out = per[CONFIG + ["au", "n_units"] + cols].merge(seeds, on=CONFIG, how="left").merge(expr, on=CONFIG, how="left")
    out = out.assign(_synth=out["generator"] != "none").sort_values(["dataset", "k", "_synth", "strategy", "generator", "plasticity"], kind="stable", na_position="first")
    return out[CONFIG + ["au", "n_units", "n_seeds"] + cols + list(expr.columns[len(CONFIG):])].reset_index(drop=True)


def headline_markdown(table: pd.DataFrame, digits: int = 3) -> str:
    """A :func:`headline_table` as a Markdown table of 'mean ± std (generic)' cells."""
    def cell(row, c: str) -> str:
        m, sd, b = row[f"{c}_mean"], row[f"{c}_std"], row[f"{c}_base_mean"]
        if pd.isna(m):
            return "n/a"
        return f"{m:.{digits}f} ± {0.0 if pd.isna(sd) else sd:.{digits}f} ({b:.{digits}f})"

    au = str(table["au"].iloc[0]) if len(table) else "AU"
    headers = ["strategy", "generator", "seeds", f"{au} AUC", f"mean P({au}), {au} frames", f"mean P({au}), no-{au} frames",
               f"Brier ({au})", "other expression called happy"]  # fmt: skip
    rows = [[r["strategy"], r["generator"], int(r["n_seeds"]), *(cell(r, c) for c in SCORES + ["expr_happy_on_other"])] for _, r in table.iterrows()]
    return markdown_table(headers, rows)


def _nan_match(frame: pd.DataFrame, key: tuple) -> pd.Series:
    m = pd.Series(True, index=frame.index)
    for c, v in zip(CONFIG, key):
        m &= frame[c].isna() if (isinstance(v, float) and np.isnan(v)) else (frame[c] == v)
    return m


def forgetting_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: F1 on the other test subjects, generic vs adapted, and the forgetting."""
    s = summary_table(df)
    return s[CONFIG + ["n_units", "f1_other_mean", "f1_other_std", "forgetting_mean", "forgetting_std"]]


def curve_table(df: pd.DataFrame) -> pd.DataFrame:
    """The rigidity-plasticity curve: per (dataset, k, generator, strategy) and plasticity, the gain
    on the person against the forgetting on the others (baselines: one point, plasticity NaN)."""
    s = summary_table(df)
    return s[CONFIG + ["n_units", "gain_mean", "gain_std", "forgetting_mean", "forgetting_std"]].sort_values(CONFIG, na_position="first").reset_index(drop=True)


def to_markdown(df: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub Markdown table (no extra dependency)."""
    def fmt(v) -> str:
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else f"{v:.{digits}f}"
        return str(v)

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body]) + "\n"


def _label(row) -> str:
    p = row["plasticity"]
    tail = "" if pd.isna(p) else f" p={p:g}"
    gen = "" if row["generator"] == "none" else f"+{row['generator']}"
    return f"{row['strategy']}{gen}{tail} k={row['k']}"


def plot_per_au(per_au: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Bars of per-AU F1 on the person: generic, and each adapted configuration (AU6, AU17 included)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    aus = sorted(per_au["au"].unique(), key=lambda a: int(a[2:]))
    configs = per_au.drop_duplicates(CONFIG)[CONFIG].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(aus) * (1 + len(configs)) / 2), 4))
    width = 0.8 / (len(configs) + 1)
    x = np.arange(len(aus))
    generic = per_au.groupby("au")["f1_base_mean"].mean().reindex(aus)
    ax.bar(x, generic.to_numpy(np.float64), width, label="generic", color="0.6")
    for i, cfg in configs.iterrows():
        sub = per_au[_nan_match(per_au, tuple(cfg))].set_index("au")["f1_mean"].reindex(aus)
        ax.bar(x + (i + 1) * width, sub.to_numpy(np.float64), width, label=_label(cfg))
    ax.set_xticks(x + 0.4 - width / 2, [a + ("*" if a in SHOWN_AUS else "") for a in aus], rotation=45)
    ax.set_ylabel("F1 on the person (mean over subjects, seeds)")
    ax.set_ylim(0, 1)
    ax.set_title("Per-AU F1, generic vs adapted (* = AU6 / AU17)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return _save(fig, path)


def plot_curve(curve: pd.DataFrame, path: str | os.PathLike) -> Path:
    """The rigidity-plasticity curve: x = forgetting on other subjects, y = gain on the person; one
    line per strategy through its plasticity values (baselines as single markers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for key, sub in curve.groupby(["dataset", "k", "generator", "strategy"], dropna=False):
        sub = sub.sort_values("plasticity")
        gen = "" if key[2] == "none" else f"+{key[2]}"
        lab = f"{key[3]}{gen} k={key[1]}" + (f" [{key[0]}]" if curve["dataset"].nunique() > 1 else "")
        line = ax.errorbar(sub["forgetting_mean"], sub["gain_mean"], xerr=sub["forgetting_std"], yerr=sub["gain_std"],
                           marker="o" if sub["plasticity"].notna().any() else "s", capsize=2, label=lab)  # fmt: skip
        for _, r in sub.iterrows():
            if pd.notna(r["plasticity"]):
                ax.annotate(f"{r['plasticity']:g}", (r["forgetting_mean"], r["gain_mean"]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points", color=line[0].get_color())  # fmt: skip
    ax.axhline(0, color="0.7", lw=0.8)
    ax.axvline(0, color="0.7", lw=0.8)
    ax.set_xlabel("forgetting: generic - adapted macro F1 on other subjects")
    ax.set_ylabel("gain: adapted - generic macro F1 on the person")
    ax.set_title("Rigidity-plasticity (labels: plasticity)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path) -> Path:
    import matplotlib.pyplot as plt

    p = Path(path)
    with atomic_path(p) as tmp:
        fig.savefig(tmp, format=p.suffix.lstrip(".") or "png", dpi=120)
    plt.close(fig)
    return p


def write_report(results: pd.DataFrame | str | os.PathLike, out_dir: str | os.PathLike, headline_au: str | None = "AU12") -> dict[str, Path]:
    """Write summary, per-AU, forgetting and curve tables (CSV + Markdown), the headline table of
    ``headline_au`` (when the results hold it), the two figures (PNG) and ``report.md`` gathering them
    into ``out_dir``. Returns name -> path."""
    df = results if isinstance(results, pd.DataFrame) else load_results(results)
    out = Path(out_dir)
    tables = {"summary": summary_table(df), "per_au": per_au_table(df), "forgetting": forgetting_table(df), "curve": curve_table(df)}
    if headline_au and headline_au in set(df["au"]):
        tables = {"headline": headline_table(df, headline_au), **tables}
    paths: dict[str, Path] = {}
    md = ["# Experiment report", "", f"{df['cell_id'].nunique()} cells, {df['subject'].nunique()} subjects, seeds {sorted(df['seed'].unique().tolist())}, "
          f"data sets {', '.join(sorted(df['dataset'].unique()))}. Mean (std) over subjects x seeds; gain = adapted - generic on the person, "
          "forgetting = generic - adapted on the fold's other test subjects.", ""]  # fmt: skip
    for name, tab in tables.items():
        write_table(tab, out / f"{name}.csv")
        text = to_markdown(tab)
        with atomic_path(out / f"{name}.md") as tmp:
            tmp.write_text(text)
        paths[f"{name}.csv"], paths[f"{name}.md"] = out / f"{name}.csv", out / f"{name}.md"
        md += [f"## {name.replace('_', ' ')}", "", text]
    paths["per_au_f1.png"] = plot_per_au(tables["per_au"], out / "per_au_f1.png")
    paths["rigidity_plasticity.png"] = plot_curve(tables["curve"], out / "rigidity_plasticity.png")
    md += ["![per-AU F1](per_au_f1.png)", "", "![rigidity-plasticity](rigidity_plasticity.png)", ""]
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join(md))
    paths["report.md"] = out / "report.md"
    return paths


def write_results_section(results: pd.DataFrame | str | os.PathLike, section: str, au: str = "AU12", command: str | None = None,
                          note: str = "", path: str | os.PathLike | None = None) -> Path:
    """Replace the block ``section`` of ``docs/results.md`` with the :func:`headline_table` of ``au``
    (:func:`experiments.results_doc.update_section`); ``command``: how to regenerate it."""
    df = results if isinstance(results, pd.DataFrame) else load_results(results)
    table = headline_table(df, au)
    cells = df["cell_id"].nunique()
    intro = (f"{cells} cells, data set(s) {', '.join(sorted(df['dataset'].unique()))}, {df['subject'].nunique()} subject(s); "
             f"each cell: mean ± std over subjects x seeds (generic base model on the same frames in brackets).")  # fmt: skip
    md = "\n\n".join(t for t in (intro, headline_markdown(table), note) if t)
    cmd = command or f"python -m experiments.report {results if not isinstance(results, pd.DataFrame) else 'RESULTS'} --au {au} --write-results {section}"
    return update_section(section, md, command=cmd, path=path or DEFAULT_PATH)


def main(argv: list[str] | None = None) -> int:
    """``python -m experiments.report RESULTS [--out DIR] [--au AU12] [--write-results SECTION]``."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m experiments.report", description="Report a results table; optionally write its headline block into docs/results.md.")
    ap.add_argument("results", help="results.parquet / results.csv, or a run folder")
    ap.add_argument("--out", help="folder for the report tables and plots (default: none)")
    ap.add_argument("--au", default="AU12", help="AU of the headline table (default AU12)")
    ap.add_argument("--write-results", metavar="SECTION", help="replace block SECTION of docs/results.md with the headline table")
    ap.add_argument("--command", help="the regenerate command the block names (default: this one)")
    ap.add_argument("--note", default="", help="a Markdown paragraph under the table")
    a = ap.parse_args(argv)
    try:
        df = load_results(a.results)
        print(headline_markdown(headline_table(df, a.au)))
        if a.out:
            write_report(df, a.out, a.au)
        if a.write_results:
            cmd = a.command or f"python -m experiments.report {a.results} --au {a.au} --write-results {a.write_results}"
            print(write_results_section(df, a.write_results, a.au, cmd, a.note))
    except (FewshotError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
