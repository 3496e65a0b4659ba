"""`image_size`: minimum shorter side and maximum aspect ratio."""

from __future__ import annotations

import io
from typing import Literal

import pyarrow as pa
from PIL import Image
from pydantic import Field

from pipeline.config import FilterSpec
from pipeline.filters.base import Policy, Verdict
from pipeline.schema import IMAGE_BYTES, ORIGINAL_HEIGHT, ORIGINAL_WIDTH


class ImageSizeFilter(FilterSpec):
    type: Literal["image_size"]
    min_side: int = Field(default=0, ge=0)
    max_aspect_ratio: float | None = Field(default=None, ge=1.0)


def _header_size(data: bytes | None) -> tuple[int, int] | None:
    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:
        return None


class ImageSizePolicy(Policy, spec=ImageSizeFilter):
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
