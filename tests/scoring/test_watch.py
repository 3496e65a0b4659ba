"""The watch on a scoring stream: what Ray waits for, a stall ended with a clear error, a
lost node that calls for a new plan."""

from __future__ import annotations

import logging

import pyarrow as pa
import pytest

from pipeline.config import RayConfig, parse_config
from pipeline.io.lock import LOCK
from pipeline.run import run
from pipeline.scoring.clock import StreamClock
from pipeline.scoring.job import Stalled
from pipeline.scoring.placement import Node, plan_actors
from pipeline.scoring.watch import ClusterState, PlacementWatch, unplaceable
from tests.builders import config_data, write_dataset

HEAD = Node(node_id="h" * 16, address="10.0.0.1", head=True, cpus=1.0, gpus=0.0)
WORKER = Node(node_id="w" * 16, address="10.0.0.2", head=False, cpus=2.0, gpus=0.0)


class Clock:
    def __init__(self) -> None:
        self.at = 0.0

    def __call__(self) -> float:
        return self.at


def state(nodes: list[Node], demands=(), free=None, launching: int = 0) -> ClusterState:
    free = free or {n.node_id: {"CPU": 0.0} for n in nodes}
    return ClusterState(nodes=nodes, free=free, demands=list(demands), launching=launching)


def watch_of(states: list[ClusterState], clock: Clock, *, stall: float = 60.0):
    plan = plan_actors(RayConfig(), [HEAD, WORKER])
    seen = iter(states)
    stream = StreamClock(actors=plan.actors, now=clock)
    watch = PlacementWatch(
        plan=plan, clock=stream, stall_seconds=stall, state=lambda: next(seen), now=clock
    )
    return watch, stream


def test_what_ray_cannot_place_is_named_with_each_nodes_free_room():
    stuck = state(
        [HEAD, WORKER],
        demands=[({"CPU": 0.5}, 1)],
        free={HEAD.node_id: {"CPU": 0.25}, WORKER.node_id: {"CPU": 0.333}},
    )
    assert unplaceable(stuck) == (
        "Ray cannot place 1 needing {CPU 0.5} (actors or tasks) on any live node "
        "(node hhhhhhhh (10.0.0.1, head: 1 CPU): CPU 0.25 free; "
        "node wwwwwwww (10.0.0.2: 2 CPU): CPU 0.333 free)"
    )
    placeable = state([HEAD, WORKER], demands=[({"CPU": 0.5}, 1)], free={HEAD.node_id: {"CPU": 1}})
    assert unplaceable(placeable) is None


def test_a_stream_waiting_for_room_is_stalled_only_after_the_timeout_without_rows():
    clock = Clock()
    waiting = state([HEAD, WORKER], demands=[({"CPU": 0.5}, 1)])
    watch, stream = watch_of([waiting] * 4, clock, stall=60.0)
    clock.at = 10.0
    assert watch.check() is None and "CPU 0.5" in (watch.waiting or "")
    clock.at = 65.0
    list(stream.watch([pa.table({"x": [1]})]))  # a block came: progress
    assert watch.check() is None
    clock.at = 120.0
    assert watch.check() is None, "60 s since the last block is not yet over the timeout"
    clock.at = 126.0
    verdict = watch.check()
    assert verdict is not None and not verdict.replan
    assert verdict.reason.startswith("no rows came back for 60 s while Ray cannot place")


def test_nodes_an_autoscaler_is_starting_are_waited_for():
    clock = Clock()
    waiting = state([HEAD, WORKER], demands=[({"CPU": 0.5}, 1)], launching=1)
    watch, _ = watch_of([waiting] * 2, clock, stall=1.0)
    clock.at = 100.0
    assert watch.check() is None and watch.check() is None


def test_a_lost_node_calls_for_a_new_plan_when_the_plan_no_longer_fits(caplog):
    clock = Clock()
    watch, _ = watch_of([state([HEAD, WORKER]), state([HEAD])], clock)
    assert watch.check() is None
    with caplog.at_level(logging.WARNING):
        verdict = watch.check()
    assert verdict is not None and verdict.replan
    assert "node wwwwwwww (10.0.0.2: 2 CPU) left" in verdict.reason
    assert "left the cluster mid-run" in caplog.text


def test_a_lost_node_the_plan_can_do_without_is_only_reported(caplog):
    clock = Clock()
    spare = Node(node_id="s" * 16, address="10.0.0.3", head=False, cpus=0.0, gpus=0.0)
    plan = plan_actors(RayConfig(), [HEAD, WORKER, spare])
    seen = iter([state([HEAD, WORKER])])
    watch = PlacementWatch(
        plan=plan,
        clock=StreamClock(actors=plan.actors, now=clock),
        stall_seconds=60,
        state=lambda: next(seen),
        now=clock,
    )
    with caplog.at_level(logging.WARNING):
        assert watch.check() is None
    assert watch.lost == [spare]


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_a_run_whose_actors_cannot_be_placed_ends_naming_the_cpus_and_a_rerun_finishes(
    tmp_path, tiny_checkpoint
):
    """Another job holds the machine's CPUs: the run says what it waits for, gives up after
    ray.stall_timeout_s with an error that names it, and keeps no half-written shard."""
    import ray

    @ray.remote(num_cpus=2)
    class Holder:
        def ready(self) -> bool:
            return True

    holder = Holder.remote()
    ray.get(holder.ready.remote())
    write_dataset(tmp_path / "in", shards=2, rows=6)
    data = config_data(tmp_path / "in", tmp_path / "out", tiny_checkpoint)
    data["ray"]["stall_timeout_s"] = 2
    try:
        with pytest.raises(Stalled, match=r"no rows came back for 2 s while Ray cannot place"):
            run(parse_config(data))
    finally:
        ray.kill(holder)
    assert not list((tmp_path / "out").rglob("*.parquet"))
    assert not (tmp_path / "out" / LOCK).exists()
    result = run(parse_config(data))
    assert result.summary["this_run"]["shards_new"] == 2
