"""Image headers as the read tasks put them in columns, and an actor that decides by them."""

from __future__ import annotations

import pyarrow as pa
import pytest

from pipeline.config import parse_config
from pipeline.images import encoded, headers
from pipeline.images.headers import Headers, header_stage
from pipeline.schema import BATCH_JPEG, HEIGHT, IMAGE, PROGRESSIVE, WIDTH
from pipeline.scoring import checks as checks_module
from pipeline.scoring import prepare as prepare_module
from pipeline.scoring.local import actor_input, scorer_for
from tests.builders import (
    DEMO_CHECKPOINT,
    bomb_png,
    encode,
    jpeg,
    photo,
    row,
    with_exif,
    with_frame_marker,
)

# Each image, the size its header declares and its BATCH_JPEG value.
CASES = {
    "jpeg": (jpeg(1, (64, 48)), (64, 48), 1),
    "turned": (with_exif(jpeg(2, (40, 20)), 6), (40, 20), 6),
    "grey": (encode(photo(3, (30, 50)).convert("L"), "JPEG"), (30, 50), 1),
    "cmyk": (encode(photo(4, (40, 30)).convert("CMYK"), "JPEG"), (40, 30), 0),
    "rgb": (encode(photo(4, (40, 30)), "JPEG", keep_rgb=True), (40, 30), 0),
    "arithmetic": (with_frame_marker(jpeg(4, (40, 30)), 0xC9), (40, 30), 0),
    "progressive": (encode(photo(4, (40, 30)), "JPEG", progressive=True), (40, 30), 1),
    "cut off": (jpeg(5, (300, 200))[:-100], (300, 200), 0),
    "cut in its headers": (jpeg(5, (300, 200))[:300], (0, 0), 0),
    "png": (encode(photo(6, (70, 10)), "PNG"), (70, 10), 0),
    "bomb": (bomb_png(), (100_000, 100_000), 0),
    "not an image": (b"hello", (0, 0), 0),
    "empty": (b"", (0, 0), 0),
    "null": (None, (0, 0), 0),
}


def test_each_rows_declared_size_and_whether_the_batched_decoder_takes_it():
    images = [image for image, _, _ in CASES.values()]
    chunks = [pa.array(images[:4], pa.large_binary()), pa.array(images[4:], pa.large_binary())]
    table = header_stage(pa.table({IMAGE: pa.chunked_array(chunks)}))
    columns = (table[name].to_pylist() for name in (WIDTH, HEIGHT, BATCH_JPEG))
    got = zip(*columns, strict=True)
    expected = [(*size, batch) for _, size, batch in CASES.values()]
    assert dict(zip(CASES, got, strict=True)) == dict(zip(CASES, expected, strict=True))
    read = Headers.of(table)
    assert read.pixels.tolist() == [width * height for (width, height, _) in expected]
    progressive = dict(zip(CASES, table[PROGRESSIVE].to_pylist(), strict=True))
    assert [name for name, flag in progressive.items() if flag] == ["progressive"]
    assert read.progressive.tolist() == list(progressive.values())


@pytest.mark.parametrize("decode", ["pil", "tensor"])
def test_the_actor_decides_by_the_columns_and_parses_no_header(monkeypatch, decode):
    """Read tasks parse the headers; an actor that parsed them again would pay for it on
    its one thread. Here parsing fails in the actor, and every row still gets its status."""
    config = parse_config(
        {
            "input": {"path": "unused"},
            "output": {"path": "unused"},
            "models": [
                {"name": "winnow-tiny", "pretrained": str(DEMO_CHECKPOINT), "precision": "fp32"}
            ],
            "images": {"decode": decode, "max_pixels": 10_000},
        }
    )
    table = pa.Table.from_pylist(
        [
            row("ok", jpeg(1, (64, 48)), "a photo"),
            row("large", jpeg(2, (200, 100)), "too many pixels"),
            row("png", encode(photo(3, (40, 40)), "PNG"), "a png"),
            row("bad", b"hello", "not an image"),
        ]
    )
    inputs = actor_input(table, config)
    scorer = scorer_for(config)

    def refuse(*_: object) -> None:
        raise AssertionError("the actor parsed a header")

    for module in (encoded, headers, checks_module, prepare_module):
        monkeypatch.setattr(module, "jpeg_frame", refuse, raising=False)
    monkeypatch.setattr(headers, "declared_size", refuse)
    prepared = scorer.prepare(inputs)
    assert prepared.checks.status == ["ok", "image_too_large", "ok", "decode_error"]
    assert prepared.checks.error[1] == ("200x100 = 20000 pixels is over images.max_pixels (10000)")
    assert prepared.checks.image_rows.tolist() == [0, 2]
    assert prepared.pixels[0].shape[0] == 2
