"""JPEG sizes from frame headers, and zero-copy views of a binary column, against PIL and Arrow."""

from __future__ import annotations

import io
import random

import pyarrow as pa
import pytest
from PIL import Image, ImageOps

import pipeline.images.decode  # noqa: F401  (PIL's pixel limit off, as in a job)
from pipeline.images.encoded import (
    DQT,
    FRAME_MARKERS,
    PIL_MARKERS,
    STANDALONE_MARKERS,
    ImageBytes,
    jpeg_frame,
)
from tests.builders import encode, jpeg, photo, segment, with_exif, with_frame_bits


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


def test_the_marker_tables_are_pils_own():
    """A later PIL that reads markers otherwise fails here, not in a job's statuses."""
    from PIL import JpegImagePlugin

    table = {code & 0xFF: handler for code, (_, _, handler) in JpegImagePlugin.MARKER.items()}
    assert set(table) == set(PIL_MARKERS)
    assert {m for m, handler in table.items() if handler is None} == STANDALONE_MARKERS
    assert {m for m, handler in table.items() if handler is JpegImagePlugin.SOF} == FRAME_MARKERS
    assert {m for m, handler in table.items() if handler is JpegImagePlugin.DQT} == {DQT}


def pil_refuses(data: bytes) -> bool:
    try:
        Image.open(io.BytesIO(data))
    except Exception:
        return True
    return False


BASE = jpeg(1, (64, 48))
DQT_AT = BASE.index(b"\xff\xdb")
SCAN_AT = BASE.index(b"\xff\xda")


@pytest.mark.parametrize(
    "data",
    [
        with_frame_bits(BASE, 12),
        BASE[:DQT_AT] + segment(b"\xff\xdb", bytes(40)) + BASE[DQT_AT:],  # a table cut short
        BASE[:2] + b"\xff\x02\x00\x04ab" + BASE[2:],  # a marker PIL does not know
        BASE[:2] + b"\xff\xe0\x00\x07JFIF\x00" + BASE[2:],  # JFIF without its version
        BASE[:SCAN_AT] + b"\xff\xfe\xff\xf0" + BASE[SCAN_AT:],  # a comment past the end
    ],
    ids=["12-bit", "dqt", "unknown-marker", "jfif", "past-the-end"],
)
def test_headers_pil_refuses_are_left_to_pil(data):
    assert pil_refuses(data)
    assert jpeg_frame(data) is None


def mutated(base: bytes, rng: random.Random) -> bytes:
    """`base` with a few bytes of its headers changed, cut out or put in."""
    data = bytearray(base)
    for _ in range(rng.randint(1, 3)):
        at, kind = rng.randrange(min(len(data), 400)), rng.random()
        if kind < 0.6:
            data[at] = rng.randrange(256)
        elif kind < 0.8:
            del data[at : at + rng.randint(1, 8)]
        else:
            data[at:at] = rng.randbytes(rng.randint(1, 8))
    return bytes(data)


def test_a_jpeg_whose_headers_read_here_reads_as_the_same_image_in_pil():
    """On damaged headers: every JPEG read here (which a GPU actor then hands nvJPEG, not
    PIL) PIL opens too, with the same size and bands, so both paths give it one status."""
    bases = [
        with_exif(jpeg(1, (40, 20)), 6),
        encode(photo(2, (33, 17)).convert("L"), "JPEG"),
        encode(photo(3, (50, 40)), "JPEG", progressive=True),
        encode(photo(4, (20, 20)).convert("CMYK"), "JPEG"),
        encode(photo(5, (24, 24)), "JPEG", icc_profile=b"x" * 300, comment=b"a comment"),
        encode(photo(6, (30, 20)), "JPEG", xmp=b'<x tiff:Orientation="3"/>', dpi=(300, 300)),
    ]
    rng = random.Random(0)
    read = 0
    for _ in range(4000):
        data = mutated(rng.choice(bases), rng)
        frame = jpeg_frame(data)
        if frame is None:
            continue
        read += 1
        with Image.open(io.BytesIO(data)) as image:
            assert (image.size, len(image.getbands())) == (
                (frame.width, frame.height),
                frame.components,
            ), data.hex()
    assert 1000 < read < 3900  # damage that leaves the headers readable, and damage that does not


def without_jfif(data: bytes) -> bytes:
    at = data.index(b"\xff\xe0")
    return data[:at] + data[at + 4 + int.from_bytes(data[at + 2 : at + 4], "big") - 2 :]


def named(data: bytes, names: bytes) -> bytes:
    """The frame's three component ids set to `names` (the scan still names the old ones:
    for reading headers only)."""
    at = data.index(b"\xff\xc0") + 4 + 6
    for index, name in enumerate(names):
        data = data[: at + 3 * index] + bytes([name]) + data[at + 3 * index + 1 :]
    return data


@pytest.mark.parametrize(
    ("data", "rgb"),
    [
        (jpeg(1), False),
        (encode(photo(2), "JPEG", keep_rgb=True), True),  # Adobe segment, transform 0
        (named(without_jfif(jpeg(3)), b"RGB"), True),
        (named(jpeg(3), b"RGB"), False),  # JFIF says YCbCr, whatever the names
        (encode(photo(4).convert("L"), "JPEG"), False),
    ],
    ids=["ycbcr", "adobe-rgb", "named-rgb", "jfif-named-rgb", "grey"],
)
def test_colours_stored_as_rgb_are_told_apart_as_libjpeg_does(data, rgb):
    assert jpeg_frame(data).rgb is rgb
