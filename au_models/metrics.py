"""AU metrics with unknown labels masked: per-AU F1 and AUC (occurrence), ICC(3,1) and MAE (intensity).

    table = au_metrics(occ_true, occ_prob, aus, int_true, int_pred, intensity_aus)
    summary = summarize(table)                      # macro F1 / AUC / ICC / MAE over the AUs
    by_subject = per_subject_metrics(subjects, ...)  # the same table per subject

Occurrence labels are 1 / 0 with -1 or NaN unknown (see :mod:`au_models.losses`); intensities are FACS 0..5
with NaN unknown. A metric that
is undefined for the available labels (AUC with one class, F1 with no positives and no predicted
positives) is NaN, never a silent 0 or 1.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

TABLE_COLUMNS = ["au", "n", "n_pos", "base_rate", "f1", "auc", "n_int", "icc", "mae"]


def f1_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Binary F1 of 0/1 arrays (entries with y_true < 0 ignored); NaN with no positives at all."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    keep = y_true >= 0
    t, p = y_true[keep] == 1, y_pred[keep] == 1
    tp = np.sum(t & p)
    denom = 2 * tp + np.sum(~t & p) + np.sum(t & ~p)
    return float(2 * tp / denom) if denom > 0 else float("nan")


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count half); y_true < 0 ignored; NaN if one class."""
    y_true, score = np.asarray(y_true), np.asarray(score, np.float64)
    keep = (y_true >= 0) & np.isfinite(score)
    t, s = y_true[keep] == 1, score[keep]
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = pd.Series(s).rank(method="average").to_numpy()
    return float((ranks[t].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def icc_3_1(ratings: np.ndarray) -> float:
    """ICC(3,1) of Shrout & Fleiss (1979): two-way mixed, consistency, single rater.

    ratings: (n_targets, k_raters). ICC(3,1) = (BMS - EMS) / (BMS + (k - 1) EMS). Rows with a NaN are
    dropped; NaN when fewer than 2 targets remain or the ratings have no variance.
    """
    y = np.asarray(ratings, np.float64)
    y = y[np.isfinite(y).all(1)]
    n, k = y.shape
    if n < 2 or k < 2:
        return float("nan")
    grand = y.mean()
    ss_rows = k * ((y.mean(1) - grand) ** 2).sum()
    ss_cols = n * ((y.mean(0) - grand) ** 2).sum()
    ss_err = ((y - grand) ** 2).sum() - ss_rows - ss_cols
    bms = ss_rows / (n - 1)
    ems = ss_err / ((n - 1) * (k - 1))
    denom = bms + (k - 1) * ems
    return float((bms - ems) / denom) if denom > 0 else float("nan")


def au_metrics(
    occ_true: np.ndarray,
    occ_prob: np.ndarray,
    aus: Sequence[str],
    int_true: np.ndarray | None = None,
    int_pred: np.ndarray | None = None,
    intensity_aus: Sequence[str] = (),
    threshold: float = 0.5,
) -> pd.DataFrame:
    """One row per AU (``aus`` order, then intensity-only AUs) with columns :data:`TABLE_COLUMNS`.

    occ_true: (N, A) int 1/0/-1; occ_prob: (N, A) P(present); int_true / int_pred: (N, I) FACS 0..5,
    NaN unknown. ``n`` counts known occurrence labels, ``n_int`` known intensities; ICC(3,1) treats
    label and prediction as two raters.
    """
    occ_true = np.asarray(occ_true).reshape(len(occ_true), -1)
    occ_prob = np.asarray(occ_prob, np.float64).reshape(len(occ_prob), -1)
    rows: dict[str, dict] = {}
    for j, au in enumerate(aus):
        t = occ_true[:, j]
        known = t >= 0
        rows[au] = dict(
            au=au, n=int(known.sum()), n_pos=int((t == 1).sum()),
            base_rate=float((t[known] == 1).mean()) if known.any() else float("nan"),
            f1=f1_score(t, (occ_prob[:, j] >= threshold).astype(int)), auc=roc_auc(t, occ_prob[:, j]),
            n_int=0, icc=float("nan"), mae=float("nan"),
        )  # fmt: skip
    if int_true is not None and len(intensity_aus):
        int_true = np.asarray(int_true, np.float64).reshape(len(int_true), -1)
        int_pred = np.asarray(int_pred, np.float64).reshape(len(int_pred), -1)
        for j, au in enumerate(intensity_aus):
            t, p = int_true[:, j], int_pred[:, j]
            known = np.isfinite(t) & np.isfinite(p)
            row = rows.setdefault(au, dict(au=au, n=0, n_pos=0, base_rate=float("nan"), f1=float("nan"), auc=float("nan")))
            row.update(
                n_int=int(known.sum()),
                icc=icc_3_1(np.stack([t[known], p[known]], 1)),
                mae=float(np.abs(t[known] - p[known]).mean()) if known.any() else float("nan"),
            )
    return pd.DataFrame(list(rows.values()), columns=TABLE_COLUMNS)


def summarize(table: pd.DataFrame, aus: Sequence[str] | None = None) -> dict[str, float]:
    """Macro averages over the protocol's AUs (default: every row): f1, auc, icc, mae (NaNs skipped)."""
    t = table if aus is None else table[table["au"].isin(list(aus))]
    return {f"macro_{c}": float(np.nanmean(t[c])) if t[c].notna().any() else float("nan") for c in ("f1", "auc", "icc", "mae")}


def per_subject_metrics(
    subjects: Sequence[str],
    occ_true: np.ndarray,
    occ_prob: np.ndarray,
    aus: Sequence[str],
    int_true: np.ndarray | None = None,
    int_pred: np.ndarray | None = None,
    intensity_aus: Sequence[str] = (),
    threshold: float = 0.5,
) -> pd.DataFrame:
    """:func:`au_metrics` per subject, stacked with a leading ``subject`` column."""
    subjects = np.asarray(subjects).astype(str)
    parts = []
    for s in sorted(set(subjects.tolist())):
        m = subjects == s
        tab = au_metrics(
            occ_true[m], occ_prob[m], aus,
            None if int_true is None else int_true[m], None if int_pred is None else int_pred[m], intensity_aus, threshold,
        )  # fmt: skip
        tab.insert(0, "subject", s)
        parts.append(tab)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["subject", *TABLE_COLUMNS])
