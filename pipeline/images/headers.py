"""Image headers read in the read tasks, as columns: each row's declared size, whether
the batched JPEG decoder takes it, and whether it is a progressive JPEG.

A GPU actor handles thousands of rows a second in one Python process, where
walking every row's JPEG segments (and a PIL header for other formats) would
cost microseconds a row; read tasks run several to a GPU, so they read the
headers and the actor reads their columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipeline.images.decode import declared_size
from pipeline.images.encoded import ImageBytes, jpeg_frame
from pipeline.schema import BATCH_JPEG, HEIGHT, IMAGE, PROGRESSIVE, WIDTH

# Grey and YCbCr JPEGs go to the batched decoder; CMYK ones to PIL, whose colours are the reference.
NVJPEG_COMPONENTS = (1, 3)
# Huffman-coded baseline, extended and progressive DCT frames: what nvJPEG decodes. Lossless,
# differential and arithmetic-coded ones go to PIL, not through a failed batch first
# (`decode_jpegs` retries a batch that fails in halves).
NVJPEG_CODINGS = (0xC0, 0xC1, 0xC2)
PROGRESSIVE_CODING = 0xC2


@dataclass(frozen=True, kw_only=True)
class Headers:
    """Per row: the size its header declares (0 x 0 where none reads), `BATCH_JPEG` and
    `PROGRESSIVE`."""

    width: np.ndarray
    height: np.ndarray
    orientation: np.ndarray
    progressive: np.ndarray

    @property
    def pixels(self) -> np.ndarray:
        return self.width * self.height

    @classmethod
    def read(cls, column: pa.Array | pa.ChunkedArray) -> Headers:
        """The headers of a binary column's images: the JPEG frame where one reads as PIL
        would read it, else PIL's header."""
        data = ImageBytes(column)
        width, height, orientation = (np.zeros(len(data), np.int64) for _ in range(3))
        progressive = np.zeros(len(data), bool)
        for row in np.flatnonzero(data.valid).tolist():
            view = data.view(row)
            frame = jpeg_frame(view)
            if frame is None:
                width[row], height[row] = declared_size(view)
                continue
            width[row], height[row] = frame.width, frame.height
            progressive[row] = frame.coding == PROGRESSIVE_CODING
            batch = frame.coding in NVJPEG_CODINGS and frame.components in NVJPEG_COMPONENTS
            if batch and frame.complete and not frame.rgb:
                orientation[row] = frame.orientation
        return cls(width=width, height=height, orientation=orientation, progressive=progressive)

    @classmethod
    def of(cls, table: pa.Table) -> Headers:
        """The headers `header_stage` put in the table."""

        def column(name: str) -> np.ndarray:
            return table[name].to_numpy().astype(np.int64)

        return cls(
            width=column(WIDTH),
            height=column(HEIGHT),
            orientation=column(BATCH_JPEG),
            progressive=table[PROGRESSIVE].to_numpy(),
        )


def header_stage(table: pa.Table) -> pa.Table:
    """Ray Data stage: the image column's headers appended as columns."""
    headers = Headers.read(table[IMAGE])
    table = table.append_column(WIDTH, pa.array(headers.width, pa.int32()))
    table = table.append_column(HEIGHT, pa.array(headers.height, pa.int32()))
    table = table.append_column(BATCH_JPEG, pa.array(headers.orientation, pa.int8()))
    return table.append_column(PROGRESSIVE, pa.array(headers.progressive, pa.bool_()))
