"""Applying policies to one shard: read scored rows and image bytes, decide, write both sides.

The scored shard holds every input row in input order, so the input's image
bytes join back by position, one input row group at a time.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import WinnowConfig
from pipeline.filters.base import Policy
from pipeline.io.formats import ParquetWriter
from pipeline.io.layout import OutputLayout
from pipeline.io.reader import PIECE_BUFFER
from pipeline.io.shards import SPAN_BYTES, open_fs, open_without_readahead
from pipeline.schema import IMAGE_BYTES, ROW, SHARD_NAME, embedding_column, score_column

# Rows the filter decides and writes at a time (fewer where the images would be large).
PIECE_ROWS = 256


@dataclass(frozen=True, kw_only=True)
class ShardRef:
    """A committed shard: its name, its scored output and its input."""

    name: str
    scored: str
    input: str


def shard_tables(
    ref: ShardRef, config: WinnowConfig, *, columns: list[str] | None, with_image: bool
) -> Iterator[pa.Table]:
    """The scored rows of a shard, in input order, with shard name and row number attached:
    a piece at a time, so that neither a scored file nor an input row group of images
    (pyarrow's writer puts up to 1Mi rows in one) is held whole."""
    fs, path = open_fs(ref.scored, config.output.storage_options)
    image_column = config.input.image_column
    with open_without_readahead(fs, path) as handle:
        scored = pq.ParquetFile(handle, pre_buffer=False, buffer_size=PIECE_BUFFER)
        tables = _pieces(scored, columns)
        if not with_image or image_column in scored.schema_arrow.names:
            pairs = ((t, t[image_column] if with_image else None) for t in tables)
            yield from _tagged(ref.name, pairs)
            return
        in_fs, in_path = open_fs(ref.input, config.input.storage_options)
        with open_without_readahead(in_fs, in_path) as in_handle:
            source = pq.ParquetFile(in_handle, pre_buffer=False, buffer_size=PIECE_BUFFER)
            if source.metadata.num_rows != scored.metadata.num_rows:
                raise ValueError(
                    f"input {ref.input} has {source.metadata.num_rows} rows but its scored "
                    f"output has {scored.metadata.num_rows}; rerun `winnow run` to score it "
                    "again"
                )
            images = (table[image_column] for table in _pieces(source, [image_column]))
            yield from _tagged(ref.name, _zip_rows(tables, images))


def _pieces(parquet: pq.ParquetFile, columns: list[str] | None) -> Iterator[pa.Table]:
    """`columns` of a file, `PIECE_ROWS` rows at a time or fewer where those would hold
    more than `SPAN_BYTES` (large photos); a file without rows as one empty table."""
    total = parquet.metadata.num_rows
    if not total:
        empty = parquet.schema_arrow.empty_table()
        yield empty if columns is None else empty.select(columns)
        return
    groups = range(parquet.num_row_groups)
    nbytes = sum(parquet.metadata.row_group(group).total_byte_size for group in groups)
    rows = max(1, min(PIECE_ROWS, SPAN_BYTES * total // max(nbytes, 1)))
    for batch in parquet.iter_batches(batch_size=rows, columns=columns):
        if batch.num_rows:
            yield pa.Table.from_batches([batch])


def _zip_rows(
    tables: Iterator[pa.Table], arrays: Iterator[pa.ChunkedArray]
) -> Iterator[tuple[pa.Table, pa.ChunkedArray]]:
    """Equal slices of two streams of the same rows, cut in different places."""
    table, array = next(tables, None), next(arrays, None)
    while table is not None and array is not None:
        rows = min(table.num_rows, len(array))
        yield table.slice(0, rows), array.slice(0, rows)
        table = table.slice(rows) if table.num_rows > rows else next(tables, None)
        array = array.slice(rows) if len(array) > rows else next(arrays, None)


def _tagged(name: str, pairs: Iterator[tuple[pa.Table, Any]]) -> Iterator[pa.Table]:
    """Each table with its shard name, its row numbers and (where given) its image bytes."""
    start = 0
    for table, images in pairs:
        rows = table.num_rows
        table = table.append_column(SHARD_NAME, pa.array([name] * rows, pa.string()))
        table = table.append_column(ROW, pa.array(np.arange(start, start + rows), pa.int64()))
        yield table if images is None else table.append_column(IMAGE_BYTES, images)
        start += rows


def evaluate(
    table: pa.Table, policies: list[Policy], *, seconds: Counter[str] | None = None
) -> tuple[np.ndarray, list[str | None], list[str | None]]:
    """Keep mask, and for rejected rows the first policy that rejected them and why;
    `seconds` adds up the time each policy takes to decide."""
    alive = np.ones(table.num_rows, bool)
    rejected_by: list[str | None] = [None] * table.num_rows
    reasons: list[str | None] = [None] * table.num_rows
    for policy in policies:
        index = np.flatnonzero(alive)
        if not len(index):
            break
        started = time.perf_counter()
        verdict = policy.decide(table.take(pa.array(index)))
        if seconds is not None:
            seconds[policy.name] += time.perf_counter() - started
        for position in np.flatnonzero(~verdict.keep):
            row = int(index[position])
            rejected_by[row], reasons[row] = policy.name, verdict.reasons[position]
        alive[index[~verdict.keep]] = False
    return alive, rejected_by, reasons


def output_columns(
    config: WinnowConfig, scored_schema: pa.Schema, input_schema: pa.Schema
) -> list[str]:
    """Input columns in input order (image bytes included), then status, error, scores,
    and the heads and concepts."""
    added = [config.output.status_column, config.output.error_column]
    for model in config.models:
        added.append(score_column(model.alias))
        if config.output.filtered_embeddings:
            added += [embedding_column(model.alias, "image"), embedding_column(model.alias, "text")]
    added += [column.name for column in config.columns()]
    inputs = [
        n for n in input_schema.names if n in scored_schema.names or n == config.input.image_column
    ]
    return inputs + added


def filter_shard(ref: ShardRef, config: WinnowConfig, policies: list[Policy]) -> dict[str, Any]:
    """Write filtered/ (and rejected/) for one shard; return its filter stats."""
    layout = OutputLayout(root=config.output.path, storage_options=config.output.storage_options)
    in_fs, in_path = open_fs(ref.input, config.input.storage_options)
    with in_fs.open(in_path, "rb") as handle:
        input_schema = pq.read_schema(handle)
    fs, path = open_fs(ref.scored, config.output.storage_options)
    with fs.open(path, "rb") as handle:
        scored_schema = pq.read_schema(handle)
    columns = output_columns(config, scored_schema, input_schema)
    kept_out = ParquetWriter(fs=layout.fs, final=layout.filtered(ref.name))
    rejected_out = (
        ParquetWriter(fs=layout.fs, final=layout.rejected(ref.name))
        if config.output.write_rejected
        else None
    )
    outputs = [kept_out, *([rejected_out] if rejected_out else [])]
    removed: Counter[str] = Counter()
    seconds: Counter[str] = Counter()
    kept_rows = rejected_rows = 0
    try:
        # A shard yields at least one table (an empty one if it has no rows), so each
        # output is written at least once and has its schema.
        for table in shard_tables(ref, config, columns=None, with_image=True):
            table = (
                table.drop_columns([config.input.image_column])
                if config.input.image_column in table.column_names
                else table
            )
            table = table.append_column(config.input.image_column, table[IMAGE_BYTES])
            keep, rejected_by, reasons = evaluate(table, policies, seconds=seconds)
            removed.update(r for r in rejected_by if r)
            out = table.select(columns)
            kept_out.write(out.filter(pa.array(keep)))
            kept_rows += int(keep.sum())
            rejected_rows += int((~keep).sum())
            if rejected_out is not None:
                drop = pa.array(~keep)
                rejected = out.filter(drop)
                rejected = rejected.append_column(
                    config.output.rejected_by_column,
                    pa.array(rejected_by, pa.string()).filter(drop),
                ).append_column(
                    config.output.reject_reason_column, pa.array(reasons, pa.string()).filter(drop)
                )
                rejected_out.write(rejected)
        for output in outputs:
            output.commit()
    except BaseException:
        for output in outputs:
            output.abort()
        raise
    return {
        "kept": kept_rows,
        "rejected": rejected_rows,
        "removed_by": {p.name: removed.get(p.name, 0) for p in policies},
        "seconds_by": {p.name: round(seconds.get(p.name, 0.0), 4) for p in policies},
    }
