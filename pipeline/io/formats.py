"""Output formats: each writes one output a table at a time and makes it appear whole or not
at all.

A format is one `TableWriter` subclass, registered by its name: `parquet` writes
every file a run leaves (scored, filtered and rejected shards), and `parquet`,
`npy` (clip-retrieval's layout) and `lance` are what `winnow export` offers. A
writer writes under temporary names (or, for Lance, into a version not yet
committed), `commit` puts the output in place, `abort` leaves nothing behind.

Export writers take a retrieval table: the embeddings as `vector` (image) and
`text_vector`, beside the columns that describe each row.
"""

from __future__ import annotations

import posixpath
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec import AbstractFileSystem

from pipeline.io import layout

VECTOR = "vector"
TEXT_VECTOR = "text_vector"


class TableWriter(ABC):
    """One output, written table by table; `schema` is what an output without rows holds."""

    FORMATS: ClassVar[dict[str, type[TableWriter]]] = {}
    name: ClassVar[str]
    exports: ClassVar[bool] = True  # offered by `winnow export --format`

    def __init_subclass__(cls, *, format: str, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.name = format
        TableWriter.FORMATS[format] = cls

    def __init__(
        self, *, fs: AbstractFileSystem, final: str, schema: pa.Schema | None = None
    ) -> None:
        self.fs, self.final, self.schema = fs, final, schema
        self.rows = 0

    @abstractmethod
    def write(self, table: pa.Table) -> None: ...

    @abstractmethod
    def commit(self) -> None:
        """Put the whole output in place."""

    @abstractmethod
    def abort(self) -> None:
        """Leave nothing of the output behind."""


def export_formats() -> list[str]:
    return [name for name, writer in TableWriter.FORMATS.items() if writer.exports]


class ParquetWriter(TableWriter, format="parquet"):
    """One Parquet file, one row group a table (see `parquet_options`)."""

    def __init__(
        self, *, fs: AbstractFileSystem, final: str, schema: pa.Schema | None = None
    ) -> None:
        super().__init__(fs=fs, final=final, schema=schema)
        self.temporary = layout.temporary_name(final)
        self._handle: Any = None
        self._writer: pq.ParquetWriter | None = None

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            self.schema = self.schema or table.schema
            self._handle = self.fs.open(self.temporary, "wb")
            self._writer = pq.ParquetWriter(
                self._handle, self.schema, **layout.parquet_options(self.schema)
            )
        self._writer.write_table(table)
        self.rows += table.num_rows

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._handle.close()
            self._writer = self._handle = None

    def commit(self) -> None:
        if self._writer is None:
            if self.schema is None:
                raise ValueError(f"{self.final}: nothing written and no schema to write")
            self.write(self.schema.empty_table())
        self._close()
        layout.commit_file(self.fs, self.temporary, self.final)

    def abort(self) -> None:
        self._close()
        layout.discard_file(self.fs, self.temporary)


class NpyWriter(TableWriter, format="npy"):
    """clip-retrieval's layout, which autofaiss builds an index from: per table written,
    `img_emb/img_emb_N.npy`, `text_emb/text_emb_N.npy` and `metadata/metadata_N.parquet`,
    rows aligned across the three. Each file is written under a temporary name; `commit`
    moves them all into place."""

    def __init__(
        self, *, fs: AbstractFileSystem, final: str, schema: pa.Schema | None = None
    ) -> None:
        super().__init__(fs=fs, final=final, schema=schema)
        self.parts = 0
        self.pending: list[tuple[str, str]] = []  # (temporary, final)

    def _file(self, folder: str, name: str) -> Any:
        final = posixpath.join(self.final, folder, name)
        self.fs.makedirs(posixpath.dirname(final), exist_ok=True)
        self.pending.append((layout.temporary_name(final), final))
        return self.fs.open(self.pending[-1][0], "wb")

    def write(self, table: pa.Table) -> None:
        index = self.parts
        for folder, column in (("img_emb", VECTOR), ("text_emb", TEXT_VECTOR)):
            with self._file(folder, f"{folder}_{index}.npy") as handle:
                np.save(handle, _matrix(table[column]))
        with self._file("metadata", f"metadata_{index}.parquet") as handle:
            pq.write_table(table.drop_columns([VECTOR, TEXT_VECTOR]), handle)
        self.parts += 1
        self.rows += table.num_rows

    def commit(self) -> None:
        for temporary, final in self.pending:
            layout.commit_file(self.fs, temporary, final)
        self.pending = []

    def abort(self) -> None:
        for temporary, _ in self.pending:
            layout.discard_file(self.fs, temporary)
        self.pending = []


def _matrix(column: pa.ChunkedArray) -> np.ndarray:
    flat = column.combine_chunks()
    width = flat.type.list_size
    return np.asarray(flat.flatten().to_numpy(zero_copy_only=False)).reshape(-1, width)


# Tables a Lance writer holds before its writing thread takes them.
LANCE_QUEUE = 2
_END = object()


class LanceWriter(TableWriter, format="lance"):
    """One Lance table (LanceDB reads it), its vectors as float32. Lance commits a version
    only when its write ends, so the tables stream to it on a thread of its own, and an
    abort ends that write with an error: no version, nothing in place."""

    def __init__(
        self, *, fs: AbstractFileSystem, final: str, schema: pa.Schema | None = None
    ) -> None:
        super().__init__(fs=fs, final=final, schema=schema)
        try:
            import lance  # noqa: F401
        except ImportError:
            raise RuntimeError("--format lance needs pylance: pip install -e '.[lance]'") from None
        self.tables: queue.Queue[Any] = queue.Queue(LANCE_QUEUE)
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def _batches(self, first: pa.Table) -> Iterator[pa.RecordBatch]:
        table = first
        while table is not _END:
            if isinstance(table, BaseException):
                raise table
            yield from table.cast(first.schema).to_batches()
            table = self.tables.get()

    def _run(self, first: pa.Table) -> None:
        import lance

        # Lance warns that it creates what "overwrite" does not find: a first one is no news.
        mode = "overwrite" if self.fs.exists(self.final) else "create"
        target = self.fs.unstrip_protocol(self.final)
        try:
            reader = pa.RecordBatchReader.from_batches(first.schema, self._batches(first))
            lance.write_dataset(reader, target, mode=mode)
        except BaseException as error:
            self.error = error

    def write(self, table: pa.Table) -> None:
        for column in (VECTOR, TEXT_VECTOR):
            vectors = table[column].cast(pa.list_(pa.float32(), table[column].type.list_size))
            table = table.set_column(table.column_names.index(column), column, vectors)
        self.rows += table.num_rows
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, args=(table,), daemon=True)
            self.thread.start()
        else:
            self._put(table)

    def _put(self, item: Any) -> None:
        """Hand `item` to the writing thread; if that thread has ended, its error."""
        while True:
            try:
                self.tables.put(item, timeout=1.0)
                return
            except queue.Full:
                if self.thread is not None and not self.thread.is_alive():
                    raise self.error or RuntimeError("the Lance write ended early") from None

    def _finish(self, last: Any) -> None:
        if self.thread is not None:
            if self.thread.is_alive():
                self._put(last)
            self.thread.join()
            self.thread = None

    def commit(self) -> None:
        if self.thread is None:
            raise ValueError(f"{self.final}: a Lance table needs at least one part")
        self._finish(_END)
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        self._finish(RuntimeError("export aborted"))
