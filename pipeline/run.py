"""The scoring run: discover, check, stream through Ray, commit shard by shard, summarise.

Everything that can be refused is refused before the first byte is written:
config values, model names and checkpoints, heads' weights, and input columns
that the run's added columns would overwrite.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from pipeline import __version__
from pipeline.cluster import ray_session
from pipeline.config import ConfigError, WinnowConfig
from pipeline.filters.apply import ShardRef
from pipeline.filters.curate import build_policies, check_policy_columns, curate
from pipeline.interrupt import stop_if_interrupted
from pipeline.io.credentials import recorded
from pipeline.io.identity import check_scored_models
from pipeline.io.layout import SCORED, SUMMARY, OutputLayout
from pipeline.io.lock import output_lock
from pipeline.io.reader import unreadable_columns
from pipeline.io.shards import Discovery, Shard, ShardFailure, discover, open_fs
from pipeline.models.encoder import encoder_for, resolve_precision
from pipeline.models.heads import HeadError, load_head
from pipeline.report.summary import build_summary
from pipeline.scoring.from_embeddings import column_digests, complete_columns
from pipeline.scoring.job import Scoring, score_shards
from pipeline.scoring.placement import alive_nodes, device_of

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class RunResult:
    summary: dict[str, Any]
    output: str
    report: str | None = None

    @property
    def failed(self) -> list[dict[str, str]]:
        return self.summary["failed_shards"]


def _usable(discovery: Discovery, config: WinnowConfig) -> tuple[list[Shard], list[ShardFailure]]:
    """Split shards into those the run can read and those missing a required column or
    holding one it cannot read."""
    usable, failures = [], list(discovery.failures)
    required = [config.input.image_column, config.input.caption_column, config.input.id_column]
    policies = build_policies(config)
    for shard in discovery.shards:
        config.check_input_columns(shard.columns, where=f"input shard {shard.url}")
        check_policy_columns(policies, shard.columns, where=f"input shard {shard.url}")
        missing = [c for c in required if c and c not in shard.columns]
        error = (
            _missing(missing, shard, config)
            if missing
            else unreadable_columns(shard.schema, config.input)
        )
        if error:
            failures.append(ShardFailure(name=shard.name, url=shard.url, error=error))
        else:
            usable.append(shard)
    return usable, failures


def _missing(missing: list[str], shard: Shard, config: WinnowConfig) -> str:
    error = (
        f"missing column(s) {', '.join(missing)} (has: {', '.join(shard.columns)}); "
        "set input.image_column / caption_column / id_column to match"
    )
    fs, path = open_fs(shard.url, config.input.storage_options)
    if config.input.image_column in missing and fs.exists(path.removesuffix(".parquet") + ".tar"):
        error += "; or, as it is img2dataset's sidecar to a tar, input.format: webdataset"
    return error


def _state(shard: Shard, records: dict[str, dict[str, Any]]) -> str:
    """'new', 'committed' (same input as recorded) or 'changed' (input differs: redo)."""
    if shard.name not in records:
        return "new"
    same = records[shard.name].get("input_fingerprint") == shard.fingerprint
    return "committed" if same else "changed"


def _inputs(config: WinnowConfig) -> tuple[list[Shard], list[ShardFailure]]:
    return _usable(discover(config.input.paths(), config.input.storage_options), config)


def _staged_inputs(
    config: WinnowConfig, layout: OutputLayout, tars: list[tuple[Any, str]]
) -> tuple[WinnowConfig, list[Shard], list[ShardFailure]]:
    """WebDataset input is staged as Parquet under the output root (so under its lock), and
    the run reads that; a tar that cannot be staged is a failed shard."""
    from pipeline.io.webdataset import stage

    staged = stage(config.input, layout, tars)
    source = config.input.model_copy(
        update={
            "path": staged.urls,
            "format": "parquet",
            "storage_options": config.output.storage_options,
        }
    )
    config = config.model_copy(update={"input": source})
    if not staged.urls:
        return config, [], staged.failures
    shards, failures = _inputs(config)
    return config, shards, staged.failures + failures


def check_heads(config: WinnowConfig) -> None:
    """Refuse a head whose weights cannot load or whose width is not its alias's."""
    models = {model.alias: model for model in config.models}
    for index, head in enumerate(config.heads):
        try:
            loaded = load_head(head)
        except (HeadError, OSError) as error:
            raise ConfigError(
                f"heads.{index}.weights: {head.weights} cannot be loaded as a head: {error}"
            ) from None
        model = models[head.alias]
        width = encoder_for(model).width(model)
        if loaded.width != width:
            raise ConfigError(
                f"heads.{index}: {head.name} takes {loaded.width}-wide embeddings, but alias "
                f"{head.alias!r} ({model.name}) makes {width}-wide ones; give it the head "
                "trained for that model"
            )


def preflight(config: WinnowConfig) -> list[str]:
    warnings = []
    for index, model in enumerate(config.models):
        key = f"models.{index}"
        warnings += encoder_for(model).check(
            model, name_key=f"{key}.name", pretrained_key=f"{key}.pretrained"
        )
    return warnings


def run(config: WinnowConfig, *, score: bool = True, retry_failed: bool = False) -> RunResult:
    """Score the shards not yet committed (unless `score` is False), then filter them all.

    `retry_failed` limits scoring to the shards the last run reported as failed.
    """
    if score:
        for warning in preflight(config):
            log.warning(warning)
    check_heads(config)
    layout = OutputLayout(root=config.output.path, storage_options=config.output.storage_options)
    models = [encoder_for(m).describe(m) for m in config.models]
    digests = column_digests(config, models)
    # What can be refused is refused before anything is written.
    if config.input.format == "webdataset":
        from pipeline.io.webdataset import find_tars

        tars = find_tars(config.input)
    else:
        tars = []
        shards, failures = _inputs(config)
    with output_lock(layout):
        leftovers = layout.remove_leftovers()
        if leftovers:
            log.info("removed %d temporary file(s) of an interrupted run", len(leftovers))
        # Tars are staged by Ray tasks, in the session the run then uses.
        with ray_session(config.ray) if tars else nullcontext():
            if tars:
                config, shards, failures = _staged_inputs(config, layout, tars)
            records = layout.records([s.name for s in shards])
            check_scored_models(models, records, layout)
            states = {s.name: _state(s, records) for s in shards}
            todo = [s for s in shards if states[s.name] != "committed"] if score else []
            if retry_failed:
                previous = layout.read_json(layout.path(SUMMARY)) or {}
                names = {f["shard"] for f in previous.get("failed_shards", [])}
                todo = [s for s in todo if s.name in names]
                failures = [f for f in failures if f.name in names]
            summary = _run_locked(
                config,
                layout,
                shards,
                todo,
                states,
                records,
                failures,
                score,
                models=models,
                digests=digests,
            )
        report = _report(config) if config.output.report and summary["shards"] else None
    return RunResult(summary=summary, output=layout.url(), report=report)


def _report(config: WinnowConfig) -> str | None:
    """The run's HTML report; a report that fails to render is a warning, not a failed run."""
    from pipeline.report.html import write_report

    try:
        return write_report(
            config.output.path,
            config.output.storage_options,
            input_storage_options=config.input.storage_options,
        )
    except Exception as error:
        log.warning("could not write the report: %s", error)
        return None


def _run_locked(
    config: WinnowConfig,
    layout: OutputLayout,
    shards: list[Shard],
    todo: list[Shard],
    states: dict[str, str],
    records: dict[str, dict[str, Any]],
    failures: list[ShardFailure],
    score: bool,
    *,
    models: list[dict[str, Any]],
    digests: dict[str, str],
) -> dict[str, Any]:
    """Score `todo`, add the heads and concepts that committed shards lack, filter every
    committed shard, summarise. `records` are the commit records, kept up to date here
    as shards are committed and filtered; `models` the config's as the outputs record
    them; `digests` each head's and concept's (`from_embeddings`)."""
    config_dump = recorded(config)
    started = datetime.now(timezone.utc)
    layout.prepare()
    scoring: Scoring | None = None
    with ray_session(config.ray):
        stop_if_interrupted()  # a Ctrl-C lost while Ray and its libraries loaded
        nodes = alive_nodes()
        for model, entry in zip(models, config.models, strict=True):
            model["precision"] = resolve_precision(entry.precision, device_of(nodes))
        if todo:
            metadata = {
                "winnow_version": __version__,
                "models": models,
                "config": config_dump,
                "columns": digests,
            }
            scoring = score_shards(
                todo, layout=layout, config=config, metadata=metadata, nodes=nodes
            )
            failures += scoring.failures
            records.update((record["shard"], record) for record in scoring.committed)
        refs = [
            ShardRef(name=s.name, scored=layout.url(SCORED, f"{s.name}.parquet"), input=s.url)
            for s in shards
            if s.name in records
        ]
        if not score and len(refs) < len(shards):
            log.warning("%d input shard(s) have no scored output yet", len(shards) - len(refs))
        scored = {ref.name: ref.scored for ref in refs}
        lacking = complete_columns(config, layout, scored, records, digests)
        failures += lacking
        refs = [ref for ref in refs if ref.name not in {f.name for f in lacking}]
        fitted, filter_failures = curate(config, layout, refs, records)
        failures += filter_failures
    summary = build_summary(
        started=started,
        scoring=scoring,
        redone={s.name for s in todo if states[s.name] == "changed"},
        records=[records[r.name] for r in refs],
        failures=failures,
        models=models,
        config=config_dump,
        fitted=fitted,
    )
    layout.write_json(layout.path(SUMMARY), summary)
    return summary
