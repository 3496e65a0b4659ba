"""Writing one scored shard: model output joined back to the input, span by span.

Model output arrives in input order, a batch at a time. Once every row of a
span (consecutive input row groups, as the read tasks have them) has arrived,
its other columns are read again (a narrow read: no image bytes unless asked
for, read ahead for the next spans) and the joined rows are written as one row
group, so memory holds one span of output and at most `READ_AHEAD_ROWS` rows of
those columns. A row group too large for one span is read again and written a
piece at a time, as the read tasks read it. The file is written under a
temporary name and committed only once all rows are in.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import Executor, Future
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.config import WinnowConfig
from pipeline.io.formats import ParquetWriter
from pipeline.io.layout import OutputLayout
from pipeline.io.reader import read_input_pieces, read_input_row_groups
from pipeline.io.shards import Shard, Span, span_rows
from pipeline.io.stats import ShardStats
from pipeline.schema import ERROR, INTERNAL, ROW, STATUS, embedding_column, score_column

METADATA_KEY = b"winnow"
# Rows whose other columns one read fetches ahead, several spans' worth, when no image
# bytes are kept (those columns are a few hundred bytes a row): each exact read from object
# storage pays a footer sample and its own round of requests (on a local S3 server, the
# writer made 820 rows/s so against 590 reading span by span).
READ_AHEAD_ROWS = 16384


class ShardError(RuntimeError):
    """This shard cannot be completed; the others carry on."""


def output_schema(
    input_schema: pa.Schema, config: WinnowConfig, dims: dict[str, int], metadata: dict[str, Any]
) -> pa.Schema:
    """Input columns (image bytes only if kept), then status, error, each model's columns,
    and the heads and concepts."""
    fields = [
        f
        for f in input_schema
        if config.output.keep_image_bytes or f.name != config.input.image_column
    ]
    fields += [
        pa.field(config.output.status_column, pa.string()),
        pa.field(config.output.error_column, pa.string()),
    ]
    value_type = pa.float16() if config.output.embedding_dtype == "float16" else pa.float32()
    for model in config.models:
        fields.append(pa.field(score_column(model.alias), pa.float32()))
        for tower in ("image", "text"):
            kind = pa.list_(value_type, dims[model.alias])
            fields.append(pa.field(embedding_column(model.alias, tower), kind))
    fields += [pa.field(column.name, pa.float32()) for column in config.columns()]
    return pa.schema(fields, metadata={METADATA_KEY: json.dumps(metadata, default=str).encode()})


class ShardWriter:
    def __init__(
        self,
        *,
        shard: Shard,
        layout: OutputLayout,
        config: WinnowConfig,
        dims: dict[str, int],
        metadata: dict[str, Any],
    ) -> None:
        self.shard, self.layout, self.config = shard, layout, config
        self.models = metadata["models"]
        self.columns = metadata.get("columns", {})  # each head's and concept's digest
        self.schema = output_schema(shard.schema, config, dims, metadata)
        added = set(config.added_columns())
        self.input_columns = [name for name in self.schema.names if name not in added]
        self.output = ParquetWriter(
            fs=layout.fs, final=layout.scored(shard.name), schema=self.schema
        )
        self.spans = shard.spans(rows=span_rows(config))
        self.ahead = READ_AHEAD_ROWS if not config.output.keep_image_bytes else 0
        self.inputs: tuple[int, pa.Table] | None = None  # (first row, rows read ahead)
        self.prefetched: tuple[int, Future[pa.Table]] | None = None  # (first row, its read)
        # A large row group's input being read: (its first row, its pieces, rows held).
        self.pieces: tuple[int, Iterator[pa.Table], list[pa.Table]] | None = None
        self.pending: list[pa.Table] = []
        self.next_row = 0  # rows arrived
        self.written = 0  # rows written
        self.stats = ShardStats()
        self.started: float | None = None

    @property
    def done(self) -> bool:
        return self.next_row == self.shard.num_rows

    def add(self, outputs: pa.Table) -> None:
        rows = outputs[ROW].to_numpy()
        expected = np.arange(self.next_row, self.next_row + len(rows))
        if not np.array_equal(rows, expected):
            raise ShardError(
                f"rows out of sequence: expected row {self.next_row}, got {int(rows[0])}"
            )
        self.started = self.started or time.monotonic()
        self.pending.append(outputs)
        self.next_row += len(rows)
        while self.spans:
            span = self.spans[0]
            end = span.first_row + span.rows
            ready = min(self.next_row, end) - self.written
            if ready < min(span.piece, end - self.written):
                break
            self._write(span, min(ready, span.piece))
            if self.written == end:
                self.spans.pop(0)

    def _write(self, span: Span, rows: int) -> None:
        """Join the next `rows` rows of output (all in `span`) to their input and write
        them as one row group."""
        pending = pa.concat_tables(self.pending)
        consumed = pending.slice(0, rows)
        self.pending = [pending.slice(rows)] if pending.num_rows > rows else []
        inputs = self._inputs(span, rows)
        self.written += rows
        columns = {name: inputs[name] for name in self.input_columns}
        renamed = {STATUS: self.config.output.status_column, ERROR: self.config.output.error_column}
        for name in consumed.column_names:
            if not name.startswith(INTERNAL) or name in renamed:
                columns[renamed.get(name, name)] = consumed[name]
        table = pa.table(columns).select(self.schema.names).cast(self.schema)
        self.stats.add(
            table,
            status_column=self.config.output.status_column,
            aliases=[m.alias for m in self.config.models],
        )
        self.output.write(table)

    def _inputs(self, span: Span, rows: int) -> pa.Table:
        """The span's other input columns for its next `rows` rows to write. `span` is
        the first of `self.spans`: the one being written."""
        if span.in_pieces:
            return self._piece_inputs(span, rows)
        if self.inputs is None or span.first_row >= self.inputs[0] + self.inputs[1].num_rows:
            fetched = self.prefetched
            self.prefetched = None
            if fetched is not None and fetched[0] == span.first_row:
                table = fetched[1].result()
            else:
                table = self._read(self._groups_from(span))
            self.inputs = (span.first_row, table)
        first, table = self.inputs
        return table.slice(self.written - first, rows)

    def prefetch(self, pool: Executor) -> None:
        """Start the first read of the other input columns in `pool`, so that the shard's
        first span does not wait for it (on object storage, that read is most of the time
        the writer spends on a small shard)."""
        if self.prefetched is None and self.inputs is None and self.ahead and self.spans:
            span = self.spans[0]
            if not span.in_pieces:
                future = pool.submit(self._read, self._groups_from(span))
                self.prefetched = (span.first_row, future)

    def _groups_from(self, span: Span) -> list[int]:
        """The row groups of `span` (the one being written) and of the spans after it
        that one read fetches ahead."""
        spans = [span]
        for later in self.spans[1:]:
            too_far = later.first_row + later.rows - span.first_row > self.ahead
            # A span read in pieces reads its own input (`_piece_inputs`).
            if too_far or later.in_pieces:
                break
            spans.append(later)
        return [group for each in spans for group in each.row_groups]

    def _read(self, groups: list[int]) -> pa.Table:
        return read_input_row_groups(
            self.shard.url,
            groups,
            columns=self.input_columns,
            storage_options=self.config.input.storage_options,
            exact=True,
        )

    def _piece_inputs(self, span: Span, rows: int) -> pa.Table:
        """The next `rows` input rows of a row group too large to hold whole (image bytes
        too, where kept), read a piece at a time as the span is written."""
        if self.pieces is None or self.pieces[0] != span.first_row:
            tables = read_input_pieces(
                self.shard.url,
                list(span.row_groups),
                columns=self.input_columns,
                storage_options=self.config.input.storage_options,
                piece=span.piece,
            )
            self.pieces = (span.first_row, tables, [])
        first, tables, held = self.pieces
        while sum(table.num_rows for table in held) < rows:
            table = next(tables, None)
            if table is None:
                raise ShardError(f"rows from {self.written} on are missing from the input")
            held.append(table)
        table = pa.concat_tables(held)
        self.pieces = (first, tables, [table.slice(rows)])
        return table.slice(0, rows)

    def commit(self) -> dict[str, Any]:
        """Move the finished file into place, then write the stats marker that commits it."""
        if not self.done:
            raise ShardError(f"only {self.next_row} of {self.shard.num_rows} rows were scored")
        self.output.commit()
        record = {
            "shard": self.shard.name,
            "input": self.shard.url,
            "input_fingerprint": self.shard.fingerprint,
            "output": self.layout.fs.unstrip_protocol(self.output.final),
            "committed_at": datetime.now(timezone.utc).isoformat(),
            "seconds": round(time.monotonic() - (self.started or time.monotonic()), 3),
            "models": self.models,
            "columns": self.columns,
            **self.stats.to_json(),
        }
        self.layout.write_json(self.layout.stats(self.shard.name), record)
        return record

    def abort(self) -> None:
        self.output.abort()
