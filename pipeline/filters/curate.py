"""Curation over a run's scored output: fit the pool policies, then filter every shard.

Filtering reads only the scored output and the input's image bytes, never the
model, so thresholds can change and `winnow filter` reruns this alone. A shard
whose policies, fitted state and scored output are unchanged since it was last
filtered is skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from pipeline.config import ConfigError, WinnowConfig
from pipeline.filters.apply import ShardRef, filter_shard
from pipeline.filters.base import POLICIES, Policy, PoolPolicy
from pipeline.filters.pool import pool_dataset
from pipeline.heartbeat import Tally, logged_every, so_far
from pipeline.io.layout import FILTERED, POOL, REJECTED, OutputLayout
from pipeline.io.shards import ShardFailure

log = logging.getLogger(__name__)


def build_policies(config: WinnowConfig) -> list[Policy]:
    return [POLICIES[spec.type](spec, config) for spec in config.policies()]


def check_policy_columns(policies: list[Policy], columns: list[str], *, where: str) -> None:
    for policy in policies:
        missing = [c for c in policy.input_columns() if c not in columns]
        if missing:
            raise ConfigError(
                f"filters: {policy.name} needs column(s) {', '.join(missing)}, which {where} "
                f"lacks (has: {', '.join(columns)}); set the policy's column or remove it"
            )


def fit(
    policies: list[Policy],
    refs: list[ShardRef],
    config: WinnowConfig,
    layout: OutputLayout,
    *,
    watch: Callable[[Policy], AbstractContextManager[Any]] = lambda _: nullcontext(),
) -> None:
    """Fit each pool policy in turn, over the rows the policies before it keep. `watch`
    wraps each fit (the scale benchmark times and measures them)."""
    for index, policy in enumerate(policies):
        if isinstance(policy, PoolPolicy):
            before = policies[:index] if policy.fit_on_survivors else []
            what = f"filters: fitting {policy.name} over the pool of {len(refs):,} shard(s)"
            folder = layout.url(POOL, f"{index:02d}-{policy.name.replace(':', '-')}")
            pool = pool_dataset(refs, config, before=before, columns=policy.columns)
            with watch(policy), logged_every(so_far(what), logger=log):
                policy.fit(pool, folder=folder)
            log.info("fitted %s over the pool: %s", policy.name, policy.state())


def fingerprint(policies: list[Policy], config: WinnowConfig, record: dict[str, Any]) -> str:
    output = config.output
    data = {
        "policies": [p.fingerprint() for p in policies],
        "output": [
            output.write_rejected,
            output.filtered_embeddings,
            output.rejected_by_column,
            output.reject_reason_column,
        ],
        "scored_at": record.get("committed_at"),
        "columns": record.get("columns", {}),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def curate(
    config: WinnowConfig,
    layout: OutputLayout,
    refs: list[ShardRef],
    records: dict[str, dict[str, Any]],
    *,
    watch: Callable[[Policy], AbstractContextManager[Any]] = lambda _: nullcontext(),
) -> tuple[dict[str, Any], list[ShardFailure]]:
    """Filter every committed shard; return each pool policy's fitted state, and failures.

    `records` are the shards' commit records; each shard filtered gets its outcome
    written into its record, here and in its stats file. `watch` wraps each fit."""
    import ray

    policies = build_policies(config)
    failures: list[ShardFailure] = []
    if not refs:
        return {}, failures
    fit(policies, refs, config, layout, watch=watch)
    layout.prepare(FILTERED, *([REJECTED] if config.output.write_rejected else []))
    remote = ray.remote(num_cpus=0.5, max_retries=3)(filter_shard)
    pending: dict[Any, tuple[ShardRef, dict[str, Any], str]] = {}
    skipped = 0
    filtered = layout.names_in(FILTERED)
    for ref in refs:
        record = records[ref.name]
        shard_policies = [p.for_shard(ref.name) for p in policies]
        stamp = fingerprint(shard_policies, config, record)
        done = record.get("filters", {}).get("fingerprint") == stamp
        if done and ref.name in filtered:
            skipped += 1
            continue
        pending[remote.remote(ref, config, shard_policies)] = (ref, record, stamp)
    log.info("filtering %d shard(s), %d unchanged since last filtered", len(pending), skipped)
    tally = Tally(what="filters", unit="shard(s) filtered", total=len(pending))
    with logged_every(tally.line, logger=log):
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            ref, record, stamp = pending.pop(ready[0])
            tally.done += 1
            try:
                outcome = ray.get(ready[0])
            except Exception as error:  # one shard's filtering fails, not the run
                log.error("filtering shard %s failed: %s", ref.name, error)
                failures.append(
                    ShardFailure(name=ref.name, url=ref.input, error=f"filtering failed: {error}")
                )
                continue
            record["filters"] = {**outcome, "fingerprint": stamp}
            layout.write_json(layout.stats(ref.name), record)
    return {p.name: p.state() for p in policies if isinstance(p, PoolPolicy)}, failures
