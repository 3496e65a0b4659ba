"""`score_top_fraction`: DataComp's rule, the top fraction of the whole pool by score.

The cut is the score at index floor(n x f) of the pool's scores sorted descending,
found exactly without holding every score in one process: Ray tasks count the
scores into a histogram, the driver finds the bin that holds the cut and how many
scores lie above it, and only that bin's scores come back to be sorted. A bin
with too many of them is split by another counting pass over it alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from pipeline.config import FilterSpec, WinnowConfig
from pipeline.filters.base import PoolPolicy, Verdict, scores_of
from pipeline.schema import score_column


class ScoreTopFractionFilter(FilterSpec):
    type: Literal["score_top_fraction"]
    alias: str = "clip"
    fraction: float = Field(gt=0.0, le=1.0)


def datacomp_threshold(scores: np.ndarray, fraction: float) -> float | None:
    """The score at index floor(n * fraction) of the scores sorted descending (NaN ignored)."""
    ranked = np.sort(scores[~np.isnan(scores)])[::-1]
    if not len(ranked):
        return None
    return float(ranked[min(math.floor(len(ranked) * fraction), len(ranked) - 1)])


# Bins a counting pass splits its range into: the driver adds one such histogram per block.
BINS = 4096
# Scores of the cut's bin the driver sorts at most; a bin with more is split again.
EXACT_ROWS = 1 << 20
# The first pass's range: cosine scores, with room for rounding past +-1.
FIRST_RANGE = (-1.0 - 1e-6, 1.0 + 1e-6)

# A bin chosen at one level of the search: (the level's low edge, its bin width, the bin).
Level = tuple[float, float, int]


def _bins(values: np.ndarray, low: float, width: float) -> np.ndarray:
    """Each value's bin at a level; values past either end count in the end bins."""
    return np.clip(np.floor((values - low) / width), 0, BINS - 1).astype(np.int64)


def _within(values: np.ndarray, path: list[Level]) -> np.ndarray:
    """The values that fell in every bin of `path`, as each level's own binning put them."""
    values = values[~np.isnan(values)]
    for low, width, chosen in path:
        values = values[_bins(values, low, width) == chosen]
    return values


def _counts(
    batch: pa.Table, *, alias: str, path: list[Level], low: float, width: float
) -> pa.Table:
    """Ray Data stage: a block's histogram of the scores within `path`, at the next level."""
    values = _within(scores_of(batch, alias), path)
    counts = np.bincount(_bins(values, low, width), minlength=BINS)
    return pa.table({"counts": [counts.tolist()]})


def _values(batch: pa.Table, *, alias: str, path: list[Level]) -> pa.Table:
    """Ray Data stage: the distinct scores within `path`, each with how many rows have it."""
    values, counts = np.unique(_within(scores_of(batch, alias), path), return_counts=True)
    return pa.table({"value": values, "count": counts})


def _merged(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values and their counts over every part."""
    if not parts:
        return np.zeros(0), np.zeros(0, np.int64)
    values = np.concatenate([v for v, _ in parts])
    counts = np.concatenate([c for _, c in parts])
    distinct, where = np.unique(values, return_inverse=True)
    return distinct, np.bincount(where, weights=counts).astype(np.int64)


def exact_cut(
    count: Callable[[list[Level], float, float], np.ndarray],
    collect: Callable[[list[Level]], tuple[np.ndarray, np.ndarray]],
    fraction: float,
) -> tuple[float | None, int]:
    """DataComp's cut and the number of scores, from counting passes (`count`: the histogram
    of the scores within a path at a new level) and one pass that collects the cut's bin
    (`collect`: its distinct scores and their counts, so that ties take no more room)."""
    path: list[Level] = []
    low, high = FIRST_RANGE
    counts = count(path, low, (high - low) / BINS)
    total = int(counts.sum())
    if not total:
        return None, 0
    rank = min(math.floor(total * fraction), total - 1)  # in descending order
    above = 0  # scores above the current range
    while True:
        width = (high - low) / BINS
        over = np.cumsum(counts[::-1])[::-1] - counts  # scores in the bins above each bin
        chosen = int(np.flatnonzero(above + over <= rank).min())
        above += int(over[chosen])
        path.append((low, width, chosen))
        low, high = low + chosen * width, low + (chosen + 1) * width
        if counts[chosen] <= EXACT_ROWS or np.nextafter(low, high) >= high:
            values, times = collect(path)
            order = np.argsort(values)[::-1]
            reach = np.cumsum(times[order])  # rows down to each distinct value, from the top
            return float(values[order][np.searchsorted(reach, rank - above, side="right")]), total
        counts = count(path, low, (high - low) / BINS)


class TopFractionPolicy(PoolPolicy, spec=ScoreTopFractionFilter):
    """DataComp's rule: over all scored rows, keep those scoring >= the score at floor(n * f)."""

    fit_on_survivors: ClassVar[bool] = False

    def __init__(self, spec: Any, config: WinnowConfig) -> None:
        super().__init__(spec, config)
        self.threshold: float | None = None
        self.pool_rows = 0

    @property
    def columns(self) -> list[str]:
        return [score_column(self.spec.alias)]

    def fit(self, pool: Any, *, folder: str) -> None:
        alias = self.spec.alias

        def count(path: list[Level], low: float, width: float) -> np.ndarray:
            stage = partial(_counts, alias=alias, path=path, low=low, width=width)
            counts = np.zeros(BINS, np.int64)
            for batch in pool.map_batches(stage, batch_format="pyarrow").iter_batches(
                batch_format="pyarrow", batch_size=None
            ):
                for row in batch["counts"].to_pylist():
                    counts += np.asarray(row, np.int64)
            return counts

        def collect(path: list[Level]) -> tuple[np.ndarray, np.ndarray]:
            stage = partial(_values, alias=alias, path=path)
            parts = [
                (batch["value"].to_numpy(), batch["count"].to_numpy())
                for batch in pool.map_batches(stage, batch_format="pyarrow").iter_batches(
                    batch_format="pyarrow", batch_size=None
                )
            ]
            return _merged(parts)

        self.threshold, self.pool_rows = exact_cut(count, collect, self.spec.fraction)

    def state(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "pool_rows": self.pool_rows}

    def reads(self) -> list[str] | None:
        return self.columns

    def decide(self, table: pa.Table) -> Verdict:
        scores = scores_of(table, self.spec.alias)
        cut = self.threshold
        return Verdict.from_reasons(
            [
                "no score"
                if math.isnan(s)
                else (
                    None
                    if cut is not None and s >= cut
                    else f"score {s:.4f} below top-{self.spec.fraction:g} threshold {cut:.4f}"
                )
                for s in scores
            ]
        )
