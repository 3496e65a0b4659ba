"""`exact_dedup`: exact duplicates, the same image bytes (sha256) or the same URL; the
smallest id is kept.

A distributed group-by: Ray tasks hash each key into a bucket, Ray Data groups
the rows by bucket, and each bucket's task sorts its rows by key and id and
drops all but the first of each key. No process holds more than a bucket.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from pipeline.config import FilterSpec, WinnowConfig
from pipeline.filters.base import DropListPolicy
from pipeline.filters.drops import drop_table
from pipeline.schema import BUCKET, ROW, SHARD_NAME

# Rows per bucket on average: a bucket's keys, ids and row numbers, some 30 MB.
BUCKET_ROWS = 1 << 18


class ExactDedupFilter(FilterSpec):
    type: Literal["exact_dedup"]
    by: Literal["sha256", "url"] = "sha256"
    column: str | None = Field(default=None, description="Defaults to the img2dataset column.")


def stable_bucket(value: Any, buckets: int) -> int:
    """A key's bucket, the same in every process (Python's own hash of a str is not)."""
    digest = hashlib.blake2b(str(value).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % buckets


def _bucketed(table: pa.Table, *, key: str, buckets: int) -> pa.Table:
    table = table.filter(pc.is_valid(table[key]))
    labels = [stable_bucket(v, buckets) for v in table[key].to_pylist()]
    return table.append_column(BUCKET, pa.array(labels, pa.int64()))


def _dedup_bucket(table: pa.Table, *, key: str, id_column: str | None, by: str) -> pa.Table:
    """Ray Data group stage: every row of a bucket but the first (by id) of each key."""
    order = [(key, "ascending"), *([(id_column, "ascending")] if id_column else [])]
    table = table.sort_by([*order, (SHARD_NAME, "ascending"), (ROW, "ascending")])
    keys = table[key].combine_chunks()
    count = table.num_rows
    same = np.zeros(count, bool)
    if count > 1:
        same[1:] = pc.equal(keys.slice(1), keys.slice(0, count - 1)).to_numpy(zero_copy_only=False)
    first = np.maximum.accumulate(np.where(same, 0, np.arange(count)))
    dropped = np.flatnonzero(same)
    kept = pa.array(first[dropped])
    names, rows = table[SHARD_NAME].to_pylist(), table[ROW].to_pylist()
    kept_names, kept_rows = table[SHARD_NAME].take(kept), table[ROW].take(kept)
    kept_ids = table[id_column].take(kept).to_pylist() if id_column else [None] * len(dropped)
    kept_names, kept_rows = kept_names.to_pylist(), kept_rows.to_pylist()
    reasons = [
        f"same {by} as {i if i is not None else f'{n} row {r}'}"
        for i, n, r in zip(kept_ids, kept_names, kept_rows, strict=True)
    ]
    return drop_table(
        [names[d] for d in dropped],
        [rows[d] for d in dropped],
        reasons,
        (kept_ids, kept_names, kept_rows),
    )


class ExactDedupPolicy(DropListPolicy, spec=ExactDedupFilter):
    def __init__(self, spec: Any, config: WinnowConfig) -> None:
        super().__init__(spec, config)
        self.key = spec.column or spec.by
        self.id_column = config.input.id_column

    def input_columns(self) -> list[str]:
        return [self.key]

    @property
    def columns(self) -> list[str]:
        return list(dict.fromkeys([self.key, self.id_column or self.key, SHARD_NAME, ROW]))

    def find_drops(self, pool: Any) -> Any:
        pool = pool.materialize()
        self.fitted_rows = pool.count()
        if not self.fitted_rows:
            return None
        buckets = math.ceil(self.fitted_rows / BUCKET_ROWS)
        return (
            pool.map_batches(
                _bucketed, batch_format="pyarrow", fn_kwargs={"key": self.key, "buckets": buckets}
            )
            .groupby(BUCKET, num_partitions=buckets)
            .map_groups(
                _dedup_bucket,
                batch_format="pyarrow",
                fn_kwargs={"key": self.key, "id_column": self.id_column, "by": self.spec.by},
            )
        )
