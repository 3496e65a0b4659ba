"""DataComp's cut found from histograms and one bin's scores equals sorting every score."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.filters import score_top_fraction as top
from pipeline.filters.score_top_fraction import (
    _bins,
    _merged,
    _within,
    covering_range,
    datacomp_threshold,
    exact_cut,
)


def passes(scores: np.ndarray, collected: list[int]):
    """The counting and collecting passes over `scores` held here, split into blocks as the
    pool's would be; `collected` records how many scores each collecting pass returned."""
    blocks = np.array_split(scores, 7)

    def count(path, low, width):
        return sum(
            np.bincount(_bins(_within(b, path), low, width), minlength=top.BINS) for b in blocks
        )

    def collect(path):
        parts = [np.unique(_within(b, path), return_counts=True) for b in blocks]
        collected.append(sum(len(v) for v, _ in parts))
        return _merged(parts)

    return count, collect


def pools(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    kind = seed % 4
    n = int(rng.integers(1, 5000))
    if kind == 0:  # web-like: most scores in a narrow band, as float32 as stored
        scores = rng.normal(0.28, 0.04, n).astype(np.float32).astype(np.float64)
    elif kind == 1:  # heavy ties
        scores = rng.choice([0.1, 0.2, 0.25, 0.3], n)
    elif kind == 2:  # the ends of the range and past them by rounding
        scores = rng.choice([-1.0, 1.0, 1.0000001, -1.0000001, 0.0], n)
    else:  # one value only
        scores = np.full(n, 0.31234)
    scores[rng.random(n) < 0.05] = np.nan
    return scores


@pytest.mark.parametrize("seed", range(24))
@pytest.mark.parametrize("fraction", [0.3, 0.01, 1.0])
def test_the_cut_from_histograms_is_the_sorted_rule(monkeypatch, seed, fraction):
    monkeypatch.setattr(top, "EXACT_ROWS", 5)  # split bins again and again
    scores = pools(seed)
    collected: list[int] = []
    cut, total = exact_cut(*passes(scores, collected), fraction)
    assert total == int((~np.isnan(scores)).sum())
    assert cut == datacomp_threshold(scores, fraction)
    assert len(collected) == 1


def test_the_driver_sorts_only_the_cuts_bin():
    scores = np.random.default_rng(7).normal(0.3, 0.05, 200_000)
    collected: list[int] = []
    cut, _ = exact_cut(*passes(scores, collected), 0.3)
    assert cut == datacomp_threshold(scores, 0.3)
    assert collected[0] < 1_000, "one bin of 4,096 holds a few hundred of 200,000 scores"


def test_no_scores_no_cut():
    assert exact_cut(*passes(np.array([np.nan, np.nan]), []), 0.3) == (None, 0)


@pytest.mark.parametrize("seed", range(8))
def test_a_column_of_any_range_is_cut_by_the_same_rule(monkeypatch, seed):
    """A head's column (an aesthetic score from 1 to 10, ties at its top) starts from its
    own range, found by a pass over the blocks, instead of the cosine's."""
    monkeypatch.setattr(top, "EXACT_ROWS", 5)
    rng = np.random.default_rng(seed)
    scores = np.round(rng.normal(5.5, 1.5, 3000), 1 + seed % 3).clip(1, 10)
    scores[rng.random(len(scores)) < 0.05] = np.nan
    blocks = np.array_split(scores, 7)
    first = covering_range([np.nanmin(b) for b in blocks], [np.nanmax(b) for b in blocks])
    for fraction in (0.3, 0.01, 1.0):
        cut, _ = exact_cut(*passes(scores, []), fraction, first=first)
        assert cut == datacomp_threshold(scores, fraction)
    assert covering_range([np.nan], [np.nan]) is None
