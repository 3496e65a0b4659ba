"""What the report and the notebooks compute from a run's scores: retention at each
threshold, where the common recipes would cut, and rows from each band of scores."""

from __future__ import annotations

import numpy as np

from pipeline.filters.score_top_fraction import datacomp_threshold

LAION_B32 = 0.28
DATACOMP_FRACTION = 0.3


def retention(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Fraction of scored rows kept at each threshold (rows without a score are never kept)."""
    valid = np.sort(scores[~np.isnan(scores)])
    if not len(valid):
        return np.zeros(len(thresholds))
    return 1.0 - np.searchsorted(valid, thresholds, side="left") / len(valid)


def recipe_marks(scores: np.ndarray) -> dict[str, float]:
    """Where the common recipes would cut this distribution."""
    marks = {f"LAION B/32 >= {LAION_B32}": LAION_B32}
    top = datacomp_threshold(scores, DATACOMP_FRACTION)
    if top is not None:
        marks[f"DataComp top {DATACOMP_FRACTION:.0%} (>= {top:.3f})"] = top
    return marks


def score_bands(
    scores: np.ndarray, threshold: float, *, per_band: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """Row indices from the bottom, around `threshold`, and the top of the scores."""
    rng = np.random.default_rng(seed)
    valid = np.flatnonzero(~np.isnan(scores))
    order = valid[np.argsort(scores[valid])]
    if not len(order):
        return {}
    near = order[np.argsort(np.abs(scores[order] - threshold))][: per_band * 3]
    pick = lambda rows: np.sort(rng.choice(rows, min(per_band, len(rows)), replace=False))  # noqa: E731
    return {
        "bottom": order[: max(per_band, 1)][:per_band],
        f"around {threshold:.3f}": pick(near),
        "top": order[::-1][:per_band],
    }
