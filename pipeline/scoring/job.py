"""The scoring stage as a run drives it: plan, stream, commit shard by shard, and a new
plan on the nodes that are left when some leave mid-run.

A node that leaves takes its actors and the blocks it held. Ray restarts the
actors and redoes the tasks where they fit; where they no longer fit, the stream
is ended, the shards not yet committed are dropped (their temporary files too),
and the rest is streamed again on a plan made for the nodes that are left. A
shard commits only whole, so no row is written twice and none is lost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import WinnowConfig
from pipeline.interrupt import interruptible
from pipeline.io.layout import OutputLayout
from pipeline.io.shards import Shard, ShardFailure, span_rows
from pipeline.io.sink import ShardSink
from pipeline.models.encoder import encoder_for
from pipeline.scoring.clock import StreamClock
from pipeline.scoring.dataset import build_dataset, scored_blocks
from pipeline.scoring.placement import (
    ActorPlan,
    Node,
    PlacementError,
    ScoringFailed,
    alive_nodes,
    plan_actors,
)
from pipeline.scoring.progress import StreamProgress
from pipeline.scoring.watch import PlacementWatch, StreamHalted, Verdict

log = logging.getLogger(__name__)
# New plans a run makes after nodes left before it gives up (each costs the actors' start).
MAX_REPLANS = 3


class ActorsFailed(ScoringFailed):
    """The run cannot score: its model actors died, each replacement too."""


class Stalled(ScoringFailed):
    """The stream could not go on: Ray had work it could not place, or nodes kept leaving."""


@dataclass(kw_only=True)
class Scoring:
    """What the scoring stage did: commit records, failed shards, its plans and events."""

    plan: ActorPlan
    clock: StreamClock
    committed: list[dict[str, Any]] = field(default_factory=list)
    failures: list[ShardFailure] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def cluster(self) -> dict[str, Any]:
        """The summary's record of where the work ran and what happened to the cluster."""
        return {"plan": self.plan.by_node(), "events": self.events}


def score_shards(
    todo: list[Shard],
    *,
    layout: OutputLayout,
    config: WinnowConfig,
    metadata: dict[str, Any],
    nodes: list[Node],
) -> Scoring:
    plan = plan_actors(config.ray, nodes)
    scoring = Scoring(plan=plan, clock=StreamClock(actors=plan.actors))
    progress = StreamProgress(
        clock=scoring.clock,
        total_rows=sum(s.num_rows for s in todo),
        total_shards=len(todo),
        committed=scoring.committed,
    )
    dims = {m.alias: encoder_for(m).width(m) for m in config.models}
    remaining = todo
    while remaining:
        sink = ShardSink(
            shards=remaining,
            layout=layout,
            config=config,
            dims=dims,
            metadata=metadata,
            committed=scoring.committed,
            total=len(todo),
        )
        verdict = _stream(remaining, sink, scoring, progress, config)
        scoring.failures += sink.failures
        remaining = sink.open_shards
        if verdict is None or not remaining:
            break
        sink.abort_open()
        done = f"{len(scoring.committed)} shard(s) committed so far are kept"
        if not verdict.replan or len(scoring.events) >= MAX_REPLANS:
            raise Stalled(
                f"scoring stopped: {verdict.reason}; {done}, and a rerun goes on from there "
                "(ray.stall_timeout_s is how long a run waits)"
            )
        try:
            scoring.plan = plan_actors(config.ray, alive_nodes())
        except PlacementError as error:
            raise Stalled(f"scoring stopped: {verdict.reason}, and {error}; {done}") from error
        event = f"{verdict.reason}: {len(remaining)} shard(s) streamed again on a new plan"
        log.warning("%s (%s)", event, scoring.plan.describe())
        scoring.events.append(event)
    scoring.seconds = scoring.clock.elapsed
    return scoring


def _stream(
    shards: list[Shard],
    sink: ShardSink,
    scoring: Scoring,
    progress: StreamProgress,
    config: WinnowConfig,
) -> Verdict | None:
    """Stream `shards` through the plan into `sink`; a verdict if it had to end early."""
    from ray.exceptions import ActorDiedError, RayError

    plan, clock = scoring.plan, scoring.clock
    tasks = [task for shard in shards for task in shard.read_tasks(rows=span_rows(config))]
    log.info("scoring %d shard(s) in %d read(s) on %s", len(shards), len(tasks), plan.describe())
    for line in plan.by_node():
        log.info("plan: %s", line)
    watch = PlacementWatch(plan=plan, clock=clock, stall_seconds=config.ray.stall_timeout_s)
    progress.waiting = lambda: watch.waiting
    blocks = scored_blocks(build_dataset(tasks, config, plan)) if tasks else iter(())
    try:
        with progress.logged(), watch.watching():
            sink.consume(clock.watch(interruptible(blocks)))
    except StreamHalted:
        return watch.verdict
    except RayError as error:
        # A node that left takes its actors and the blocks it held with it; Ray's errors
        # for either end the stream like the watch does. Other errors are the run's own.
        cause = str(error).strip().splitlines()[-1]  # the innermost error of the traceback
        if watch.lost or len(alive_nodes()) < len(plan.nodes):
            return Verdict(replan=True, reason=f"a node left the cluster ({cause})")
        if isinstance(error, ActorDiedError):  # after Ray's restarts: nothing to score on
            raise ActorsFailed(
                f"the model actors could not start or kept dying ({cause}); "
                f"{len(scoring.committed)} shard(s) were committed before, and a rerun goes "
                "on from there"
            ) from error
        raise
    finally:
        close = getattr(blocks, "close", None)
        if close:
            close()  # ends Ray Data's execution: its actors give their resources back
    return None
