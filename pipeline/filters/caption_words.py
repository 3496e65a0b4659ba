"""`caption_words`: keep captions that name at least one word or phrase of a list.

DataComp's text-based baseline keeps the English captions that name an ImageNet
class; `word_list: imagenet1k` reads those 1,000 class names from open_clip's
own zero-shot metadata. Matching is by whole words, case-insensitive: "hen"
matches "a hen crossing" and not "then".
"""

from __future__ import annotations

import re
from functools import cache
from typing import Literal

import pyarrow as pa
from pydantic import Field, model_validator

from pipeline.config import FilterSpec
from pipeline.filters.base import Policy, Verdict

WORD = re.compile(r"[0-9a-z]+")


class CaptionWordsFilter(FilterSpec):
    type: Literal["caption_words"]
    words: list[str] = Field(default_factory=list, description="Words or phrases to look for.")
    word_list: Literal["imagenet1k"] | None = Field(
        default=None, description="A ready list added to `words`: the ImageNet-1k class names."
    )

    @model_validator(mode="after")
    def _some_words(self) -> CaptionWordsFilter:
        if not self.words and self.word_list is None:
            raise ValueError("caption_words needs words, a word_list, or both")
        return self


def _tokens(text: str) -> tuple[str, ...]:
    return tuple(WORD.findall(text.lower()))


@cache
def word_list(name: str) -> tuple[str, ...]:
    """A ready list by name, from the library that defines it."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return tuple(IMAGENET_CLASSNAMES) if name == "imagenet1k" else ()


@cache
def _phrase_set(
    words: tuple[str, ...], listed: str | None
) -> tuple[frozenset[tuple[str, ...]], int]:
    """The phrases as word tuples, and the longest one's length: built once per process."""
    every = [*words, *(word_list(listed) if listed else ())]
    phrases = frozenset(t for t in map(_tokens, every) if t)
    return phrases, max(map(len, phrases), default=0)


class CaptionWordsPolicy(Policy, spec=CaptionWordsFilter):
    def _phrases(self) -> tuple[frozenset[tuple[str, ...]], int]:
        return _phrase_set(tuple(self.spec.words), self.spec.word_list)

    def input_columns(self) -> list[str]:
        return [self.config.input.caption_column]

    def reads(self) -> list[str] | None:
        return [self.config.input.caption_column]

    def _names_one(self, text: str | bytes | None) -> bool:
        if text is None:
            return False
        text = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        phrases, longest = self._phrases()
        tokens = _tokens(text)
        return any(
            tokens[start : start + size] in phrases
            for size in range(1, longest + 1)
            for start in range(len(tokens) - size + 1)
        )

    def decide(self, table: pa.Table) -> Verdict:
        captions = table[self.config.input.caption_column].to_pylist()
        missed = f"names none of the {len(self._phrases()[0])} listed words"
        return Verdict.from_reasons([None if self._names_one(c) else missed for c in captions])
