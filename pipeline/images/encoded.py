"""Encoded image bytes, read where they lie: JPEG headers and zero-copy views of an Arrow column.

A GPU actor handles thousands of rows a second in one Python process, so the
per-row bookkeeping before nvJPEG counts: a Python bytes copy per row
(`to_pylist`) and PIL opening every header cost more than the decode itself.
Here the column's one data buffer is shared by every row's view, and a JPEG's
size comes from its frame header without PIL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from struct import unpack_from
from typing import Any

import numpy as np
import pyarrow as pa

JPEG_START = b"\xff\xd8\xff"
JPEG_END = b"\xff\xd9"
# The markers PIL knows (0xC0-0xFE; any other after 0xFF it refuses), as PIL reads them:
# those with a frame (size, precision, components; 0xDE too), those with no length after
# them, and the quantization tables. A test holds these to PIL's own table.
PIL_MARKERS = range(0xC0, 0xFF)
FRAME_MARKERS = frozenset({*range(0xC0, 0xD0), 0xDE}) - {0xC4, 0xC8, 0xCC}
STANDALONE_MARKERS = frozenset({0xC8, *range(0xD0, 0xDA), *range(0xF0, 0xFE)})
DQT = 0xDB
APP0, APP1, APP14 = 0xE0, 0xE1, 0xEE
RGB_NAMES = b"RGB"  # component ids 82, 71, 66
EXIF_HEADER = b"Exif\x00\x00"
ORIENTATION_TAG = 0x0112
XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
XMP_ORIENTATION = re.compile(rb'tiff:Orientation(="|>)([0-9])')  # as PIL finds it


@dataclass(frozen=True, slots=True)
class JpegFrame:
    width: int
    height: int
    components: int  # 1 grey, 3 YCbCr or RGB, 4 CMYK or YCCK
    # Ends with the end-of-image marker. nvJPEG decodes a cut-off JPEG without an
    # error (the missing part comes out grey), where PIL refuses it.
    complete: bool
    # The EXIF Orientation tag (1: as stored). nvJPEG ignores it; PIL applies it.
    orientation: int
    # The start-of-frame marker: its coding (0xC0 baseline, 0xC2 progressive, ...).
    coding: int
    # Three components stored as RGB, not YCbCr, as libjpeg (PIL's decoder) reads them: no
    # JFIF segment, and an Adobe segment's transform 0, or without one, components named
    # R, G and B. PIL's colours are the reference; a decoder that took them as YCbCr
    # would shift every pixel's colour.
    rgb: bool


def exif_orientation(tiff: bytes | memoryview) -> int | None:
    """The Orientation in IFD0 of an EXIF block (the TIFF after its header): 0 where there
    is none, None where the block cannot be read plainly (PIL then judges the image)."""
    order = {b"II": "<", b"MM": ">"}.get(bytes(tiff[:2]))
    if order is None or len(tiff) < 8:
        return None
    magic, ifd = unpack_from(order + "HI", tiff, 2)
    if magic != 42 or ifd + 2 > len(tiff):
        return None
    (entries,) = unpack_from(order + "H", tiff, ifd)
    if ifd + 2 + 12 * entries > len(tiff):
        return None
    for entry in range(ifd + 2, ifd + 2 + 12 * entries, 12):
        tag, kind, count = unpack_from(order + "HHI", tiff, entry)
        if tag == ORIENTATION_TAG:
            if count != 1 or kind not in (3, 4):  # one SHORT or LONG
                return None
            value = unpack_from(order + ("H" if kind == 3 else "I"), tiff, entry + 8)[0]
            return value or None
    return 0


def refused_by_pil(marker: int, body: bytes | memoryview) -> bool:
    """Whether PIL's header parse raises on this segment (frames aside): quantization
    tables (64 values of one or two bytes, after a byte saying which) that do not fill
    their segment, or a JFIF segment too short for its version."""
    if marker == APP0:
        return bytes(body[:4]) == b"JFIF" and len(body) < 7
    if marker != DQT:
        return False
    position = 0
    while position < len(body):
        position += 1 + 64 * (1 if body[position] < 16 else 2)
    return position != len(body)


def jpeg_frame(data: bytes | memoryview | None) -> JpegFrame | None:
    """Size, components and orientation from a JPEG's headers; None for anything this
    cannot read as PIL would, which sends the row to PIL for its format or its error.

    Segments are walked by their length up to the scan, so a thumbnail inside EXIF
    is never mistaken for the image. What PIL refuses in a header (an unknown
    marker, a segment past the end, a frame that is not 8-bit, quantization tables
    that do not fill their segment) is None here, so a decoder that would take it
    never scores a row PIL fails. The orientation is PIL's: the EXIF block's
    Orientation tag, else the XMP packet's tiff:Orientation.
    """
    if data is None or bytes(data[:3]) != JPEG_START:
        return None
    position, end = 2, len(data)
    frame: tuple[int, int, int] | None = None
    coding = 0
    exif: int | None = None
    xmp = 0
    names = b""
    jfif, transform = False, None
    while position + 4 <= end:
        first, marker, length = unpack_from(">BBH", data, position)
        if first != 0xFF:
            return None
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker not in PIL_MARKERS or marker == 0xD9:  # or the end before any scan
            return None
        if marker in STANDALONE_MARKERS:
            position += 2
            continue
        stop = position + 2 + length
        if length < 2 or stop > end:
            return None
        if marker == 0xDA:  # the scan: every header is read
            break
        body = data[position + 4 : stop]
        if marker in FRAME_MARKERS:
            # PIL: 8 bits, three bytes a component; the last frame counts, here only one.
            if frame is not None or len(body) < 6 or body[0] != 8 or (len(body) - 6) % 3:
                return None
            frame, names, coding = unpack_from(">HHB", body, 1), bytes(body[6::3]), marker
        elif refused_by_pil(marker, body):
            return None
        elif marker == APP0:
            jfif = jfif or (bytes(body[:5]) == b"JFIF\x00" and len(body) >= 14)  # as libjpeg
        elif marker == APP14 and bytes(body[:5]) == b"Adobe" and len(body) >= 12:
            transform = body[11]
        elif marker == APP1:
            if bytes(body[:6]) == EXIF_HEADER:
                if exif is not None:  # PIL joins further EXIF blocks onto the first
                    return None
                exif = exif_orientation(body[6:])
                if exif is None:
                    return None
            elif bytes(body[: len(XMP_HEADER)]) == XMP_HEADER:
                found = XMP_ORIENTATION.search(bytes(body[len(XMP_HEADER) :]))
                xmp = int(found[2]) if found else 0  # the last XMP packet counts
        position = stop
    else:
        return None  # no scan
    if frame is None:
        return None
    height, width, components = frame
    if not (width and height) or components not in (1, 3, 4):
        return None
    return JpegFrame(
        width=width,
        height=height,
        components=components,
        complete=bytes(data[-2:]) == JPEG_END,
        orientation=exif or xmp or 1,
        coding=coding,
        rgb=components == 3
        and not jfif
        and (transform == 0 if transform is not None else names == RGB_NAMES),
    )


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
        self._bounds: list[np.ndarray] = []  # each chunk's rows' offsets, and its end
        valid = [np.zeros(0, bool)]
        for index, array in enumerate(chunks):
            array = array.cast(pa.large_binary())
            _, offsets, values = array.buffers()
            bounds = np.frombuffer(offsets, np.int64)[array.offset : array.offset + len(array) + 1]
            self.starts += bounds[:-1].tolist()
            self.ends += bounds[1:].tolist()
            self.chunk += [index] * len(array)
            self._bounds.append(bounds)
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
        """The row's bytes as a 1-D uint8 CPU tensor sharing the column's memory (read-only).

        Each chunk is split into every row's view in one call the first time: slicing
        a tensor row by row costs a GPU actor's host thread 3 us a row.
        """
        if not self._tensors:
            import warnings

            import torch

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # not writable: nothing here writes to it
                whole = [torch.from_numpy(values) for values in self.values]
            for values, bounds in zip(whole, self._bounds, strict=True):
                part = values[bounds[0] : bounds[-1]]
                self._tensors += part.split(np.diff(bounds).tolist())
        return self._tensors[row]
