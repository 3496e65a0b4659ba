"""`score_threshold`: a fixed cut on a score column; LAION's rule on a model's score."""

from __future__ import annotations

import math
from typing import Literal

import pyarrow as pa
from pydantic import Field, model_validator

from pipeline.filters.base import Policy, ScoreColumnSpec, Verdict, values_of


class ScoreThresholdFilter(ScoreColumnSpec):
    type: Literal["score_threshold"]
    value: float | None = Field(
        default=None, ge=-1.0, le=1.0, description="LAION's rule: keep score >= value."
    )
    min: float | None = Field(default=None, description="Keep rows whose column is >= min.")
    max: float | None = Field(default=None, description="Keep rows whose column is < max.")

    @model_validator(mode="after")
    def _one_cut(self) -> ScoreThresholdFilter:
        if self.value is None and self.min is None and self.max is None:
            raise ValueError("a score_threshold needs value, min or max")
        if self.value is not None and self.min is not None:
            raise ValueError("give value or min, not both (value is LAION's name for min)")
        return self


class ScoreThresholdPolicy(Policy, spec=ScoreThresholdFilter):
    """Keep `min <= column < max` (`value` is `min`); rows without a value are rejected."""

    def reads(self) -> list[str] | None:
        return [self.spec.scored]

    def _reason(self, value: float) -> str | None:
        spec = self.spec
        if math.isnan(value):
            return "no score" if spec.column is None else f"no {spec.column}"
        low = spec.min if spec.value is None else spec.value
        what = "score" if spec.column is None else spec.column
        if low is not None and value < low:
            return f"{what} {value:.4f} < {low}"
        if spec.max is not None and value >= spec.max:
            return f"{what} {value:.4f} >= max {spec.max}"
        return None

    def decide(self, table: pa.Table) -> Verdict:
        return Verdict.from_reasons([self._reason(v) for v in values_of(table, self.spec.scored)])
