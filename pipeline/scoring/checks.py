"""Row checks and decoding: each row's status, and the images decoded for the image tower.

Bad rows get a status and a reason and never fail the batch; the rows left are
decoded, in one batch where a batched JPEG decoder takes them, else with PIL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.config import ImagesConfig
from pipeline.images.decode import Decoded, decode_image, over_limit
from pipeline.images.encoded import ImageBytes
from pipeline.images.headers import Headers
from pipeline.images.tensor import decode_jpegs, orient
from pipeline.schema import CAPTION_ERROR, CAPTION_STATUS, IMAGE, UPSTREAM_ERROR, UPSTREAM_OK
from pipeline.status import RowStatus


@dataclass(kw_only=True)
class RowChecks:
    """Per-row status after image decode and caption checks, and which rows each tower gets."""

    status: list[str]
    error: list[str | None]
    images: list[Any] = field(default_factory=list)
    image_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    text_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @classmethod
    def join(cls, parts: list[tuple[int, RowChecks]]) -> RowChecks:
        """One batch's checks from its parts' (first row, checks), in row order."""
        return cls(
            status=[status for _, checks in parts for status in checks.status],
            error=[error for _, checks in parts for error in checks.error],
            image_rows=np.concatenate([checks.image_rows + start for start, checks in parts]),
            text_rows=np.concatenate([checks.text_rows + start for start, checks in parts]),
        )


def pixel_parts(pixels: Sequence[int], budget: int) -> list[tuple[int, int]]:
    """Row ranges, in order, whose declared pixels add up to at most `budget` (an image over
    it goes alone). A batch decoded at once holds every image at full size: 1,024
    12-megapixel photos are 37 GB, so such a batch is decoded a part at a time."""
    parts, start, held = [], 0, 0
    for row, size in enumerate(pixels):
        if held + size > budget and row > start:
            parts.append((start, row))
            start, held = row, 0
        held += size
    parts.append((start, len(pixels)))
    return parts


Mapper = Callable[[Callable[[Any], Any], Iterable[Any]], Iterator[Any]]


def check_rows(
    table: pa.Table,
    images: ImagesConfig,
    *,
    jpeg_device: str | None = None,
    mapper: Mapper = map,
    finish: Callable[[Any], Any] | None = None,
) -> RowChecks:
    """Statuses for every row, and the decoded images (PIL, or uint8 tensors from nvJPEG).

    Decisions come from the columns the read tasks made (`header_stage`): rows
    whose header declares too many pixels end here, undecoded. With
    `jpeg_device`, the JPEGs the batched decoder takes are decoded there in one
    batch, straight from the column's memory (on a GPU, progressive ones excepted);
    anything else, and any JPEG that decoder refuses, goes through PIL, which sets
    its status. PIL decodes go through `mapper` (a thread pool's map runs them in
    parallel, and beside the batched decode). `finish` is applied to each PIL
    image in the same call as its decode, and its result kept instead: a
    preprocess there lets each decoded image go at once.
    """
    data = ImageBytes(table[IMAGE])
    headers = Headers.of(table)
    upstream_ok = table[UPSTREAM_OK].to_numpy(zero_copy_only=False).astype(bool)
    too_large = upstream_ok & (headers.pixels > images.max_pixels)
    failed: dict[int, Decoded] = {}  # rows whose image ends them, with why
    upstream_error = table[UPSTREAM_ERROR]
    for row in np.flatnonzero(~upstream_ok).tolist():
        failed[row] = Decoded(None, RowStatus.UPSTREAM_FAILED, upstream_error[row].as_py())
    for row in np.flatnonzero(too_large).tolist():
        width, height = int(headers.width[row]), int(headers.height[row])
        failed[row] = over_limit(width, height, max_pixels=images.max_pixels)  # type: ignore[assignment]
    left = upstream_ok & ~too_large
    batched = left & (headers.orientation > 0) & bool(jpeg_device)
    if jpeg_device and jpeg_device.startswith("cuda"):
        # torchvision gives nvJPEG's batched (hardware) decode only what that takes; it
        # decodes the rest, progressive JPEGs among them, one at a time, Huffman on one
        # host thread under a process-wide lock. The decode threads take them side by side.
        batched &= ~headers.progressive

    def decode(row: int) -> Decoded:
        result = decode_image(data.bytes(row), max_pixels=images.max_pixels)
        if finish is None or result.image is None:
            return result
        return Decoded(finish(result.image), result.status)

    # A pool's map starts on the PIL rows now, so they decode beside the batched decode.
    with_pil = np.flatnonzero(left & ~batched).tolist()
    results = zip(with_pil, mapper(decode, with_pil), strict=True)
    decoded: dict[int, Any] = {}
    jpegs = np.flatnonzero(batched).tolist()
    refused: list[int] = []
    if jpegs:
        tensors = decode_jpegs([data.tensor(row) for row in jpegs], jpeg_device)  # type: ignore[arg-type]
        orientation = headers.orientation[jpegs].tolist()
        for row, tensor, turn in zip(jpegs, tensors, orientation, strict=True):
            if tensor is None:
                refused.append(row)
            else:
                decoded[row] = orient(tensor, turn)
    for row, result in chain(results, zip(refused, mapper(decode, refused), strict=True)):
        if result.image is None:
            failed[row] = result
        else:
            decoded[row] = result.image
    return _checked(table, failed, decoded)


def _checked(table: pa.Table, failed: dict[int, Decoded], decoded: dict[int, Any]) -> RowChecks:
    """Each row's status: its image's failure, else its caption's; both reasons kept."""
    caption_status = table[CAPTION_STATUS].to_pylist()
    errors = [error or None for error in table[CAPTION_ERROR].to_pylist()]
    status = list(caption_status)
    for row, failure in failed.items():
        status[row] = str(failure.status)
        errors[row] = "; ".join(m for m in (failure.error, errors[row]) if m) or None
    image_rows = sorted(decoded)
    return RowChecks(
        status=status,
        error=errors,
        images=[decoded[row] for row in image_rows],
        image_rows=np.asarray(image_rows, np.int64),
        text_rows=np.flatnonzero(np.asarray(caption_status, object) == RowStatus.OK.value),
    )
