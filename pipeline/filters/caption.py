"""`caption`: minimum words and characters, maximum characters."""

from __future__ import annotations

from typing import Literal

import pyarrow as pa
from pydantic import Field

from pipeline.config import FilterSpec
from pipeline.filters.base import Policy, Verdict


class CaptionFilter(FilterSpec):
    type: Literal["caption"]
    min_words: int = Field(default=0, ge=0)
    min_chars: int = Field(default=0, ge=0)
    max_chars: int | None = Field(default=None, gt=0)


class CaptionPolicy(Policy, spec=CaptionFilter):
    def input_columns(self) -> list[str]:
        return [self.config.input.caption_column]

    def _reason(self, text: str | bytes | None) -> str | None:
        if text is None:
            return "caption is null"
        text = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        words, chars = len(text.split()), len(text.strip())
        if words < self.spec.min_words:
            return f"{words} word(s) < min_words {self.spec.min_words}"
        if chars < self.spec.min_chars:
            return f"{chars} character(s) < min_chars {self.spec.min_chars}"
        if self.spec.max_chars is not None and chars > self.spec.max_chars:
            return f"{chars} characters > max_chars {self.spec.max_chars}"
        return None

    def reads(self) -> list[str] | None:
        return [self.config.input.caption_column]

    def decide(self, table: pa.Table) -> Verdict:
        captions = table[self.config.input.caption_column].to_pylist()
        return Verdict.from_reasons([self._reason(c) for c in captions])
