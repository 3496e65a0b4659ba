"""Web-like image-caption pairs for the benchmark: photo-textured JPEGs at web sizes.

Sizes and file sizes follow web images (256-1024 px, tens to a couple of
hundred KB), written as img2dataset shards. Rendering costs far more than
decoding, so large sets cycle through a pool of a few thousand distinct
images, rendered on every core; the decode work per row is the same.
"""

from __future__ import annotations

import io
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.synth.dataset import IMG2DATASET_SCHEMA
from pipeline.synth.scenes import caption, random_scene, render

IMAGES_PER_TASK = 64
MARKER = "_web_pairs.json"


@dataclass(frozen=True, kw_only=True)
class WebPairsSpec:
    pairs: int = 2048
    shards: int = 4
    seed: int = 0
    min_side: int = 256
    max_side: int = 1024
    distinct_images: int = 4096
    # img2dataset's: it writes a row group every 100 rows.
    row_group_rows: int = 100


def web_like_jpeg(rng: np.random.Generator, spec: WebPairsSpec) -> tuple[bytes, str, int, int]:
    """A synthetic scene with photo-like texture, at web JPEG sizes (tens of KB)."""
    from PIL import Image

    scene = random_scene(rng)
    side = int(rng.integers(spec.min_side, spec.max_side + 1))
    height = int(side * rng.uniform(0.6, 1.0))
    image = render(scene, rng, side=side).crop((0, 0, side, height))
    texture = rng.normal(0, 9, (height, side, 3))
    pixels = np.clip(np.asarray(image, np.float64) + texture, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=int(rng.integers(80, 93)))
    return buffer.getvalue(), caption(scene, rng), side, height


def _images(seed: np.random.SeedSequence, count: int, spec: WebPairsSpec) -> list[tuple]:
    rng = np.random.default_rng(seed)
    return [web_like_jpeg(rng, spec) for _ in range(count)]


def image_pool(spec: WebPairsSpec) -> list[tuple[bytes, str, int, int]]:
    """The distinct images the pairs cycle through, rendered on every core."""
    distinct = min(spec.pairs, spec.distinct_images)
    counts = [min(IMAGES_PER_TASK, distinct - s) for s in range(0, distinct, IMAGES_PER_TASK)]
    seeds = np.random.SeedSequence(spec.seed).spawn(len(counts))
    if len(counts) == 1:
        return _images(seeds[0], counts[0], spec)
    workers = min(len(counts), os.cpu_count() or 1)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        chunks = pool.map(_images, seeds, counts, [spec] * len(counts))
        return [image for chunk in chunks for image in chunk]


def generate(folder: Path, spec: WebPairsSpec) -> dict[str, Any]:
    """Write the shards; return what they hold (pairs, distinct images, JPEG sizes)."""
    images = image_pool(spec)
    per_shard = -(-spec.pairs // spec.shards)
    sizes = []
    for shard in range(spec.shards):
        rows = []
        for index in range(shard * per_shard, min(spec.pairs, (shard + 1) * per_shard)):
            data, text, width, height = images[index % len(images)]
            sizes.append(len(data))
            rows.append(
                {"key": f"{index:010d}", "jpg": data, "caption": text, "width": width,
                 "height": height, "original_width": width, "original_height": height,
                 "status": "success"}
            )  # fmt: skip
        pq.write_table(
            pa.Table.from_pylist(rows, schema=IMG2DATASET_SCHEMA),
            folder / f"{shard:05d}.parquet",
            row_group_size=spec.row_group_rows,
        )
    kilobytes = np.asarray(sizes) / 1024
    return {
        "pairs": len(sizes),
        "distinct_images": len(images),
        "jpeg_kb_median": round(float(np.median(kilobytes)), 1),
        "jpeg_kb_p10_p90": [round(float(np.percentile(kilobytes, q)), 1) for q in (10, 90)],
    }


def web_pairs(folder: Path, spec: WebPairsSpec) -> dict[str, Any]:
    """The shards for `spec` in `folder`: those already there when made for the same spec.

    Rendering thousands of images takes minutes; comparing job layouts on the
    same data should not pay it again.
    """
    wanted = asdict(spec)
    marker = folder / MARKER
    if marker.exists():
        made = json.loads(marker.read_text())
        if made["spec"] == wanted:
            return made["data"]
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.parquet"):
        old.unlink()
    generated = generate(folder, spec)
    marker.write_text(json.dumps({"spec": wanted, "data": generated}))
    return generated
