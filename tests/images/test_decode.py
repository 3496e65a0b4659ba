from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.images.decode import decode_image
from pipeline.status import RowStatus
from tests.builders import bomb_png, encode, jpeg, photo

LIMIT = 10_000_000


def decode(data):
    return decode_image(data, max_pixels=LIMIT)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("jpeg", jpeg(1)),
        ("grayscale", encode(photo(2).convert("L"), "PNG")),
        ("cmyk", encode(photo(3).convert("CMYK"), "JPEG")),
        ("palette", encode(photo(4).convert("P"), "PNG")),
        ("alpha", encode(photo(5).convert("RGBA"), "PNG")),
        ("one_pixel", encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG")),
        ("webp", encode(photo(6), "WEBP")),
    ],
)
def test_valid_images_of_every_mode_come_out_rgb(name, data):
    result = decode(data)
    assert result.status is RowStatus.OK, name
    assert result.error is None
    assert result.image.mode == "RGB"


def test_sixteen_bit_images_are_scaled_not_clipped():
    ramp = (np.linspace(0, 65535, 64 * 32).reshape(32, 64)).astype(np.uint16)
    data = encode(Image.fromarray(ramp), "PNG")
    result = decode(data)
    assert result.status is RowStatus.OK
    pixels = np.asarray(result.image)[..., 0]
    assert pixels.min() == 0 and pixels.max() == 255
    assert 100 < pixels.mean() < 155  # a ramp, not a white image


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    data = encode(photo(7, (40, 20)), "JPEG", exif=exif.tobytes())
    result = decode(data)
    assert result.image.size == (20, 40)


@pytest.mark.parametrize(
    ("name", "data", "status", "reason"),
    [
        ("null", None, RowStatus.MISSING_IMAGE, "null"),
        ("empty", b"", RowStatus.DECODE_ERROR, "empty"),
        ("text", b"<html>404 not found</html>", RowStatus.DECODE_ERROR, "not an image"),
        ("corrupt", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4, RowStatus.DECODE_ERROR, ""),
        ("truncated", jpeg(8, (256, 256))[:600], RowStatus.DECODE_ERROR, "truncated"),
        ("bomb", bomb_png(), RowStatus.IMAGE_TOO_LARGE, "max_pixels"),
    ],
)
def test_bad_images_get_a_status_and_reason(name, data, status, reason):
    result = decode(data)
    assert result.status is status, name
    assert result.image is None
    assert reason.lower() in result.error.lower()


def test_bomb_is_refused_before_allocation():
    # 100k x 100k RGB would need 30 GB; the check must happen on the header alone.
    result = decode_image(bomb_png(), max_pixels=1)
    assert result.status is RowStatus.IMAGE_TOO_LARGE
    assert "100000x100000" in result.error


def test_pixel_limit_is_configurable():
    data = jpeg(9, (64, 48))
    assert decode_image(data, max_pixels=64 * 48).status is RowStatus.OK
    assert decode_image(data, max_pixels=64 * 48 - 1).status is RowStatus.IMAGE_TOO_LARGE


def test_png_header_is_valid_for_pil():
    with Image.open(io.BytesIO(bomb_png(300, 200))) as image:
        assert image.size == (300, 200)
