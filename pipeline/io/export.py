"""`winnow export`: a run's embeddings in the layouts retrieval tools read.

`npy` writes clip-retrieval's layout, which autofaiss builds an index from:
`img_emb/img_emb_N.npy`, `text_emb/text_emb_N.npy` and `metadata/metadata_N.parquet`,
one part per scored shard, rows aligned across the three. `lance` writes a
Lance table (LanceDB reads it) with `vector` (image) and `text_vector` columns.
Only rows with both embeddings (status ok) are exported.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.heartbeat import Tally, logged_every
from pipeline.io.results import Run
from pipeline.io.shards import open_fs
from pipeline.schema import URL, embedding_column, score_column

log = logging.getLogger(__name__)

FORMATS = ("npy", "lance")


def _part(run: Run, name: str, alias: str) -> pa.Table:
    image, text = embedding_column(alias, "image"), embedding_column(alias, "text")
    id_column = run.summary["config"]["input"]["id_column"]
    wanted = [c for c in (id_column, run.caption_column, URL) if c]
    table = run.read_scored(name, [*wanted, score_column(alias), image, text])
    return table.filter(pc.and_(pc.is_valid(table[image]), pc.is_valid(table[text])))


def _ahead(read: Callable[[str], pa.Table], names: Iterable[str]) -> Iterator[pa.Table]:
    """Each shard's part, the next one read while the caller writes this one: on object
    storage both wait on the network. Memory holds two parts, however many shards."""
    with ThreadPoolExecutor(1, thread_name_prefix="winnow-export") as pool:
        pending = None
        for name in names:
            following = pool.submit(read, name)
            if pending is not None:
                yield pending.result()
            pending = following
        if pending is not None:
            yield pending.result()


def _matrix(column: pa.ChunkedArray) -> np.ndarray:
    flat = column.combine_chunks()
    width = flat.type.list_size
    return np.asarray(flat.flatten().to_numpy(zero_copy_only=False)).reshape(-1, width)


def export_npy(
    run: Run, alias: str, target: str, storage_options: dict[str, Any], names: Iterable[str]
) -> dict[str, Any]:
    fs, root = open_fs(target, storage_options)
    for folder in ("img_emb", "text_emb", "metadata"):
        fs.makedirs(posixpath.join(root, folder), exist_ok=True)
    rows = 0
    for index, part in enumerate(_ahead(lambda name: _part(run, name, alias), names)):
        for folder, column in (("img_emb", "image"), ("text_emb", "text")):
            with fs.open(posixpath.join(root, folder, f"{folder}_{index}.npy"), "wb") as handle:
                np.save(handle, _matrix(part[embedding_column(alias, column)]))
        metadata = part.drop_columns(
            [embedding_column(alias, "image"), embedding_column(alias, "text")]
        )
        with fs.open(posixpath.join(root, "metadata", f"metadata_{index}.parquet"), "wb") as handle:
            pq.write_table(metadata, handle)
        rows += part.num_rows
    return {
        "format": "npy",
        "parts": len(run.shards),
        "rows": rows,
        "output": fs.unstrip_protocol(root),
    }


def _lance_part(run: Run, name: str, alias: str) -> pa.Table:
    """A shard's part with LanceDB's column names, its vectors as float32."""
    names = {
        embedding_column(alias, "image"): "vector",
        embedding_column(alias, "text"): "text_vector",
    }
    part = _part(run, name, alias).rename_columns(names)
    for column in ("vector", "text_vector"):
        width = part[column].type.list_size
        vectors = part[column].cast(pa.list_(pa.float32(), width))
        part = part.set_column(part.column_names.index(column), column, vectors)
    return part


def export_lance(run: Run, alias: str, target: str, names: Iterable[str]) -> dict[str, Any]:
    """One Lance table, streamed to it a shard at a time: memory holds two shards' parts
    (`_ahead`), however many shards the run has."""
    try:
        import lance
    except ImportError:
        raise RuntimeError("--format lance needs pylance: pip install -e '.[lance]'") from None
    parts = _ahead(lambda name: _lance_part(run, name, alias), names)
    first = next(parts)  # `export` refuses a run without scored shards
    rows = 0

    def batches() -> Iterator[pa.RecordBatch]:
        nonlocal rows
        for part in chain([first], parts):
            rows += part.num_rows
            yield from part.cast(first.schema).to_batches()

    fs, path = open_fs(target, {})
    # Lance warns that it creates what "overwrite" does not find: a first export is no news.
    mode = "overwrite" if fs.exists(path) else "create"
    lance.write_dataset(
        pa.RecordBatchReader.from_batches(first.schema, batches()), target, mode=mode
    )
    return {"format": "lance", "rows": rows, "output": target}


def export(
    output: str,
    *,
    fmt: str,
    target: str,
    alias: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    run = Run.open(output, storage_options)
    alias = alias or run.aliases[0]
    if alias not in run.aliases:
        raise ValueError(
            f"--alias {alias!r} is not a model of this run (have: {', '.join(run.aliases)})"
        )
    if not run.shards:
        raise ValueError(f"{run.layout.url()} has no scored shards to export")
    tally = Tally(what="export", unit="shard(s) read", total=len(run.shards))
    with logged_every(tally.line, logger=log):
        names = tally.count(run.shards)
        if fmt == "npy":
            return export_npy(run, alias, target, storage_options or {}, names)
        return export_lance(run, alias, target, names)
