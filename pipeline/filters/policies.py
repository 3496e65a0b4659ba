"""The row policies: status, caption, score threshold, image size, language."""

from __future__ import annotations

import io
from functools import cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from pipeline.filters.base import Policy, Verdict
from pipeline.schema import IMAGE_BYTES, ORIGINAL_HEIGHT, ORIGINAL_WIDTH, score_column


class StatusPolicy(Policy):
    """Drop rows whose upstream or decode status is not allowed (by default: anything not ok)."""

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


class CaptionPolicy(Policy):
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

    def decide(self, table: pa.Table) -> Verdict:
        captions = table[self.config.input.caption_column].to_pylist()
        return Verdict.from_reasons([self._reason(c) for c in captions])


class ScoreThresholdPolicy(Policy):
    """LAION's rule: keep `<alias>_score >= value`; rows without a score are rejected."""

    def decide(self, table: pa.Table) -> Verdict:
        scores = table[score_column(self.spec.alias)].to_pylist()
        value = self.spec.value
        return Verdict.from_reasons(
            [
                "no score" if s is None else (None if s >= value else f"score {s:.4f} < {value}")
                for s in scores
            ]
        )


def _header_size(data: bytes | None) -> tuple[int, int] | None:
    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:
        return None


class ImageSizePolicy(Policy):
    """Minimum shorter side and maximum aspect ratio, from original_width/height when present."""

    def needs_image_bytes(self) -> bool:
        return True

    def _sizes(self, table: pa.Table) -> list[tuple[int, int] | None]:
        names = set(table.column_names)
        if {ORIGINAL_WIDTH, ORIGINAL_HEIGHT} <= names:
            widths = table[ORIGINAL_WIDTH].to_pylist()
            heights = table[ORIGINAL_HEIGHT].to_pylist()
        else:
            widths = heights = [None] * table.num_rows
        images = table[IMAGE_BYTES].to_pylist() if IMAGE_BYTES in names else [None] * table.num_rows
        return [
            (w, h) if w and h else _header_size(data)
            for w, h, data in zip(widths, heights, images, strict=True)
        ]

    def _reason(self, size: tuple[int, int] | None) -> str | None:
        if size is None:
            return "image size unknown"
        short, long = min(size), max(size)
        ratio = long / short if short else float("inf")
        if short < self.spec.min_side:
            return f"shorter side {short} < min_side {self.spec.min_side}"
        if self.spec.max_aspect_ratio is not None and ratio > self.spec.max_aspect_ratio:
            return f"aspect ratio {ratio:.2f} > {self.spec.max_aspect_ratio}"
        return None

    def decide(self, table: pa.Table) -> Verdict:
        return Verdict.from_reasons([self._reason(size) for size in self._sizes(table)])


@cache
def _language_detector() -> Any:
    from lingua import LanguageDetectorBuilder

    return LanguageDetectorBuilder.from_all_languages().build()


class LanguagePolicy(Policy):
    """Keep captions detected (offline, by lingua) as one of the listed languages."""

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


def scores_of(table: pa.Table, alias: str) -> np.ndarray:
    values = pc.fill_null(table[score_column(alias)], np.nan)
    return np.asarray(values.to_numpy(zero_copy_only=False), np.float64)
