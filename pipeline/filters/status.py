"""`status`: keep the rows whose status is allowed (by default: only those scored).

The run puts it first unless the config places it."""

from __future__ import annotations

from typing import Literal

import pyarrow as pa
from pydantic import Field

from pipeline.config import FilterSpec
from pipeline.filters.base import Policy, Verdict


class StatusFilter(FilterSpec):
    type: Literal["status"]
    allow: list[str] = Field(default_factory=lambda: ["ok"], description="Row statuses to keep.")


class StatusPolicy(Policy, spec=StatusFilter):
    """Drop rows whose upstream or decode status is not allowed (by default: anything not ok)."""

    def reads(self) -> list[str] | None:
        return [self.config.output.status_column, self.config.output.error_column]

    def decide(self, table: pa.Table) -> Verdict:
        status = table[self.config.output.status_column].to_pylist()
        error = table[self.config.output.error_column].to_pylist()
        allowed = set(self.spec.allow)
        return Verdict.from_reasons(
            [
                None if s in allowed else f"status {s}: {e}"
                for s, e in zip(status, error, strict=True)
            ]
        )
