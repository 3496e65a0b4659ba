"""`score_threshold`: LAION's rule, a fixed cut on a model's score."""

from __future__ import annotations

from typing import Literal

import pyarrow as pa
from pydantic import Field

from pipeline.config import FilterSpec
from pipeline.filters.base import Policy, Verdict
from pipeline.schema import score_column


class ScoreThresholdFilter(FilterSpec):
    type: Literal["score_threshold"]
    alias: str = "clip"
    value: float = Field(ge=-1.0, le=1.0)


class ScoreThresholdPolicy(Policy, spec=ScoreThresholdFilter):
    """LAION's rule: keep `<alias>_score >= value`; rows without a score are rejected."""

    def reads(self) -> list[str] | None:
        return [score_column(self.spec.alias)]

    def decide(self, table: pa.Table) -> Verdict:
        scores = table[score_column(self.spec.alias)].to_pylist()
        value = self.spec.value
        return Verdict.from_reasons(
            [
                "no score" if s is None else (None if s >= value else f"score {s:.4f} < {value}")
                for s in scores
            ]
        )
