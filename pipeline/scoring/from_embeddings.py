"""Heads and concepts a scored output lacks, computed from its stored embeddings.

`winnow filter`, and `winnow run` over shards scored before a head or concept
was configured, add them without images or the image tower: a head needs only
the stored embeddings; a concept's texts go once through the alias's text tower,
in one Ray task per alias, and each row's stored image embedding does the rest.

A shard that lacks a column is rewritten by a Ray task: its scored file is read a
row group at a time, the new columns appended, and the result written under a
temporary name and moved over the old file, as scoring commits it. Then its
stats record names each column's digest, so a later run computes a column again
only where a head's weights or settings, or a concept's texts, changed.
docs/architecture.md says why a rewrite and not a column file beside the shard.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import WinnowConfig
from pipeline.heartbeat import Tally, logged_every
from pipeline.io.formats import ParquetWriter
from pipeline.io.layout import OutputLayout
from pipeline.io.shards import ShardFailure, open_fs, open_without_readahead
from pipeline.io.writer import METADATA_KEY
from pipeline.models.encoder import encoder_for
from pipeline.models.heads import (
    ColumnScorer,
    Concept,
    column_digest,
    concept_texts,
    load_head,
    placed,
)
from pipeline.schema import embedding_column

log = logging.getLogger(__name__)
# A task's share of a core: its work is one numpy product per head and row group.
COLUMN_CPUS = 1.0
# A concept's texts: their normalised embeddings and the model's logit scale.
Texts = dict[str, tuple[np.ndarray, float]]


def column_digests(config: WinnowConfig, models: list[dict[str, Any]]) -> dict[str, str]:
    """Each head's and concept's digest; `models` as `describe` gives them."""
    by_alias = {model["alias"]: model for model in models}
    return {c.name: column_digest(c, by_alias[c.alias]) for c in config.columns()}


def concept_vectors(config: WinnowConfig, alias: str) -> Texts:
    """Ray task: the texts of the alias's concepts through its text tower, on the CPU."""
    model = next(m for m in config.models if m.alias == alias)
    encoder = encoder_for(model).load(model, device="cpu")
    return {
        c.name: concept_texts(encoder, c, model=model, device="cpu")
        for c in config.concepts
        if c.alias == alias
    }


def _values(scorer: ColumnScorer, table: pa.Table) -> pa.Array:
    """A scorer's column from a table's stored embeddings (null where a row has none)."""
    stored = table[embedding_column(scorer.alias, scorer.tower)].combine_chunks()
    rows = np.flatnonzero(stored.is_valid().to_numpy(zero_copy_only=False))
    vectors = stored.flatten().to_numpy(zero_copy_only=False).reshape(len(rows), -1)
    return placed(scorer.values(vectors), rows, table.num_rows)


def add_columns(
    scored: str, config: WinnowConfig, names: list[str], texts: Texts, digests: dict[str, str]
) -> None:
    """Rewrite one scored shard with the columns `names` (replacing any of the same name)."""
    scorers: list[ColumnScorer] = [load_head(h) for h in config.heads if h.name in names]
    scorers += [
        Concept(config=c, texts=texts[c.name][0], scale=texts[c.name][1])
        for c in config.concepts
        if c.name in names
    ]
    fs, path = open_fs(scored, config.output.storage_options)
    with open_without_readahead(fs, path) as handle:
        source = pq.ParquetFile(handle, pre_buffer=False)
        old = source.schema_arrow
        kept = [field for field in old if field.name not in names]
        metadata = dict(old.metadata or {})
        recorded = json.loads(metadata.get(METADATA_KEY, b"{}"))
        recorded["columns"] = {**recorded.get("columns", {}), **digests}
        metadata[METADATA_KEY] = json.dumps(recorded, default=str).encode()
        fields = kept + [pa.field(scorer.name, pa.float32()) for scorer in scorers]
        schema = pa.schema(fields, metadata=metadata)
        writer = ParquetWriter(fs=fs, final=path, schema=schema)
        try:
            for group in range(source.num_row_groups):  # the row groups scoring wrote
                table = source.read_row_group(group, columns=[f.name for f in kept])
                for scorer in scorers:
                    table = table.append_column(scorer.name, _values(scorer, table))
                writer.write(table.cast(schema))
        except BaseException:
            writer.abort()
            raise
    writer.commit()


def complete_columns(
    config: WinnowConfig,
    layout: OutputLayout,
    scored: dict[str, str],
    records: dict[str, dict[str, Any]],
    digests: dict[str, str],
) -> list[ShardFailure]:
    """Add to each committed shard (`scored`: its scored file by name) the heads and
    concepts its record lacks or holds with another digest; update the records."""
    import ray

    todo = {}
    for name in scored:
        have = records[name].get("columns", {})
        lacking = [column for column, digest in digests.items() if have.get(column) != digest]
        if lacking:
            todo[name] = lacking
    if not todo:
        return []
    needed = {n for names in todo.values() for n in names}
    log.info(
        "computing %s from the stored embeddings of %d shard(s)",
        ", ".join(sorted(needed)),
        len(todo),
    )
    aliases = {c.alias for c in config.concepts if c.name in needed}
    prompt_task = ray.remote(num_cpus=COLUMN_CPUS)(concept_vectors)
    texts: Texts = {}
    for found in ray.get([prompt_task.remote(config, alias) for alias in sorted(aliases)]):
        texts.update(found)
    remote = ray.remote(num_cpus=COLUMN_CPUS, max_retries=3)(add_columns)
    pending = {
        remote.remote(
            scored[name],
            config,
            names,
            {n: texts[n] for n in names if n in texts},
            {n: digests[n] for n in names},
        ): name
        for name, names in todo.items()
    }
    failures = []
    tally = Tally(what="columns", unit="shard(s) given their new columns", total=len(pending))
    with logged_every(tally.line, logger=log):
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            name = pending.pop(ready[0])
            tally.done += 1
            record = records[name]
            try:
                ray.get(ready[0])
            except Exception as error:  # one shard's columns fail, not the run
                log.error("adding columns to shard %s failed: %s", name, error)
                failures.append(
                    ShardFailure(
                        name=name, url=record["input"], error=f"adding columns failed: {error}"
                    )
                )
                continue
            record["columns"] = {
                **record.get("columns", {}),
                **{n: digests[n] for n in todo[name]},
            }
            layout.write_json(layout.stats(name), record)
    return failures
