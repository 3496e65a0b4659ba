"""Drop lists of the dedup policies, kept as Parquet under the output root.

A dedup's fit ends with a Ray Dataset of the rows to drop (shard, row, reason,
and the row each matched). Ray tasks group it by shard and write one file per
shard with drops, `OUT/_pool/<policy>/<shard>.parquet`, so the driver keeps
only each shard's count and digest, and each filter task reads its own shard's
file alone. A row found twice (semantic dedup compares rows near a cluster
border in two clusters) keeps the reason naming the smallest match.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.io.formats import ParquetWriter
from pipeline.io.shards import open_fs
from pipeline.schema import DROP_REASON, DROP_ROW, MATCH, REASON, ROW, SHARD_NAME

WRITE_CPUS = 0.5


@dataclass(frozen=True, slots=True)
class ShardDrops:
    count: int
    sha256: str


def drop_table(
    names: list[str],
    rows: list[int],
    reasons: list[str],
    matches: tuple[list[Any], list[str], list[int]],
) -> pa.Table:
    """The drop rows one dedup task found, with what each matched."""
    match_id, match_shard, match_row = matches
    return pa.table(
        {
            SHARD_NAME: pa.array(names, pa.string()),
            ROW: pa.array(rows, pa.int64()),
            REASON: pa.array(reasons, pa.string()),
            MATCH[0]: pa.array([None if m is None else str(m) for m in match_id], pa.string()),
            MATCH[1]: pa.array(match_shard, pa.string()),
            MATCH[2]: pa.array(match_row, pa.int64()),
        }
    )


def _first_per_row(table: pa.Table) -> pa.Table:
    """One reason per row: the one whose match sorts first."""
    table = table.sort_by([(ROW, "ascending"), *((m, "ascending") for m in MATCH)])
    rows = table[ROW].to_numpy()
    if len(rows) < 2:
        return table
    first = pa.array([True, *(rows[1:] != rows[:-1])])
    return table.filter(first)


def _digest(rows: list[int], reasons: list[str]) -> str:
    return hashlib.sha256(json.dumps([rows, reasons]).encode()).hexdigest()


def _write_shard(table: pa.Table, *, folder: str, storage_options: dict[str, Any]) -> pa.Table:
    """Ray Data group stage: one shard's drops, written as its file; returns its summary."""
    name = table[SHARD_NAME][0].as_py()
    table = _first_per_row(table).select([ROW, REASON]).rename_columns([DROP_ROW, DROP_REASON])
    fs, path = open_fs(folder, storage_options)
    writer = ParquetWriter(fs=fs, final=posixpath.join(path, f"{name}.parquet"))
    writer.write(table)
    writer.commit()
    rows, reasons = table[DROP_ROW].to_pylist(), table[DROP_REASON].to_pylist()
    return pa.table({"name": [name], "count": [len(rows)], "sha256": [_digest(rows, reasons)]})


def write_drops(
    drops: Any, *, folder: str, storage_options: dict[str, Any]
) -> dict[str, ShardDrops]:
    """Write a Ray Dataset of drops (see `drop_table`) under `folder`, replacing what an
    earlier fit left there; return each shard's count and digest."""
    fs, path = open_fs(folder, storage_options)
    if fs.exists(path):
        fs.rm(path, recursive=True)
    fs.makedirs(path, exist_ok=True)
    written = drops.groupby(SHARD_NAME).map_groups(
        _write_shard,
        batch_format="pyarrow",
        num_cpus=WRITE_CPUS,
        fn_kwargs={"folder": folder, "storage_options": storage_options},
    )
    shards: dict[str, ShardDrops] = {}
    for batch in written.iter_batches(batch_format="pyarrow", batch_size=None):
        for name, count, digest in zip(
            batch["name"].to_pylist(),
            batch["count"].to_pylist(),
            batch["sha256"].to_pylist(),
            strict=True,
        ):
            shards[name] = ShardDrops(count=count, sha256=digest)
    return shards


def read_drops(folder: str, name: str, storage_options: dict[str, Any]) -> dict[int, str]:
    """One shard's drops: row -> reason."""
    fs, path = open_fs(posixpath.join(folder, f"{name}.parquet"), storage_options)
    with fs.open(path, "rb") as handle:
        table = pq.read_table(handle)
    reasons = pc.cast(table[DROP_REASON], pa.string()).to_pylist()
    return dict(zip(table[DROP_ROW].to_pylist(), reasons, strict=True))
