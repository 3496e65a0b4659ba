"""Tiny img2dataset-style data built inside each test's temp dir."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from pipeline.synth.dataset import IMG2DATASET_SCHEMA

TINY = "winnow-test-tiny"
# The demo model this repository trains and ships (`winnow-tiny`, 64 px).
DEMO_CHECKPOINT = (
    Path(__file__).parents[1] / "pipeline" / "models" / "weights" / "winnow-tiny.safetensors"
)


def encode(image: Image.Image, fmt: str = "JPEG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def photo(seed: int, size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A smooth random colour field: compresses like a photo, differs per seed."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BILINEAR)


def jpeg(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    return encode(photo(seed, size))


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG whose header declares billions of pixels, with almost no data behind it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return (
            struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def row(
    key: str,
    image: bytes | None,
    caption: Any,
    *,
    status: str = "success",
    error: str | None = None,
) -> dict[str, Any]:
    return {
        "key": key,
        "jpg": image,
        "caption": caption,
        "url": f"http://127.0.0.1/{key}.jpg",
        "width": 64,
        "height": 48,
        "original_width": 64,
        "original_height": 48,
        "status": status,
        "error_message": error,
        "sha256": hashlib.sha256(image).hexdigest() if image else None,
    }


def good_rows(shard: int, count: int) -> list[dict[str, Any]]:
    return [
        row(f"{shard:05d}{i:04d}", jpeg(shard * 1000 + i), f"a photo number {i} of shard {shard}")
        for i in range(count)
    ]


def write_shard(
    path: Path,
    rows: list[dict[str, Any]],
    *,
    row_group_size: int = 16,
    schema: pa.Schema = IMG2DATASET_SCHEMA,
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, row_group_size=row_group_size)
    return path


def write_dataset(folder: Path, shards: int, rows: int, *, row_group_size: int = 16) -> list[Path]:
    return [
        write_shard(folder / f"{s:05d}.parquet", good_rows(s, rows), row_group_size=row_group_size)
        for s in range(shards)
    ]


def config_data(
    input_path: Path, output_path: Path, checkpoint: Path, **sections: Any
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "input": {"path": str(input_path)},
        # The HTML report costs seconds of plotting per run; the tests of the report ask for it.
        "output": {"path": str(output_path), "embedding_dtype": "float32", "report": False},
        "models": [
            {
                "alias": "clip",
                "name": TINY,
                "pretrained": str(checkpoint),
                "precision": "fp32",
                "batch_size": 8,
            }
        ],
        # One model actor: a second one's start-up (torch + open_clip imports) costs seconds
        # of the CI's two cores per run, for a model that scores in milliseconds. The demo,
        # the benchmark and the plan tests run the default layout of one actor per core.
        "ray": {"num_actors": 1},
    }
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return data


def with_exif(data: bytes, orientation: int, order: str = "II") -> bytes:
    """An EXIF block holding only an Orientation tag, in either byte order, after SOI."""
    e = "<" if order == "II" else ">"
    tiff = order.encode() + struct.pack(e + "HIH", 42, 8, 1)
    tiff += struct.pack(e + "HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(e + "I", 0)
    return data[:2] + segment(b"\xff\xe1", b"Exif\x00\x00" + tiff) + data[2:]


def segment(marker: bytes, body: bytes) -> bytes:
    return marker + (len(body) + 2).to_bytes(2, "big") + body


def with_frame_bits(data: bytes, bits: int) -> bytes:
    """A baseline JPEG whose frame header says `bits` bits a sample (PIL reads only 8)."""
    at = data.index(b"\xff\xc0") + 4
    return data[:at] + bytes([bits]) + data[at + 1 :]


def with_frame_marker(data: bytes, marker: int) -> bytes:
    """A baseline JPEG whose frame says another coding (0xC9: arithmetic), for its headers."""
    at = data.index(b"\xff\xc0") + 1
    return data[:at] + bytes([marker]) + data[at + 1 :]
