"""A filter as a user adds one: this file alone, its spec beside its policy."""

from __future__ import annotations

from typing import Literal

import pyarrow as pa
from pydantic import Field

from pipeline.config import FilterSpec
from pipeline.filters.base import Policy, Verdict


class KeywordFilter(FilterSpec):
    type: Literal["keyword"]
    word: str = Field(min_length=1, description="Reject captions that contain this word.")


class KeywordPolicy(Policy, spec=KeywordFilter):
    def input_columns(self) -> list[str]:
        return [self.config.input.caption_column]

    def decide(self, table: pa.Table) -> Verdict:
        captions = table[self.config.input.caption_column].to_pylist()
        return Verdict.from_reasons(
            [
                f"caption says {self.spec.word!r}" if self.spec.word in (c or "") else None
                for c in captions
            ]
        )
