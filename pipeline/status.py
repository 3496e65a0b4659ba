"""Per-row processing status: every input row ends in the output with one."""

from __future__ import annotations

from enum import Enum


class RowStatus(str, Enum):
    """Why a row has, or lacks, a score. Only OK rows have every embedding and a score."""

    OK = "ok"
    UPSTREAM_FAILED = "upstream_failed"  # img2dataset could not download it
    MISSING_IMAGE = "missing_image"  # null image bytes
    DECODE_ERROR = "decode_error"  # empty, corrupt, truncated or non-image bytes
    IMAGE_TOO_LARGE = "image_too_large"  # over images.max_pixels (decompression bomb guard)
    MISSING_CAPTION = "missing_caption"  # null caption
    EMPTY_CAPTION = "empty_caption"  # empty or whitespace-only caption
    INVALID_CAPTION = "invalid_caption"  # caption bytes are not UTF-8

    def __str__(self) -> str:
        return self.value


IMAGE_PROBLEMS = {
    RowStatus.UPSTREAM_FAILED,
    RowStatus.MISSING_IMAGE,
    RowStatus.DECODE_ERROR,
    RowStatus.IMAGE_TOO_LARGE,
}
