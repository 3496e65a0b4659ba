"""Curation policies: each decides, per row, keep or reject with a reason.

A row policy looks at one shard's rows and nothing else. A pool policy first
fits state over the whole pool (a threshold over every score, the set of
duplicates), then decides per row from that state. Policies run in order, each
on the rows still kept, and a rejected row records the first policy that
rejected it.

A filter is one file in this package: its config spec (a `FilterSpec` with its
own `type`) and its policy, declared as `class MyPolicy(Policy, spec=MySpec)`,
which registers both under that type.
"""

from __future__ import annotations

import copy
import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_serializer

from pipeline.config import FilterSpec, WinnowConfig, filter_type, register_filter
from pipeline.filters.drops import ShardDrops, read_drops, write_drops
from pipeline.schema import ROW, SHARD_NAME, score_column


class ScoreColumnSpec(FilterSpec):
    """What the score filters share: the column they cut on, a model's score by default."""

    alias: str = "clip"
    column: str | None = Field(
        default=None,
        description="A score column: <alias>_score, a head's or a concept's name; "
        "null: the alias's score.",
    )

    @model_serializer(mode="wrap")
    def _without_unset(self, handler: Any) -> dict[str, Any]:
        """The run records the keys that were set (reruns and the report read them)."""
        return {k: v for k, v in handler(self).items() if v is not None}

    @property
    def scored(self) -> str:
        return self.column or score_column(self.alias)


@dataclass(frozen=True, slots=True)
class Verdict:
    keep: np.ndarray  # bool per row
    reasons: list[str | None]  # why, for each rejected row (None where kept)

    @classmethod
    def from_reasons(cls, reasons: list[str | None]) -> Verdict:
        return cls(keep=np.asarray([r is None for r in reasons], bool), reasons=reasons)


# Every filter's policy by its type, filled as the filter files are imported.
POLICIES: dict[str, type[Policy]] = {}


class Policy(ABC):
    """A row policy: `decide` sees a table of one shard's rows (scored columns + input columns)."""

    def __init_subclass__(cls, spec: type[FilterSpec] | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if spec is not None:
            register_filter(spec)
            POLICIES[filter_type(spec)] = cls

    def __init__(self, spec: Any, config: WinnowConfig) -> None:
        self.spec = spec
        self.config = config

    @property
    def name(self) -> str:
        """Its type, and the score column or model alias it works on."""
        on = getattr(self.spec, "column", None) or getattr(self.spec, "alias", None)
        return f"{self.spec.type}:{on}" if on else self.spec.type

    def needs_image_bytes(self) -> bool:
        return False

    def input_columns(self) -> list[str]:
        """Input columns this policy reads; a shard without one is a config error."""
        return []

    def reads(self) -> list[str] | None:
        """The scored columns `decide` reads (every row comes with its shard name and row);
        None for all of them. The pool stages read only what the policies need."""
        return None

    def for_shard(self, name: str) -> Policy:
        """What a per-shard task needs of this policy (drop lists shrink to the shard's own)."""
        return self

    @abstractmethod
    def decide(self, table: pa.Table) -> Verdict: ...

    def fingerprint(self) -> dict[str, Any]:
        """What the decisions depend on, so unchanged filtering can be skipped on rerun."""
        return self.spec.model_dump()


class PoolPolicy(Policy):
    """A policy whose decisions depend on the whole pool: fit once, then decide per row."""

    # True: fit on the rows the earlier policies keep; False: on every scored row.
    fit_on_survivors: ClassVar[bool] = True

    @abstractmethod
    def fit(self, pool: Any, *, folder: str) -> None:
        """`pool` is a Ray Dataset of the rows to fit on (`columns` plus shard/row ids);
        `folder`, a URL under the output root, is this policy's to keep fitted state in."""

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """The fitted state, for stats and the fingerprint."""

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "state": self.state()}


class DropListPolicy(PoolPolicy):
    """A pool policy whose fit yields the rows to drop, each with its reason (dedup).

    The drops stay out of the driver: Ray tasks write them per shard under the
    policy's folder (`filters/drops.py`), and the driver keeps each shard's count and
    digest. A per-shard view reads its shard's file once, where it decides."""

    def __init__(self, spec: Any, config: WinnowConfig) -> None:
        super().__init__(spec, config)
        self.fitted_rows = 0
        self.shards: dict[str, ShardDrops] = {}
        self.folder = ""
        self._loaded: tuple[str, dict[int, str]] | None = None

    @abstractmethod
    def find_drops(self, pool: Any) -> Any:
        """A Ray Dataset of the rows to drop (see `drops.drop_table`), or None for none;
        sets `fitted_rows`."""

    def fit(self, pool: Any, *, folder: str) -> None:
        found = self.find_drops(pool)
        storage = self.config.output.storage_options
        self.folder = folder
        self.shards = (
            {} if found is None else write_drops(found, folder=folder, storage_options=storage)
        )

    def reads(self) -> list[str] | None:
        return []

    def for_shard(self, name: str) -> DropListPolicy:
        """A copy holding only this shard's summary: what a per-shard task needs to carry."""
        view = copy.copy(self)
        view.shards = {name: self.shards[name]} if name in self.shards else {}
        view._loaded = None
        return view

    def state(self) -> dict[str, Any]:
        dropped = sum(drops.count for drops in self.shards.values())
        digest = hashlib.sha256(
            json.dumps(sorted((n, d.sha256) for n, d in self.shards.items())).encode()
        ).hexdigest()
        return {"fitted_rows": self.fitted_rows, "dropped": dropped, "drops_sha256": digest}

    def _drops(self, name: str) -> dict[int, str]:
        if name not in self.shards:
            return {}
        if self._loaded is None or self._loaded[0] != name:
            storage = self.config.output.storage_options
            self._loaded = (name, read_drops(self.folder, name, storage))
        return self._loaded[1]

    def decide(self, table: pa.Table) -> Verdict:
        names = table[SHARD_NAME].to_pylist()
        rows = table[ROW].to_pylist()
        return Verdict.from_reasons(
            [self._drops(n).get(r) for n, r in zip(names, rows, strict=True)]
        )


def values_of(table: pa.Table, column: str) -> np.ndarray:
    """A score column as float64, NaN where a row has none."""
    values = pc.fill_null(table[column].cast(pa.float64()), np.nan)
    return np.asarray(values.to_numpy(zero_copy_only=False), np.float64)
