"""The pool: every committed shard's rows, as a Ray Dataset, for policies that fit globally.

Each shard is read by a Ray task that also applies the policies placed before
the one being fitted, so a dedup policy fits on the rows that survive them. A policy
whose `fit_on_survivors` is False (top fraction: DataComp's rule) fits on every
scored row instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from pipeline.config import WinnowConfig
from pipeline.filters.apply import ShardRef, evaluate, shard_tables
from pipeline.filters.base import Policy
from pipeline.schema import ROW, SHARD_NAME

POOL_CPUS = 0.5


def _pool_stage(
    batch: dict[str, Any],
    *,
    config: WinnowConfig,
    before: list[Policy],
    columns: list[str],
    reads: list[str] | None,
    with_image: bool,
) -> Iterator[pa.Table]:
    for name, scored, source in zip(batch["name"], batch["scored"], batch["input"], strict=True):
        ref = ShardRef(name=str(name), scored=str(scored), input=str(source))
        for table in shard_tables(ref, config, columns=reads, with_image=with_image):
            keep, _, _ = evaluate(table, before)
            yield table.filter(pa.array(keep)).select(columns)


def pool_dataset(
    refs: list[ShardRef], config: WinnowConfig, *, before: list[Policy], columns: list[str]
) -> Any:
    """A Ray Dataset of `columns` for the rows of every shard that `before` keeps."""
    import ray.data

    items = [{"name": r.name, "scored": r.scored, "input": r.input} for r in refs]
    with_image = any(p.needs_image_bytes() for p in before)
    # Only the columns the fit and the policies before it read (a scored shard's
    # embeddings are most of its bytes), unless one of them reads them all.
    needs = [[c for c in columns if c not in (SHARD_NAME, ROW)], *(p.reads() for p in before)]
    reads = None if None in needs else list(dict.fromkeys(c for n in needs for c in n or []))
    return ray.data.from_items(items, override_num_blocks=max(1, len(items))).map_batches(
        _pool_stage,
        batch_size=1,
        batch_format="numpy",
        num_cpus=POOL_CPUS,
        fn_kwargs={
            "config": config,
            "before": before,
            "columns": columns,
            "reads": reads,
            "with_image": with_image,
        },
    )
