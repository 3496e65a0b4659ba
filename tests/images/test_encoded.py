"""JPEG sizes from frame headers, and zero-copy views of a binary column, against PIL and Arrow."""

from __future__ import annotations

import io

import pyarrow as pa
import pytest
from PIL import Image, ImageOps

from pipeline.images.encoded import ImageBytes, jpeg_frame
from tests.builders import encode, jpeg, photo, segment, with_exif


def pil_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def with_thumbnail_first(data: bytes) -> bytes:
    """An APP1 segment holding a whole small JPEG (frame header included) before the image's."""
    thumbnail = jpeg(9, (16, 12))
    segment = b"\xff\xe1" + (len(thumbnail) + 2).to_bytes(2, "big") + thumbnail
    return data[:2] + segment + data[2:]


@pytest.mark.parametrize(
    "data",
    [
        jpeg(1, (64, 48)),
        jpeg(2, (31, 97)),
        encode(photo(3, (120, 80)), "JPEG", progressive=True),
        encode(photo(4, (50, 70)).convert("L"), "JPEG"),
        encode(photo(5, (40, 30)).convert("CMYK"), "JPEG"),
        encode(photo(6, (64, 64)), "JPEG", subsampling=0, quality=95),
        with_thumbnail_first(jpeg(7, (200, 150))),
        jpeg(8, (64, 48))[:2] + b"\xff\xff" + jpeg(8, (64, 48))[2:],  # a fill byte
    ],
    ids=["baseline", "odd", "progressive", "grey", "cmyk", "444", "thumbnail", "fill"],
)
def test_jpeg_frame_reads_size_and_components_as_pil_does(data):
    frame = jpeg_frame(data)
    assert (frame.width, frame.height) == pil_size(data)
    assert frame.components == len(Image.open(io.BytesIO(data)).getbands())
    assert jpeg_frame(memoryview(data)) == frame
    assert frame.complete


def test_a_cut_off_jpeg_is_never_read_as_complete_so_pil_judges_it():
    whole = jpeg(1, (300, 300))
    for cut in (whole[:-2], whole[:-200], whole[:400] + bytes(range(64))):
        frame = jpeg_frame(cut)
        assert frame is None or not frame.complete
    assert not jpeg_frame(whole[:-2]).complete


@pytest.mark.parametrize(
    "data",
    [
        None,
        b"",
        b"\xff\xd8",
        encode(photo(1), "PNG"),
        encode(photo(1), "WEBP"),
        jpeg(1, (64, 48))[:20],  # cut before the frame header
        b"\xff\xd8\xff\xda\x00\x02",  # scan data before any frame header
    ],
    ids=["null", "empty", "soi-only", "png", "webp", "cut", "scan-first"],
)
def test_anything_else_is_left_to_pil(data):
    assert jpeg_frame(data) is None


def test_views_give_each_rows_bytes_without_copying_the_column():
    values = [b"abc", None, b"", jpeg(1), b"\x00\xff"]
    chunks = [pa.array(values[:2], pa.large_binary()), pa.array(values[2:], pa.large_binary())]
    data = ImageBytes(pa.chunked_array(chunks))
    assert len(data) == len(values)
    assert [data.bytes(row) for row in range(len(values))] == values
    narrow = ImageBytes(pa.array(values, pa.binary()))  # 32-bit offsets, as some shards have
    assert [narrow.bytes(row) for row in range(len(values))] == values
    assert data.view(1) is None
    assert bytes(data.tensor(3).numpy()) == values[3]
    assert data.tensor(2).numel() == 0
    for values, chunk in zip(data.values, chunks, strict=True):  # each chunk's own buffer
        assert values.ctypes.data == chunk.buffers()[2].address
    assert len(ImageBytes(pa.chunked_array([], pa.large_binary()))) == 0


def test_every_rows_tensor_is_its_own_bytes_across_chunks_empty_ones_too():
    values = [b"ab", None, b"cde", b"", jpeg(2)]
    chunks = [values[:2], [], values[2:4], [], values[4:]]
    data = ImageBytes(pa.chunked_array([pa.array(c, pa.large_binary()) for c in chunks]))
    assert [bytes(data.tensor(row).numpy()) for row in range(len(values))] == [
        value or b"" for value in values
    ]


def test_a_sliced_column_starts_at_its_own_first_row():
    column = pa.array([b"skip", b"one", None, b"three"], pa.large_binary()).slice(1)
    data = ImageBytes(column)
    assert [data.bytes(row) for row in range(len(data))] == [b"one", None, b"three"]
    assert bytes(data.tensor(2).numpy()) == b"three"


def pil_orientation_size(data: bytes) -> tuple[int, int]:
    return ImageOps.exif_transpose(Image.open(io.BytesIO(data))).size


@pytest.mark.parametrize("order", ["II", "MM"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_read_as_pil_reads_it(orientation, order):
    data = with_exif(jpeg(3, (40, 20)), orientation, order)
    frame = jpeg_frame(data)
    assert frame.orientation == orientation
    turned = (20, 40) if orientation >= 5 else (40, 20)
    assert pil_orientation_size(data) == turned


def test_xmp_orientation_counts_where_exif_has_none():
    xmp = b'<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'
    data = encode(photo(4, (40, 20)), "JPEG", xmp=xmp)
    assert jpeg_frame(data).orientation == 6
    assert pil_orientation_size(data) == (20, 40)
    both = with_exif(data, 3)
    assert jpeg_frame(both).orientation == 3
    assert pil_orientation_size(both) == (40, 20)


def test_exif_this_cannot_read_plainly_is_left_to_pil():
    base = jpeg(5, (40, 20))
    garbled = base[:2] + segment(b"\xff\xe1", b"Exif\x00\x00" + b"XX" + bytes(20)) + base[2:]
    assert jpeg_frame(garbled) is None
    twice = with_exif(with_exif(base, 6), 3)  # PIL joins a second EXIF block onto the first
    assert jpeg_frame(twice) is None
