"""The end of the stream: route scored rows to their shard writers and commit each shard.

A shard is committed as soon as its last row is written, on a thread of its own
while the next rows are written; one that cannot be completed (an unreadable row
group, a write error) is recorded as failed with its reason while the other
shards carry on.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import WinnowConfig
from pipeline.io.layout import OutputLayout
from pipeline.io.reader import read_model_inputs
from pipeline.io.shards import Shard, ShardFailure, span_rows
from pipeline.io.writer import ShardError, ShardWriter
from pipeline.schema import SHARD

log = logging.getLogger(__name__)
# Shards whose first read of their other input columns runs ahead of the rows.
PREFETCH_SHARDS = 2
# Complete shards whose commit may be under way at once (each holds its file's last bytes).
COMMITS_IN_FLIGHT = 2


class ShardSink:
    def __init__(
        self,
        *,
        shards: list[Shard],
        layout: OutputLayout,
        config: WinnowConfig,
        dims: dict[str, int],
        metadata: dict[str, Any],
        committed: list[dict[str, Any]] | None = None,
        total: int | None = None,
    ) -> None:
        self.config = config
        self.shards = {shard.index: shard for shard in shards}
        self.writers = {
            shard.index: ShardWriter(
                shard=shard, layout=layout, config=config, dims=dims, metadata=metadata
            )
            for shard in shards
        }
        # The commit records, appended to the caller's list where a run streams its shards
        # in more than one go (a new plan after a node left); `total` counts them all.
        self.committed: list[dict[str, Any]] = [] if committed is None else committed
        self.total = total or len(shards)
        self.failures: list[ShardFailure] = []
        self.reads = ThreadPoolExecutor(PREFETCH_SHARDS, thread_name_prefix="winnow-prefetch")
        # One thread, so shards commit one at a time in the order they completed.
        self.commits = ThreadPoolExecutor(1, thread_name_prefix="winnow-commit")
        self.commits_pending: deque[tuple[int, ShardWriter, Future[dict[str, Any]]]] = deque()

    def _fail(self, index: int, error: str) -> None:
        shard = self.shards[index]
        self.writers.pop(index).abort()
        log.error("shard %s failed: %s", shard.name, error)
        self.failures.append(ShardFailure(name=shard.name, url=shard.url, error=error))

    def _commit(self, index: int) -> None:
        """Commit a complete shard on the commit thread, so that the next shards' rows do
        not wait while its file is closed, moved into place (a copy and a delete on S3)
        and its stats written."""
        writer = self.writers.pop(index)
        self.commits_pending.append((index, writer, self.commits.submit(writer.commit)))
        while len(self.commits_pending) > COMMITS_IN_FLIGHT:
            self._finish_commit()
        self._finish_done_commits()

    def _finish_done_commits(self) -> None:
        while self.commits_pending and self.commits_pending[0][2].done():
            self._finish_commit()

    def _finish_commit(self) -> None:
        """Wait for the oldest commit, and record its shard as committed or failed."""
        index, writer, future = self.commits_pending.popleft()
        shard = self.shards[index]
        try:
            record = future.result()
        except Exception as error:
            writer.abort()
            log.error("shard %s failed: cannot commit output: %s", shard.name, error)
            self.failures.append(
                ShardFailure(name=shard.name, url=shard.url, error=f"cannot commit output: {error}")
            )
            return
        self.committed.append(record)
        log.info(
            "committed shard %s: %d rows (%d of %d shards)",
            shard.name,
            record["rows"],
            len(self.committed),
            self.total,
        )

    def commit_ready(self) -> None:
        """Commit shards that are already complete (those with no rows at all)."""
        for index in [i for i, w in self.writers.items() if w.done]:
            self._commit(index)

    def add(self, batch: pa.Table) -> None:
        for value in pc.unique(batch[SHARD]).to_pylist():
            if value not in self.writers:
                continue  # a shard that already failed
            rows = batch.filter(pc.equal(batch[SHARD], value))
            try:
                self.writers[value].add(rows)
            except ShardError as error:
                self._fail(value, self._explain(value, str(error)))
                continue
            except Exception as error:
                self._fail(value, f"cannot write output: {error}")
                continue
            if self.writers[value].done:
                self._commit(value)
        self._finish_done_commits()
        self.prefetch()

    def prefetch(self) -> None:
        """Start the first reads of the shards whose rows come next (rows come in shard
        order), off the thread that writes."""
        for writer in islice(self.writers.values(), PREFETCH_SHARDS):
            writer.prefetch(self.reads)

    def consume(self, batches: Iterable[pa.Table]) -> None:
        try:
            self._consume(batches)
        finally:
            self.reads.shutdown(wait=False, cancel_futures=True)
            while self.commits_pending:  # a shard being committed ends committed
                self._finish_commit()
            self.commits.shutdown()

    def abort_open(self) -> None:
        """Drop the shards not yet complete, their temporary files included, when the stream
        that fed them ended early: a later stream writes them again from their first row."""
        for index in list(self.writers):
            self.writers.pop(index).abort()

    @property
    def open_shards(self) -> list[Shard]:
        return [self.shards[index] for index in self.writers]

    def _consume(self, batches: Iterable[pa.Table]) -> None:
        self.commit_ready()
        self.prefetch()
        for batch in batches:
            self.add(batch)
        for index in list(self.writers):
            writer = self.writers[index]
            self._fail(
                index,
                self._explain(
                    index, f"only {writer.next_row} of {writer.shard.num_rows} rows came back"
                ),
            )

    def _explain(self, index: int, symptom: str) -> str:
        """Find out why rows went missing by doing the read stage's work here again."""
        tasks = self.shards[index].read_tasks(rows=1, piece=span_rows(self.config))
        for task in tasks:  # each row group alone
            try:
                deque(read_model_inputs(task, self.config.input), maxlen=0)
            except Exception as error:
                return f"unreadable row group {task['first_group']}: {error}"
        return symptom
