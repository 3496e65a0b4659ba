"""Encoded image bytes, read where they lie: JPEG headers and zero-copy views of an Arrow column.

A GPU actor handles thousands of rows a second in one Python process, so the
per-row bookkeeping before nvJPEG counts: a Python bytes copy per row
(`to_pylist`) and PIL opening every header cost more than the decode itself.
Here the column's one data buffer is shared by every row's view, and a JPEG's
size comes from its frame header without PIL.
"""

from __future__ import annotations

from dataclasses import dataclass
from struct import unpack_from
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
        first, marker, length = unpack_from(">BBH", data, position)
        if first != 0xFF:
            return None
        if marker == 0xFF:  # fill byte
            position += 1
        elif marker in STANDALONE_MARKERS:
            position += 2
        elif marker in (0xD9, 0xDA):  # end of image, or scan data, before any frame header
            return None
        elif marker in FRAME_MARKERS:
            if position + 10 > end:
                return None
            height, width, components = unpack_from(">HHB", data, position + 5)
            complete = bytes(data[-2:]) == JPEG_END
            frame = JpegFrame(width=width, height=height, components=components, complete=complete)
            return frame if width and height else None
        else:
            position += 2 + length
    return None


class ImageBytes:
    """A binary Arrow column's values as views of its chunks' data buffers, no copy per row.

    Chunks are read where they lie: combining them first copies every image (15 us a
    row, half of a GPU actor's bookkeeping before nvJPEG).
    """

    def __init__(self, column: pa.Array | pa.ChunkedArray) -> None:
        chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
        self.values: list[np.ndarray] = []
        self.chunk: list[int] = []  # each row's chunk
        self.starts: list[int] = []
        self.ends: list[int] = []
        valid = [np.zeros(0, bool)]
        for index, array in enumerate(chunks):
            array = array.cast(pa.large_binary())
            _, offsets, values = array.buffers()
            bounds = np.frombuffer(offsets, np.int64)[array.offset : array.offset + len(array) + 1]
            self.starts += bounds[:-1].tolist()
            self.ends += bounds[1:].tolist()
            self.chunk += [index] * len(array)
            valid.append(array.is_valid().to_numpy(zero_copy_only=False))
            self.values.append(
                np.frombuffer(values, np.uint8) if values is not None else np.zeros(0, np.uint8)
            )
        self.valid = np.concatenate(valid)
        self._data = [memoryview(values) for values in self.values]
        self._tensors: list[Any] = []

    def __len__(self) -> int:
        return len(self.valid)

    def view(self, row: int) -> memoryview | None:
        if not self.valid[row]:
            return None
        return self._data[self.chunk[row]][self.starts[row] : self.ends[row]]

    def bytes(self, row: int) -> bytes | None:
        view = self.view(row)
        return None if view is None else view.tobytes()

    def tensor(self, row: int) -> Any:
        """The row's bytes as a 1-D uint8 CPU tensor sharing the column's memory (read-only)."""
        import warnings

        import torch

        if not self._tensors:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # not writable: nothing here writes to it
                self._tensors = [torch.from_numpy(values) for values in self.values]
        return self._tensors[self.chunk[row]][self.starts[row] : self.ends[row]]
