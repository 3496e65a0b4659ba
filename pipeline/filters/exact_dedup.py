"""`exact_dedup`: exact duplicates, the same image bytes (sha256) or the same URL; the
smallest id is kept."""

from __future__ import annotations

from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from pipeline.config import FilterSpec, WinnowConfig
from pipeline.filters.base import DropListPolicy
from pipeline.schema import ROW, SHARD_NAME


class ExactDedupFilter(FilterSpec):
    type: Literal["exact_dedup"]
    by: Literal["sha256", "url"] = "sha256"
    column: str | None = Field(default=None, description="Defaults to the img2dataset column.")


class ExactDedupPolicy(DropListPolicy, spec=ExactDedupFilter):
    def __init__(self, spec: Any, config: WinnowConfig) -> None:
        super().__init__(spec, config)
        self.key = spec.column or spec.by
        self.id_column = config.input.id_column

    def input_columns(self) -> list[str]:
        return [self.key]

    @property
    def columns(self) -> list[str]:
        return list(dict.fromkeys([self.key, self.id_column or self.key, SHARD_NAME, ROW]))

    def fit(self, pool: Any) -> None:
        batches = list(pool.iter_batches(batch_format="pyarrow", batch_size=None))
        if not batches:
            return
        table = pa.concat_tables(batches)
        self.fitted_rows = table.num_rows
        table = table.filter(pc.is_valid(table[self.key]))
        order = [(self.key, "ascending")]
        order += [(self.id_column, "ascending")] if self.id_column else []
        order += [(SHARD_NAME, "ascending"), (ROW, "ascending")]
        table = table.sort_by(order)
        keys = table[self.key].to_pylist()
        ids = table[self.id_column].to_pylist() if self.id_column else [None] * table.num_rows
        names, rows = table[SHARD_NAME].to_pylist(), table[ROW].to_pylist()
        first: tuple[Any, Any, str, int] | None = None
        for key, ident, name, row in zip(keys, ids, names, rows, strict=True):
            if first is not None and first[0] == key:
                kept = first[1] if first[1] is not None else f"{first[2]} row {first[3]}"
                self.drop(name, row, f"same {self.spec.by} as {kept}")
            else:
                first = (key, ident, name, row)
