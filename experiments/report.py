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
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from fewshot.errors import InputError
from fewshot.io import atomic_path, write_table

CONFIG = ["dataset", "k", "generator", "strategy", "plasticity"]
UNIT = ["fold", "subject", "seed"]
RESULT_COLUMNS = [*CONFIG, *UNIT, "cell_id", "au", "f1", "f1_base", "f1_other", "f1_other_base", "tp", "fp", "fn", "tp_base", "fp_base", "fn_base"]
SHOWN_AUS = ("AU06", "AU17")  # appearance-driven AUs the synthesis conditions explicitly: always in the per-AU table


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


def unit_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration x unit: macro F1 (adapted / generic) on the person and on the others."""
    cols = {"f1": "f1", "f1_base": "f1_base", "f1_other": "f1_other", "f1_other_base": "f1_other_base"}
    g = df.groupby(CONFIG + UNIT, dropna=False)
    out = g[list(cols)].mean().reset_index()  # pandas mean skips NaN: macro over AUs with a defined F1
    out["gain"] = out["f1"] - out["f1_base"]
    out["forgetting"] = out["f1_other_base"] - out["f1_other"]
    return out


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: n_units, mean and std over subjects x seeds of macro F1 (person, generic,
    gain, others, forgetting), and the pooled F1 over every unit's frames."""
    units = unit_table(df)
    g = units.groupby(CONFIG, dropna=False)
    out = g.size().rename("n_units").to_frame()
    for c in ("f1", "f1_base", "gain", "f1_other", "forgetting"):
        out[f"{c}_mean"] = g[c].mean()
        out[f"{c}_std"] = g[c].std(ddof=0)
    pooled = df.groupby(CONFIG, dropna=False)[["tp", "fp", "fn", "tp_base", "fp_base", "fn_base"]].sum()
    out["pooled_f1"] = _f1(pooled["tp"], pooled["fp"], pooled["fn"])
    out["pooled_f1_base"] = _f1(pooled["tp_base"], pooled["fp_base"], pooled["fn_base"])
    return out.reset_index()


def per_au_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per configuration x AU: generic vs adapted F1 on the person (mean, std over units), the change,
    and on the other subjects; AU6 and AU17 always appear (NaN where the data set does not code them)."""
    g = df.groupby(CONFIG + ["au"], dropna=False)
    out = g.size().rename("n_units").to_frame()
    for c in ("f1_base", "f1", "f1_other_base", "f1_other"):
        out[f"{c}_mean"] = g[c].mean()
    out["f1_std"] = g["f1"].std(ddof=0)
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


def write_report(results: pd.DataFrame | str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write summary, per-AU, forgetting and curve tables (CSV + Markdown), the two figures (PNG) and
    ``report.md`` gathering them into ``out_dir``. Returns name -> path."""
    df = results if isinstance(results, pd.DataFrame) else load_results(results)
    out = Path(out_dir)
    tables = {"summary": summary_table(df), "per_au": per_au_table(df), "forgetting": forgetting_table(df), "curve": curve_table(df)}
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
