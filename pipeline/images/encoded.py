"""Encoded image bytes, read where they lie: JPEG headers and zero-copy views of an Arrow column.

A GPU actor handles thousands of rows a second in one Python process, so the
per-row bookkeeping before nvJPEG counts: a Python bytes copy per row
(`to_pylist`) and PIL opening every header cost more than the decode itself.
Here the column's one data buffer is shared by every row's view, and a JPEG's
size comes from its frame header without PIL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

JPEG_START = b"\xff\xd8\xff"
JPEG_END = b"\xff\xd9"
# Start-of-frame markers carry the size; 0xC4 (DHT), 0xC8 (JPG) and 0xCC (DAC) do not.
FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers with no length field after them.
STANDALONE_MARKERS = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})


@dataclass(frozen=True, slots=True)
class JpegFrame:
    width: int
    height: int
    components: int  # 1 grey, 3 YCbCr, 4 CMYK or YCCK
    # Ends with the end-of-image marker. nvJPEG decodes a cut-off JPEG without an
    # error (the missing part comes out grey), where PIL refuses it.
    complete: bool


def jpeg_frame(data: bytes | memoryview | None) -> JpegFrame | None:
    """Size and components from a JPEG's frame header; None for anything this cannot read.

    Segments before the frame header are skipped by their length, so a thumbnail
    inside EXIF is never mistaken for the image. None sends the row to PIL, which
    gives it its format or its error.
    """
    if data is None or bytes(data[:3]) != JPEG_START:
        return None
    position, end = 2, len(data)
    while position + 4 <= end:
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in STANDALONE_MARKERS:
            position += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, or scan data, before any frame header
            return None
        if marker in FRAME_MARKERS:
            if position + 10 > end:
                return None
            height = int.from_bytes(data[position + 5 : position + 7], "big")
            width = int.from_bytes(data[position + 7 : position + 9], "big")
            complete = bytes(data[-2:]) == JPEG_END
            frame = JpegFrame(
                width=width, height=height, components=data[position + 9], complete=complete
            )
            return frame if width and height else None
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    return None


class ImageBytes:
    """A binary Arrow column's values as views of its one data buffer, no copy per row."""

    def __init__(self, column: pa.Array | pa.ChunkedArray) -> None:
        array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        array = array.cast(pa.large_binary())
        _, offsets, values = array.buffers()
        self.valid = array.is_valid().to_numpy(zero_copy_only=False)
        bounds = np.frombuffer(offsets, np.int64)[array.offset : array.offset + len(array) + 1]
        self.offsets: list[int] = bounds.tolist()
        self.values = (
            np.frombuffer(values, np.uint8) if values is not None else np.zeros(0, np.uint8)
        )
        self._data = memoryview(self.values)
        self._tensor: Any = None

    def __len__(self) -> int:
        return len(self.valid)

    def view(self, row: int) -> memoryview | None:
        if not self.valid[row]:
            return None
        return self._data[self.offsets[row] : self.offsets[row + 1]]

    def bytes(self, row: int) -> bytes | None:
        view = self.view(row)
        return None if view is None else view.tobytes()

    def tensor(self, row: int) -> Any:
        """The row's bytes as a 1-D uint8 CPU tensor sharing the column's memory (read-only)."""
        import warnings

        import torch

        if self._tensor is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # not writable: nothing here writes to it
                self._tensor = torch.from_numpy(self.values)
        return self._tensor[self.offsets[row] : self.offsets[row + 1]]
