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

from pipeline.config import WinnowConfig
from pipeline.filters.base import PoolPolicy, ScoreColumnSpec, Verdict, values_of


class ScoreTopFractionFilter(ScoreColumnSpec):
    type: Literal["score_top_fraction"]
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
# The first pass's range for a model's score: cosines, with room for rounding past +-1.
# Another column's range is found by a pass of its own.
COSINE_RANGE = (-1.0 - 1e-6, 1.0 + 1e-6)

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
    batch: pa.Table, *, column: str, path: list[Level], low: float, width: float
) -> pa.Table:
    """Ray Data stage: a block's histogram of the scores within `path`, at the next level."""
    values = _within(values_of(batch, column), path)
    counts = np.bincount(_bins(values, low, width), minlength=BINS)
    return pa.table({"counts": [counts.tolist()]})


def _values(batch: pa.Table, *, column: str, path: list[Level]) -> pa.Table:
    """Ray Data stage: the distinct scores within `path`, each with how many rows have it."""
    values, counts = np.unique(_within(values_of(batch, column), path), return_counts=True)
    return pa.table({"value": values, "count": counts})


def _merged(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values and their counts over every part."""
    if not parts:
        return np.zeros(0), np.zeros(0, np.int64)
    values = np.concatenate([v for v, _ in parts])
    counts = np.concatenate([c for _, c in parts])
    distinct, where = np.unique(values, return_inverse=True)
    return distinct, np.bincount(where, weights=counts).astype(np.int64)


def _range(batch: pa.Table, *, column: str) -> pa.Table:
    """Ray Data stage: a block's smallest and largest value (NaN for none)."""
    values = values_of(batch, column)
    values = values[~np.isnan(values)]
    low, high = (values.min(), values.max()) if len(values) else (np.nan, np.nan)
    return pa.table({"low": [float(low)], "high": [float(high)]})


def exact_cut(
    count: Callable[[list[Level], float, float], np.ndarray],
    collect: Callable[[list[Level]], tuple[np.ndarray, np.ndarray]],
    fraction: float,
    *,
    first: tuple[float, float] = COSINE_RANGE,
) -> tuple[float | None, int]:
    """DataComp's cut and the number of scores, from counting passes (`count`: the histogram
    of the scores within a path at a new level) and one pass that collects the cut's bin
    (`collect`: its distinct scores and their counts, so that ties take no more room);
    `first`: a range that holds every score."""
    path: list[Level] = []
    low, high = first
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


def covering_range(lows: list[float], highs: list[float]) -> tuple[float, float] | None:
    """A first range that holds every value, from each block's lowest and highest (NaN
    for a block without values); None if no block has one."""
    found = [(low, high) for low, high in zip(lows, highs, strict=True) if not np.isnan(low)]
    if not found:
        return None
    low, high = min(f[0] for f in found), max(f[1] for f in found)
    # Widened so that the largest value lies inside the last bin, not on its edge.
    margin = max(abs(low), abs(high), 1.0) * 1e-6
    return float(low - margin), float(high + margin)


def _full_range(pool: Any, column: str) -> tuple[float, float] | None:
    stage = partial(_range, column=column)
    lows, highs = [], []
    for batch in pool.map_batches(stage, batch_format="pyarrow").iter_batches(
        batch_format="pyarrow", batch_size=None
    ):
        lows += batch["low"].to_pylist()
        highs += batch["high"].to_pylist()
    return covering_range(lows, highs)


class TopFractionPolicy(PoolPolicy, spec=ScoreTopFractionFilter):
    """DataComp's rule: over all scored rows, keep those scoring >= the score at floor(n * f)."""

    fit_on_survivors: ClassVar[bool] = False

    def __init__(self, spec: Any, config: WinnowConfig) -> None:
        super().__init__(spec, config)
        self.threshold: float | None = None
        self.pool_rows = 0

    @property
    def columns(self) -> list[str]:
        return [self.spec.scored]

    def fit(self, pool: Any, *, folder: str) -> None:
        column = self.spec.scored

        def count(path: list[Level], low: float, width: float) -> np.ndarray:
            stage = partial(_counts, column=column, path=path, low=low, width=width)
            counts = np.zeros(BINS, np.int64)
            for batch in pool.map_batches(stage, batch_format="pyarrow").iter_batches(
                batch_format="pyarrow", batch_size=None
            ):
                for row in batch["counts"].to_pylist():
                    counts += np.asarray(row, np.int64)
            return counts

        def collect(path: list[Level]) -> tuple[np.ndarray, np.ndarray]:
            stage = partial(_values, column=column, path=path)
            parts = [
                (batch["value"].to_numpy(), batch["count"].to_numpy())
                for batch in pool.map_batches(stage, batch_format="pyarrow").iter_batches(
                    batch_format="pyarrow", batch_size=None
                )
            ]
            return _merged(parts)

        first = COSINE_RANGE if self.spec.column is None else _full_range(pool, column)
        if first is None:
            self.threshold, self.pool_rows = None, 0
            return
        self.threshold, self.pool_rows = exact_cut(count, collect, self.spec.fraction, first=first)

    def state(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "pool_rows": self.pool_rows}

    def reads(self) -> list[str] | None:
        return self.columns

    def decide(self, table: pa.Table) -> Verdict:
        scores = values_of(table, self.spec.scored)
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
