"""`winnow export`: a run's embeddings in the layouts retrieval tools read.

Each scored shard becomes one part: its rows with both embeddings (status ok),
the embeddings as `vector` (image) and `text_vector`, with the id, caption, URL,
score and the heads' and concepts' columns beside them. An output format
(`formats`) writes the parts: `npy` in clip-retrieval's layout, which autofaiss
builds an index from, `lance` as a Lance table LanceDB reads, `parquet` as one
file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.heartbeat import Tally, logged_every
from pipeline.io.formats import TEXT_VECTOR, VECTOR, TableWriter
from pipeline.io.results import Run
from pipeline.io.shards import open_fs
from pipeline.schema import URL, embedding_column, score_column

log = logging.getLogger(__name__)


def _part(run: Run, name: str, alias: str) -> pa.Table:
    image, text = embedding_column(alias, "image"), embedding_column(alias, "text")
    id_column = run.summary["config"]["input"]["id_column"]
    wanted = [c for c in (id_column, run.caption_column, URL) if c]
    table = run.read_scored(name, [*wanted, score_column(alias), *run.added, image, text])
    table = table.filter(pc.and_(pc.is_valid(table[image]), pc.is_valid(table[text])))
    return table.rename_columns(
        [{image: VECTOR, text: TEXT_VECTOR}.get(c, c) for c in table.column_names]
    )


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
    fs, path = open_fs(target, storage_options or {})
    writer = TableWriter.FORMATS[fmt](fs=fs, final=path)
    tally = Tally(what="export", unit="shard(s) read", total=len(run.shards))
    with logged_every(tally.line, logger=log):
        try:
            for part in _ahead(lambda name: _part(run, name, alias), tally.count(run.shards)):
                writer.write(part)
            writer.commit()
        except BaseException:
            writer.abort()
            raise
    return {
        "format": fmt,
        "parts": len(run.shards),
        "rows": writer.rows,
        "output": fs.unstrip_protocol(path),
    }
