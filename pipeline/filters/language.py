"""`language`: keep captions detected (offline, by lingua) as one of the listed languages."""

from __future__ import annotations

from functools import cache
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field

from pipeline.config import FilterSpec
from pipeline.filters.base import Policy, Verdict


class LanguageFilter(FilterSpec):
    type: Literal["language"]
    languages: list[str] = Field(min_length=1, description="ISO 639-1 codes, e.g. [en, de].")
    min_confidence: float = Field(default=0.0, ge=0.0, le=1.0)


@cache
def _language_detector() -> Any:
    from lingua import LanguageDetectorBuilder

    return LanguageDetectorBuilder.from_all_languages().build()


class LanguagePolicy(Policy, spec=LanguageFilter):
    """Keep captions detected (offline, by lingua) as one of the listed languages."""

    def reads(self) -> list[str] | None:
        return [self.config.input.caption_column]

    def decide(self, table: pa.Table) -> Verdict:
        wanted = {code.lower() for code in self.spec.languages}
        detector = _language_detector()
        texts = [
            t if isinstance(t, str) else ""
            for t in table[self.config.input.caption_column].to_pylist()
        ]
        reasons: list[str | None] = []
        for text, values in zip(
            texts, detector.compute_language_confidence_values_in_parallel(texts), strict=True
        ):
            if not text.strip() or not values:
                reasons.append("no language detected")
                continue
            best = values[0]
            code = best.language.iso_code_639_1.name.lower()
            if code in wanted and best.value >= self.spec.min_confidence:
                reasons.append(None)
            elif code in wanted:
                reasons.append(
                    f"language {code} at confidence {best.value:.2f} < {self.spec.min_confidence}"
                )
            else:
                reasons.append(f"language {code}")
        return Verdict.from_reasons(reasons)
