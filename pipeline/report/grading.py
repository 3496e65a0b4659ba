"""Grading scores against ground truth: ROC AUC and the precision/recall of a kept set."""

from __future__ import annotations

from typing import Any

import numpy as np


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a random positive outranks a random negative (ties count half).

    Rows without a score (NaN) rank below every scored row: they would be dropped.
    """
    values = np.where(np.isnan(scores), -np.inf, scores.astype(np.float64))
    positive = positive.astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        raise ValueError("ROC AUC needs both positive and negative rows")
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), np.float64)
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def kept_set_quality(kept: np.ndarray, positive: np.ndarray) -> dict[str, Any]:
    kept, positive = kept.astype(bool), positive.astype(bool)
    true_kept = int((kept & positive).sum())
    return {
        "kept": int(kept.sum()),
        "precision": true_kept / int(kept.sum()) if kept.any() else 0.0,
        "recall": true_kept / int(positive.sum()) if positive.any() else 0.0,
    }


def best_threshold(scores: np.ndarray, positive: np.ndarray) -> float:
    """The score cut with the best F1 on labelled data (used to pick the demo's threshold)."""
    values = np.where(np.isnan(scores), -np.inf, scores)
    best, best_f1 = 0.0, -1.0
    for cut in np.unique(values[np.isfinite(values)]):
        quality = kept_set_quality(values >= cut, positive)
        p, r = quality["precision"], quality["recall"]
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        if f1 > best_f1:
            best, best_f1 = float(cut), f1
    return best
