"""Reading shards: the narrow stream for the model, and the rest for the writer.

Only what the model needs travels through Ray (image bytes, caption bytes,
upstream status), under fixed internal names and types, so shards whose
schemas differ still batch together. Every row carries its shard index and
row number; the writer uses them to join the model's output back to the other
input columns, in input order, and to notice a row that went missing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem
from fsspec.parquet import open_parquet_file

from pipeline.config import InputConfig
from pipeline.io.retry import retrying, retrying_rows
from pipeline.io.shards import describe_groups, open_fs, open_without_readahead
from pipeline.schema import CAPTION, IMAGE, ROW, SHARD, UPSTREAM_ERROR, UPSTREAM_OK

log = logging.getLogger(__name__)

UPSTREAM_SUCCESS = "success"
# Bytes an exact read fetches from a file's end for its footer, in one request with its
# data (fsspec's default is 1 MB): img2dataset's footer is about 1.1 KB a row group.
FOOTER_SAMPLE = 256 * 1024
# What a read in pieces fetches of a column at a time: pyarrow otherwise fetches every
# column chunk of a row group whole before decoding any of it (200 MB of Arrow memory for
# a 175 MB row group of images, against 30 MB so).
PIECE_BUFFER = 8 * 2**20


def read_input_row_groups(
    url: str,
    row_groups: list[int],
    *,
    columns: list[str] | None,
    storage_options: dict[str, Any],
    exact: bool = False,
) -> pa.Table:
    """Row groups in one read; `columns` the shard lacks are left out rather than failing it.

    `exact`: on object storage, fetch just these columns' byte ranges, several at once: a
    narrow read through a plain open's read-ahead downloads the image bytes between them.
    """
    fs, path = open_fs(url, storage_options)

    def opened() -> Any:
        if exact and not isinstance(fs, LocalFileSystem):
            return open_parquet_file(
                path,
                fs=fs,
                columns=columns,
                row_groups=row_groups,
                engine="pyarrow",
                footer_sample_size=FOOTER_SAMPLE,
            )
        return open_without_readahead(fs, path)

    def read() -> pa.Table:
        with opened() as handle:
            parquet = pq.ParquetFile(handle)
            present = _present(parquet, columns)
            # One group at a time: faster than one read_row_groups call (26k against 19k
            # rows/s on img2dataset's row groups).
            return pa.concat_tables(parquet.read_row_group(g, columns=present) for g in row_groups)

    return retrying(read, what=f"reading {url} {describe_groups(row_groups)}")


def read_input_pieces(
    url: str,
    row_groups: list[int],
    *,
    columns: list[str] | None,
    storage_options: dict[str, Any],
    piece: int,
) -> Iterator[pa.Table]:
    """Row groups as tables of at most `piece` rows, each read as it is given, so that a
    row group too large to hold whole (see `SPAN_BYTES`) never is."""
    fs, path = open_fs(url, storage_options)

    def tables(skip: int) -> Iterator[pa.Table]:
        with open_without_readahead(fs, path) as handle:
            parquet = pq.ParquetFile(handle, pre_buffer=False, buffer_size=PIECE_BUFFER)
            for batch in parquet.iter_batches(
                batch_size=piece, row_groups=row_groups, columns=_present(parquet, columns)
            ):
                if skip < batch.num_rows:
                    yield pa.Table.from_batches([batch.slice(skip)])
                skip = max(0, skip - batch.num_rows)

    return retrying_rows(tables, what=f"reading {url} {describe_groups(row_groups)}")


def _present(parquet: pq.ParquetFile, columns: list[str] | None) -> list[str] | None:
    """`columns` without those the shard lacks (None: all of them)."""
    names = parquet.schema_arrow.names
    return None if columns is None else [c for c in columns if c in names]


def task_groups(task: dict[str, Any]) -> list[int]:
    """The row groups a read task covers (see `Shard.read_tasks`)."""
    return list(range(task["first_group"], task["first_group"] + task["groups"]))


def image_bytes(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """An image column as binary: as it is, or the `bytes` field of Hugging Face
    datasets' image struct (`{bytes, path}`)."""
    if pa.types.is_struct(column.type) and column.type.get_field_index("bytes") >= 0:
        return pc.struct_field(column, "bytes")
    return column


def unreadable_columns(schema: pa.Schema, source: InputConfig) -> str | None:
    """Why a shard's image or caption column cannot be read as bytes, or None: the model
    stages would refuse every row group, so the shard fails up front, saying what to set."""
    for role, name in (("image", source.image_column), ("caption", source.caption_column)):
        if name not in schema.names:
            continue
        empty = pa.array([], schema.field(name).type)
        try:
            (image_bytes(empty) if role == "image" else empty).cast(pa.large_binary())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            wanted = "binary, or a {bytes, path} struct" if role == "image" else "string"
            return (
                f"column {name!r} is {schema.field(name).type}, which cannot be read as the "
                f"{role}s ({wanted}); set input.{role}_column to the {role}s' column"
            )
    return None


def model_inputs(table: pa.Table, task: dict[str, Any], source: InputConfig) -> pa.Table:
    """Project a row group to the internal columns the model stages read."""
    rows = table.num_rows
    first = task["first_row"]
    names = set(table.column_names)
    upstream_ok = pa.array([True] * rows)
    upstream_error = pa.nulls(rows, pa.string())
    if source.upstream_status_column and source.upstream_status_column in names:
        status = table[source.upstream_status_column].cast(pa.string())
        upstream_ok = pc.fill_null(pc.equal(status, UPSTREAM_SUCCESS), False)
        if source.upstream_error_column and source.upstream_error_column in names:
            upstream_error = table[source.upstream_error_column].cast(pa.string())
        detail = pc.binary_join_element_wise("upstream status ", pc.fill_null(status, "null"), "")
        upstream_error = pc.if_else(
            upstream_ok, pa.scalar(None, pa.string()), pc.coalesce(upstream_error, detail)
        )
    return pa.table(
        {
            SHARD: pa.array([task["shard"]] * rows, pa.int32()),
            ROW: pa.array(range(first, first + rows), pa.int64()),
            IMAGE: image_bytes(table[source.image_column]).cast(pa.large_binary()),
            CAPTION: table[source.caption_column].cast(pa.large_binary()),
            UPSTREAM_OK: upstream_ok,
            UPSTREAM_ERROR: upstream_error,
        }
    )


def read_model_inputs(task: dict[str, Any], source: InputConfig) -> Iterator[pa.Table]:
    """One read task's row groups as the model stages' columns: in one table, or for a
    row group too large for one read, a piece at a time."""
    columns = [source.image_column, source.caption_column]
    columns += [c for c in (source.upstream_status_column, source.upstream_error_column) if c]
    where = {"columns": columns, "storage_options": source.storage_options}
    if task["piece"] >= task["rows"]:
        yield model_inputs(
            read_input_row_groups(task["url"], task_groups(task), **where), task, source
        )
        return
    first = task["first_row"]
    for table in read_input_pieces(task["url"], task_groups(task), piece=task["piece"], **where):
        yield model_inputs(table, {**task, "first_row": first}, source)
        first += table.num_rows


def read_stage(batch: dict[str, Any], *, source: InputConfig) -> Iterator[pa.Table]:
    """Ray Data stage: each incoming row is a read task; yield its table (or pieces).

    Row groups that cannot be read yield nothing (from where they failed): the
    writer sees the gap, fails that shard with the reason, and the other shards
    carry on.
    """
    keys = ("shard", "url", "first_group", "groups", "first_row", "rows", "piece")
    for values in zip(*(batch[k] for k in keys), strict=True):
        task = {
            k: (v.item() if hasattr(v, "item") else v) for k, v in zip(keys, values, strict=True)
        }
        try:
            yield from read_model_inputs(task, source)
        except Exception as error:  # reported per shard by the writer
            where = describe_groups(task_groups(task))
            log.warning("cannot read %s %s: %s", task["url"], where, error)
