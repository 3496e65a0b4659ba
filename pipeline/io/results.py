"""A run's results as it left them: its summary, its scored shards, and the input images
its rows came from. The report, the notebooks and `winnow export` read a run through this.

Built to stay fast on tens of millions of rows: the full pass reads only score
and status columns; anything wider (captions, sizes, embeddings, image bytes)
is read from a sample of shards and rows.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.io.credentials import unredacted
from pipeline.io.layout import SCORED, SUMMARY, OutputLayout
from pipeline.io.reader import PIECE_BUFFER, image_bytes
from pipeline.io.shards import open_fs, open_without_readahead
from pipeline.schema import SAMPLE_ROW, SAMPLE_SHARD, score_column

# Scored files read at once.
READ_THREADS = 16
# Rows of image bytes read at a time to find the few wanted.
PIECE_ROWS = 64


@dataclass(kw_only=True)
class Run:
    """A run's output root, its summary, and where its shards came from."""

    layout: OutputLayout
    summary: dict[str, Any]
    # For reading images back from the input shards; by default the run's recorded
    # options, whose credentials are redacted, with credentials from the environment.
    input_storage_options: dict[str, Any] | None = None

    @classmethod
    def open(
        cls,
        output: str,
        storage_options: dict[str, Any] | None = None,
        *,
        input_storage_options: dict[str, Any] | None = None,
    ) -> Run:
        layout = OutputLayout(root=output, storage_options=storage_options or {})
        summary = layout.read_json(layout.path(SUMMARY))
        if summary is None:
            raise FileNotFoundError(
                f"{layout.url(SUMMARY)} not found: is {output} a Winnow output?"
            )
        return cls(layout=layout, summary=summary, input_storage_options=input_storage_options)

    @property
    def aliases(self) -> list[str]:
        return [m["alias"] for m in self.summary["models"]]

    @property
    def added(self) -> list[str]:
        """The columns the run's heads and concepts add."""
        config = self.summary["config"]
        return [c["name"] for c in [*config.get("heads", []), *config.get("concepts", [])]]

    @property
    def shards(self) -> list[str]:
        return list(self.summary["shards"])

    @property
    def status_column(self) -> str:
        return self.summary["config"]["output"]["status_column"]

    @property
    def image_column(self) -> str:
        return self.summary["config"]["input"]["image_column"]

    @property
    def caption_column(self) -> str:
        return self.summary["config"]["input"]["caption_column"]

    def read_scored(self, name: str, columns: list[str] | None) -> pa.Table:
        return self._read(SCORED, name, columns)

    def _read(self, folder: str, name: str, columns: list[str] | None) -> pa.Table:
        path = self.layout.path(folder, f"{name}.parquet")
        with open_without_readahead(self.layout.fs, path) as handle:
            present = pq.read_schema(handle).names
            handle.seek(0)
            wanted = None if columns is None else [c for c in columns if c in present]
            table = pq.read_table(handle, columns=wanted)
        table = table.append_column(SAMPLE_SHARD, pa.array([name] * table.num_rows, pa.string()))
        return table.append_column(SAMPLE_ROW, pa.array(np.arange(table.num_rows), pa.int64()))

    def _read_scored(self, names: list[str], columns: list[str]) -> list[pa.Table]:
        """`columns` of the scored shards `names`, in order, several read at once: on
        object storage one after another, 10,000 shards would take many minutes."""
        with ThreadPoolExecutor(READ_THREADS, thread_name_prefix="winnow-read") as pool:
            return list(pool.map(lambda name: self._read(SCORED, name, columns), names))

    def scores(self) -> pa.Table:
        """Every row's scores (heads' and concepts' too) and status, with its shard and row:
        the one full pass."""
        columns = [self.status_column, *(score_column(a) for a in self.aliases), *self.added]
        return pa.concat_tables(self._read_scored(self.shards, columns))

    def fetch(self, selection: pa.Table, columns: list[str]) -> pa.Table:
        """`columns` of the scored rows named by `selection` (its shard and row), in its order."""
        names = sorted(set(selection[SAMPLE_SHARD].to_pylist()))
        parts = dict(zip(names, self._read_scored(names, columns), strict=True))
        return pa.Table.from_pylist(
            [
                {c: parts[s][c][r].as_py() for c in columns if c in parts[s].column_names}
                for s, r in zip(
                    selection[SAMPLE_SHARD].to_pylist(),
                    selection[SAMPLE_ROW].to_pylist(),
                    strict=True,
                )
            ]
        )

    def sample(self, rows: int, columns: list[str] | None, *, seed: int = 0) -> pa.Table:
        """About `rows` rows from randomly chosen shards (then rows), with `columns`."""
        rng = np.random.default_rng(seed)
        picked, total = [], 0
        for name in rng.permutation(self.shards):
            table = self._read(SCORED, str(name), columns)
            picked.append(table)
            total += table.num_rows
            if total >= rows * 2:
                break
        table = pa.concat_tables(picked) if picked else pa.table({})
        if table.num_rows > rows:
            table = table.take(pa.array(np.sort(rng.choice(table.num_rows, rows, replace=False))))
        return table

    def rejections(self) -> dict[str, int]:
        counts = self.summary.get("filters", {}).get("removed_by", {})
        return {name: n for name, n in counts.items() if n}

    def images(self, selection: pa.Table) -> list[bytes | None]:
        """Image bytes of the rows named by `selection`, read back from the input shards."""
        found: list[bytes | None] = [None] * selection.num_rows
        options = self.input_storage_options
        if options is None:
            options = unredacted(self.summary["config"]["input"].get("storage_options", {}))
        shards, rows = selection[SAMPLE_SHARD].to_pylist(), selection[SAMPLE_ROW].to_pylist()
        for name in set(shards):
            source = (self.layout.read_json(self.layout.stats(name)) or {}).get("input")
            if not source:
                continue
            fs, path = open_fs(source, options)
            wanted = [
                (p, r) for p, (s, r) in enumerate(zip(shards, rows, strict=True)) if s == name
            ]
            with open_without_readahead(fs, path) as handle:
                parquet = pq.ParquetFile(handle, pre_buffer=False, buffer_size=PIECE_BUFFER)
                found_here = _images_at(parquet, self.image_column, [r for _, r in wanted])
            for (position, _), value in zip(wanted, found_here, strict=True):
                found[position] = value
        return found


def _images_at(parquet: pq.ParquetFile, column: str, rows: list[int]) -> list[Any]:
    """The image bytes of `column` at `rows` (None past the end). Each row group that holds
    some is read a piece at a time, up to the last of them: pyarrow's writer puts up to
    1Mi rows in one, and a few images near the start of such a group are not worth
    reading it whole."""
    starts = np.cumsum(
        [0] + [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)]
    )
    groups = np.searchsorted(starts, rows, side="right") - 1
    found: dict[int, Any] = {}
    for group in sorted(set(groups.tolist()) & set(range(parquet.num_row_groups))):
        first = int(starts[group])
        wanted = sorted({row - first for row, g in zip(rows, groups, strict=True) if g == group})
        at = 0
        pieces = parquet.iter_batches(batch_size=PIECE_ROWS, row_groups=[group], columns=[column])
        for piece in pieces:
            values = image_bytes(piece.column(0))
            for row in wanted:
                if at <= row < at + piece.num_rows:
                    found[first + row] = values[row - at].as_py()
            at += piece.num_rows
            if at > wanted[-1]:
                break
    return [found.get(row) for row in rows]
