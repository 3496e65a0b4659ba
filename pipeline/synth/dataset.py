"""Generated img2dataset-format shards with a chosen share of noisy pairs and the ground truth.

Used by `make demo`, the tests and the benchmark. Each row says in `gt_noise`
what, if anything, is wrong with it, so a run can grade itself.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.io.shards import open_fs
from pipeline.synth.scenes import (
    GENERIC_CAPTIONS,
    caption,
    hard_negative,
    random_scene,
    render,
)

CLEAN = "clean"
NOISE_KINDS = (
    "mismatched",  # the caption of another image
    "hard_negative",  # right about one attribute, wrong about colour or shape
    "generic",  # a caption that describes nothing
    "empty_caption",
    "corrupt_image",
    "download_failed",  # img2dataset could not fetch it
)
DEFAULT_MIX = {
    "mismatched": 0.3,
    "hard_negative": 0.35,
    "generic": 0.15,
    "empty_caption": 0.05,
    "corrupt_image": 0.1,
    "download_failed": 0.05,
}

IMG2DATASET_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("jpg", pa.binary()),
        ("caption", pa.string()),
        ("url", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("original_width", pa.int32()),
        ("original_height", pa.int32()),
        ("status", pa.string()),
        ("error_message", pa.string()),
        ("sha256", pa.string()),
    ]
)
# The generated shards: img2dataset's columns plus the ground truth.
SCHEMA = pa.schema([*IMG2DATASET_SCHEMA, ("gt_clean", pa.bool_()), ("gt_noise", pa.string())])


@dataclass(frozen=True, kw_only=True)
class SynthSpec:
    shards: int = 8
    rows_per_shard: int = 500
    noise_fraction: float = 0.3
    seed: int = 0
    min_side: int = 96
    max_side: int = 192
    quality: int = 90


def jpeg_bytes(image: Any, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _noise_kind(rng: np.random.Generator, fraction: float) -> str:
    if rng.random() >= fraction:
        return CLEAN
    kinds = list(DEFAULT_MIX)
    weights = np.asarray([DEFAULT_MIX[k] for k in kinds])
    return str(rng.choice(kinds, p=weights / weights.sum()))


def generate_rows(spec: SynthSpec, shard: int) -> Iterator[dict[str, Any]]:
    rng = np.random.default_rng([spec.seed, shard])
    for index in range(spec.rows_per_shard):
        key = f"{shard:05d}{index:04d}"
        side = int(rng.integers(spec.min_side, spec.max_side + 1))
        scene = random_scene(rng)
        image = render(scene, rng, side=side)
        text = caption(scene, rng)
        kind = _noise_kind(rng, spec.noise_fraction)
        data: bytes | None = jpeg_bytes(image, spec.quality)
        status, error = "success", None
        if kind == "mismatched":
            other = random_scene(rng)
            while other.colour == scene.colour and other.shape == scene.shape:
                other = random_scene(rng)
            text = caption(other, rng)
        elif kind == "hard_negative":
            _, text = hard_negative(scene, rng)
        elif kind == "generic":
            text = str(rng.choice(GENERIC_CAPTIONS))
        elif kind == "empty_caption":
            text = ""
        elif kind == "corrupt_image":
            cut = int(rng.integers(16, max(17, len(data) // 3)))
            data = data[:cut] + bytes(rng.integers(0, 256, 64, dtype=np.uint8))
        elif kind == "download_failed":
            data, status, error = None, "failed_to_download", "HTTP Error 404: Not Found"
        yield {
            "key": key,
            "jpg": data,
            "caption": text,
            "url": f"https://example.invalid/images/{key}.jpg",
            "width": side if data else None,
            "height": side if data else None,
            "original_width": side if data else None,
            "original_height": side if data else None,
            "status": status,
            "error_message": error,
            "sha256": hashlib.sha256(data).hexdigest() if data else None,
            "gt_clean": kind == CLEAN,
            "gt_noise": kind,
        }


def write_synthetic(
    output: str, spec: SynthSpec, *, storage_options: dict[str, Any] | None = None
) -> list[str]:
    """Write `spec.shards` Parquet shards named like img2dataset's (00000.parquet, ...)."""
    fs, root = open_fs(output, storage_options or {})
    fs.makedirs(root, exist_ok=True)
    written = []
    for shard in range(spec.shards):
        table = pa.Table.from_pylist(list(generate_rows(spec, shard)), schema=SCHEMA)
        path = posixpath.join(root, f"{shard:05d}.parquet")
        with fs.open(path, "wb") as handle:
            pq.write_table(table, handle, row_group_size=256)
        written.append(fs.unstrip_protocol(path))
    return written
