"""The scoring run: discover, check, stream through Ray, commit shard by shard, summarise.

Everything that can be refused is refused before the first byte is written:
config values, model names and checkpoints, and input columns that the run's
added columns would overwrite.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from pipeline import __version__
from pipeline.config import WinnowConfig
from pipeline.io.layout import SUMMARY, OutputLayout
from pipeline.io.shards import Discovery, Shard, ShardFailure, discover
from pipeline.io.sink import ShardSink
from pipeline.models.loader import check_model, describe, embedding_dim, resolve_precision
from pipeline.report.summary import build_summary

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class RunResult:
    summary: dict[str, Any]
    output: str

    @property
    def failed(self) -> list[dict[str, str]]:
        return self.summary["failed_shards"]


def _usable(discovery: Discovery, config: WinnowConfig) -> tuple[list[Shard], list[ShardFailure]]:
    """Split shards into those the run can read and those missing a required column."""
    usable, failures = [], list(discovery.failures)
    required = [config.input.image_column, config.input.caption_column, config.input.id_column]
    for shard in discovery.shards:
        config.check_input_columns(shard.columns, where=f"input shard {shard.url}")
        missing = [c for c in required if c and c not in shard.columns]
        if missing:
            failures.append(
                ShardFailure(
                    name=shard.name,
                    url=shard.url,
                    error=f"missing column(s) {', '.join(missing)} "
                    f"(has: {', '.join(shard.columns)}); "
                    "set input.image_column / caption_column / id_column to match",
                )
            )
        else:
            usable.append(shard)
    return usable, failures


def preflight(config: WinnowConfig) -> list[str]:
    warnings = []
    for index, model in enumerate(config.models):
        warnings += check_model(model, where=f"models.{index}")
    return warnings


def run(config: WinnowConfig) -> RunResult:
    for warning in preflight(config):
        log.warning(warning)
    layout = OutputLayout(root=config.output.path, storage_options=config.output.storage_options)
    shards, failures = _usable(discover(config.input.paths(), config.input.storage_options), config)
    dims = {m.alias: embedding_dim(m) for m in config.models}
    models = [describe(m) for m in config.models]
    previous = [
        layout.read_json(layout.stats(s.name)) for s in shards if layout.is_committed(s.name)
    ]
    todo = [s for s in shards if not layout.is_committed(s.name)]
    config_dump = config.model_dump(mode="json")
    started, clock = datetime.now(timezone.utc), time.monotonic()
    layout.prepare()
    sink_failures: list[ShardFailure] = []
    committed: list[dict[str, Any]] = []
    actors = "none (nothing to score)"
    if todo:
        committed, sink_failures, actors = _score(todo, layout, config, dims, models, config_dump)
    summary = build_summary(
        started=started,
        seconds=time.monotonic() - clock,
        committed=committed,
        previous=[p for p in previous if p],
        failures=failures + sink_failures,
        models=models,
        config=config_dump,
        actors=actors,
    )
    layout.write_json(layout.path(SUMMARY), summary)
    return RunResult(summary=summary, output=layout.url())


def _score(
    todo: list[Shard],
    layout: OutputLayout,
    config: WinnowConfig,
    dims: dict[str, int],
    models: list[dict[str, Any]],
    config_dump: dict[str, Any],
) -> tuple[list[dict[str, Any]], list[ShardFailure], str]:
    from pipeline.scoring.dataset import build_dataset, plan_actors, ray_session

    with ray_session(config.ray) as resources:
        plan = plan_actors(config.ray, resources)
        for model, entry in zip(models, config.models, strict=True):
            model["precision"] = resolve_precision(entry.precision, plan.device)
        metadata = {"winnow_version": __version__, "models": models, "config": config_dump}
        sink = ShardSink(shards=todo, layout=layout, config=config, dims=dims, metadata=metadata)
        tasks = [task for shard in todo for task in shard.row_group_tasks()]
        log.info(
            "scoring %d shard(s), %d row group(s) on %s", len(todo), len(tasks), plan.describe()
        )
        if tasks:
            dataset = build_dataset(tasks, config, plan)
            sink.consume(dataset.iter_batches(batch_size=None, batch_format="pyarrow"))
        else:
            sink.consume([])
    return sink.committed, sink.failures, plan.describe()
