"""`score_top_fraction`: DataComp's rule, the top fraction of the whole pool by score."""

from __future__ import annotations

import math
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

    def fit(self, pool: Any) -> None:
        chunks = [
            scores_of(batch, self.spec.alias)
            for batch in pool.iter_batches(batch_format="pyarrow", batch_size=None)
        ]
        scores = np.concatenate(chunks) if chunks else np.zeros(0)
        self.pool_rows = int((~np.isnan(scores)).sum())
        self.threshold = datacomp_threshold(scores, self.spec.fraction)

    def state(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "pool_rows": self.pool_rows}

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
