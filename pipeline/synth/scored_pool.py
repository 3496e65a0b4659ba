"""A synthetic scored run of N rows, for the pool stages' scale benchmark.

Scored shards as `winnow run` writes them (input columns, status, score and
both embeddings), their commit records, and input shards whose image bytes are
null: the policies under test read no image, so none is made or decoded.

Image embeddings are random unit vectors around `TOPICS` random topics (two
rows of one topic have cosine about 0.5, of two topics about 0). Planted in
them, at positions every generating task can compute on its own:

- near-duplicate pairs: one row in 20 starts a pair whose second row, half the
  pool away, is the first one plus noise (cosine 0.955 to 0.99);
- exact-duplicate pairs: one row in 100 starts a pair whose second row, a
  quarter of the pool away, has the same sha256 and embedding.

Planted rows are scored, captioned and scored high, so that the status,
caption and top-fraction policies before the dedups keep them. Each shard is
made by its own Ray task.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.schema import embedding_column, score_column

SHARD_ROWS = 10_000  # img2dataset's default shard size
TOPICS = 1024
NEAR_EVERY, NEAR_AT = 20, 3
EXACT_EVERY, EXACT_AT = 100, 7
MARKER = "_scored_pool.json"
ALIAS = "clip"


@dataclass(frozen=True, kw_only=True)
class PoolSpec:
    rows: int
    width: int = 512
    seed: int = 0

    @property
    def shards(self) -> int:
        return -(-self.rows // SHARD_ROWS)

    def check(self) -> None:
        if self.rows < EXACT_EVERY * 2 or self.rows % EXACT_EVERY:
            raise ValueError(f"rows: {self.rows} is not a multiple of {EXACT_EVERY} of 200 or more")


def _shift(rows: int, part: int) -> int:
    """How far a pair's second row lies from its first: about rows / part, and an odd
    multiple of half the pattern's period, so that second rows never land on first rows."""
    return (rows // part // EXACT_EVERY) * EXACT_EVERY + EXACT_EVERY // 2


def near_pairs(rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Planted near-duplicate pairs: (first rows, second rows), global row indices."""
    first = np.arange(NEAR_AT, rows, NEAR_EVERY)
    return first, (first + _shift(rows, 2)) % rows


def exact_pairs(rows: int) -> tuple[np.ndarray, np.ndarray]:
    first = np.arange(EXACT_AT, rows, EXACT_EVERY)
    return first, (first + _shift(rows, 4)) % rows


def _touching(first: np.ndarray, second: np.ndarray, start: int, stop: int) -> np.ndarray:
    """The pairs with a row in [start, stop)."""
    inside = ((first >= start) & (first < stop)) | ((second >= start) & (second < stop))
    return np.flatnonzero(inside)


def key(index: int) -> str:
    return f"{index:010d}"


def _unit(values: np.ndarray) -> np.ndarray:
    return values / np.linalg.norm(values, axis=-1, keepdims=True)


def _around(topics: np.ndarray, rng: np.random.Generator, count: int) -> np.ndarray:
    width = topics.shape[1]
    chosen = topics[rng.integers(len(topics), size=count)]
    return _unit(chosen + rng.standard_normal((count, width)) / np.sqrt(width))


def _planted(spec: PoolSpec, topics: np.ndarray, kind: int, pair: int) -> np.ndarray:
    return _around(topics, np.random.default_rng([spec.seed, kind, pair]), 1)[0]


def _near_copy(spec: PoolSpec, vector: np.ndarray, pair: int) -> np.ndarray:
    rng = np.random.default_rng([spec.seed, 2, pair])
    noise = rng.uniform(0.15, 0.28) * rng.standard_normal(len(vector)) / np.sqrt(len(vector))
    return _unit(vector + noise)


def shard_rows(spec: PoolSpec, shard: int) -> dict[str, Any]:
    """One shard's columns, as numpy arrays and lists."""
    start, stop = shard * SHARD_ROWS, min((shard + 1) * SHARD_ROWS, spec.rows)
    count = stop - start
    topics = _unit(np.random.default_rng(spec.seed).standard_normal((TOPICS, spec.width)))
    rng = np.random.default_rng([spec.seed, 0, shard])
    image = _around(topics, rng, count)
    text = _unit(rng.standard_normal((count, spec.width)))
    scores = np.clip(rng.normal(0.30, 0.05, count), -1, 1)
    failed = rng.random(count) < 0.03
    no_caption = rng.random(count) < 0.02
    sha = [hashlib.sha256(f"{spec.seed}-{start + i}".encode()).hexdigest() for i in range(count)]
    planted = np.zeros(count, bool)
    first, second = near_pairs(spec.rows)
    for pair in _touching(first, second, start, stop):
        vector = _planted(spec, topics, 1, pair)
        for index, value in ((first[pair], vector), (second[pair], None)):
            if start <= index < stop:
                image[index - start] = _near_copy(spec, vector, pair) if value is None else value
                planted[index - start] = True
    first, second = exact_pairs(spec.rows)
    for pair in _touching(first, second, start, stop):
        for index in (first[pair], second[pair]):
            if start <= index < stop:
                image[index - start] = _planted(spec, topics, 3, pair)
                sha[index - start] = hashlib.sha256(
                    f"exact-{spec.seed}-{pair}".encode()
                ).hexdigest()
                planted[index - start] = True
    failed &= ~planted
    no_caption &= ~planted
    scores[planted] = rng.uniform(0.40, 0.45, int(planted.sum()))
    return {
        "key": [key(start + i) for i in range(count)],
        "url": [f"https://example.com/{start + i}.jpg" for i in range(count)],
        "caption": ["" if n else f"a photo of thing {start + i}" for i, n in enumerate(no_caption)],
        "sha256": sha,
        "failed": failed,
        "score": scores,
        "image": image,
        "text": text,
    }


def _embeddings(values: np.ndarray, failed: np.ndarray) -> pa.Array:
    flat = pa.array(values.astype(np.float16).ravel())
    return pa.FixedSizeListArray.from_arrays(flat, values.shape[1], mask=pa.array(failed))


def write_shard(spec: PoolSpec, shard: int, root: str) -> int:
    """Ray task: write shard `shard`'s input, scored output and commit record."""
    data = shard_rows(spec, shard)
    failed = data["failed"]
    name = f"{shard:05d}"
    inputs = pa.table(
        {
            "key": data["key"],
            "url": data["url"],
            "caption": data["caption"],
            "sha256": data["sha256"],
            "status": pa.array(np.where(failed, "failed_to_download", "success")),
            "error_message": pa.array([("HTTP Error 404" if f else None) for f in failed]),
        }
    )
    folder = Path(root)
    pq.write_table(
        inputs.append_column("jpg", pa.nulls(inputs.num_rows, pa.binary())),
        folder / "input" / f"{name}.parquet",
    )
    scored = inputs.append_column(
        "winnow_status", pa.array(np.where(failed, "upstream_failed", "ok"))
    )
    scored = scored.append_column(
        "winnow_error", pa.array([("HTTP Error 404" if f else None) for f in failed])
    )
    scored = scored.append_column(
        score_column(ALIAS), pa.array(data["score"].astype(np.float32), mask=failed)
    )
    for tower in ("image", "text"):
        scored = scored.append_column(
            embedding_column(ALIAS, tower), _embeddings(data[tower], failed)
        )
    pq.write_table(scored, folder / "out" / "scored" / f"{name}.parquet")
    record = {
        "shard": name,
        "rows": scored.num_rows,
        "committed_at": datetime.now(timezone.utc).isoformat(),
    }
    (folder / "out" / "stats" / f"{name}.json").write_text(json.dumps(record))
    return scored.num_rows


def make_pool(spec: PoolSpec, root: Path) -> None:
    """The run under `root` (input/, out/), made by Ray tasks unless a finished one is there."""
    import ray

    spec.check()
    marker = root / MARKER
    if marker.exists() and json.loads(marker.read_text()) == spec.__dict__:
        return
    for folder in ("input", "out/scored", "out/stats"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    write = ray.remote(num_cpus=1)(write_shard)
    ray.get([write.remote(spec, shard, str(root)) for shard in range(spec.shards)])
    marker.write_text(json.dumps(spec.__dict__))
