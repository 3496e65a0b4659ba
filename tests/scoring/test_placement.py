"""How a run sizes its model actors and readers from the cluster's nodes."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from pipeline.config import RayConfig
from pipeline.scoring.placement import (
    READ_CPUS,
    READERS_PER_GPU,
    ActorPlan,
    Node,
    PlacementError,
    plan_actors,
    single_node,
)
from pipeline.scoring.prepare import GPU_PIL_THREADS


def _reserved(plan: ActorPlan) -> float:
    return plan.actors * plan.cpus_per_actor + READ_CPUS * plan.read_tasks


def test_gpu_cluster_gets_one_actor_per_gpu_and_readers_to_feed_them():
    plan = plan_actors(RayConfig(batches_in_flight=3), single_node(16.0, 2.0))
    assert (plan.device, plan.actors, plan.gpus_per_actor) == ("cuda", 2, 1)
    assert plan.read_tasks == 2 * READERS_PER_GPU
    assert plan.calls_per_actor == 3
    assert plan.describe() == "2 GPU actor(s)"


@pytest.mark.parametrize(("cpus", "readers"), [(64.0, READERS_PER_GPU), (4.0, 6), (1.0, 1)])
def test_gpu_readers_are_capped_by_the_gpu_and_fit_beside_the_actor(cpus, readers):
    """More reader processes than the GPU can use only slow its actor's start."""
    plan = plan_actors(RayConfig(), single_node(cpus, 1.0))
    assert plan.read_tasks == readers
    assert _reserved(plan) <= max(cpus, plan.cpus_per_actor + READ_CPUS)


@pytest.mark.parametrize(
    ("cpus", "gpus", "actors", "threads"),
    [(16, 1, 1, 12), (16, 1, 2, 6), (16, 2, 2, 4), (4, 1, 1, GPU_PIL_THREADS), (64, 1, 1, 60)],
)
def test_gpu_actors_decode_pil_rows_on_the_cores_their_readers_leave(cpus, gpus, actors, threads):
    """Rows nvJPEG does not take (every row with `images.decode: pil`) are decoded with PIL
    in the actor: on a few threads, one core's rate would bound the GPU."""
    plan = plan_actors(RayConfig(num_actors=actors), single_node(float(cpus), float(gpus)))
    assert plan.decode_threads == threads


@pytest.mark.parametrize(("gpus", "actors", "share"), [(1, 2, 0.5), (2, 3, 0.5), (2, 1, 1.0)])
def test_more_gpu_actors_than_gpus_share_them(gpus, actors, share):
    """Each actor asks for a slice that fits: a whole GPU each would leave some never placed."""
    plan = plan_actors(RayConfig(num_actors=actors), single_node(16.0, float(gpus)))
    assert (plan.actors, plan.gpus_per_actor) == (actors, share)
    slots = gpus * int(1 / plan.gpus_per_actor)
    assert slots >= actors
    if share < 1:
        assert plan.describe() == f"{actors} GPU actor(s), {int(1 / share)} per GPU"


@pytest.mark.parametrize(
    ("cpus", "actors", "threads"),
    [(1, 1, 1), (2, 2, 1), (4, 4, 1), (8, 4, 2), (16, 4, 4), (64, 16, 4)],
)
def test_cpu_actors_share_the_cores_with_one_reader(cpus, actors, threads):
    """Single-threaded actors up to four cores; one batch at a time; the reader always fits."""
    plan = plan_actors(RayConfig(batches_in_flight=2), single_node(float(cpus)))
    assert (plan.device, plan.actors, plan.threads, plan.read_tasks) == ("cpu", actors, threads, 1)
    assert plan.decode_threads == threads  # decoding and towers share the actor's cores
    assert plan.calls_per_actor == 1
    assert _reserved(plan) <= cpus


def test_chosen_actor_counts_leave_room_for_the_reader():
    """More actors than cores must not hold every CPU: the reader would never start."""
    chosen = plan_actors(RayConfig(num_actors=3), single_node(12.0))
    assert (chosen.actors, chosen.threads, chosen.read_tasks) == (3, 4, 1)
    crowded = plan_actors(RayConfig(num_actors=4), single_node(2.0))
    assert (crowded.actors, crowded.threads) == (4, 1)
    assert _reserved(crowded) <= 2


def node(name: str, cpus: float, gpus: float = 0.0, *, head: bool = False) -> Node:
    return Node(node_id=name * 8, address="10.0.0.1", head=head, cpus=cpus, gpus=gpus)


def placements(most: list[int], actors: int) -> Iterator[tuple[int, ...]]:
    """Every way to put `actors` on nodes that take at most `most` each."""
    if not most:
        if actors == 0:
            yield ()
        return
    for here in range(min(most[0], actors) + 1):
        for rest in placements(most[1:], actors - here):
            yield (here, *rest)


def assert_a_reader_always_fits(plan: ActorPlan, nodes: list[Node]) -> None:
    """However Ray places the actors, every one has a place and a read task fits on some
    node: checked over every placement Ray could make."""
    each = round(plan.cpus_per_actor * 10_000)
    per_gpu = round(1 / plan.gpus_per_actor) if plan.gpus_per_actor else 0
    most = [
        min(
            int(n.gpus) * per_gpu if plan.device == "cuda" else 10**6,
            round(n.cpus * 10_000) // each if each else 10**6,
        )
        for n in nodes
    ]
    assert sum(most) >= plan.actors, "some actor would have no place"
    for placed in placements(most, plan.actors):
        free = [round(n.cpus * 10_000) - p * each for n, p in zip(nodes, placed, strict=True)]
        assert max(free) >= READ_CPUS * 10_000, f"no reader fits with actors at {placed}"


def test_uneven_nodes_get_actors_each_can_hold_and_room_for_the_reader():
    """The cluster that hung: 3 CPUs in all, but 1 + 2 on two nodes."""
    nodes = [node("h", 1.0, head=True), node("w", 2.0)]
    plan = plan_actors(RayConfig(), nodes)
    assert (plan.actors, plan.threads, plan.cpus_per_actor) == (3, 1, 0.75)
    assert_a_reader_always_fits(plan, nodes)
    assert plan.by_node() == [
        "node hhhhhhhh (10.0.0.1, head: 1 CPU): 1 actor(s) of 0.75 CPU",
        "node wwwwwwww (10.0.0.1: 2 CPU): 2 actor(s) of 0.75 CPU + 1 read task(s)",
    ]


def test_a_head_without_cpus_is_left_out_and_alone_it_is_an_error_naming_the_cpu():
    head = node("h", 0.0, head=True)
    plan = plan_actors(RayConfig(), [head, node("w", 2.0)])
    assert plan.actors == 2
    assert (
        plan.by_node()[0]
        == "node hhhhhhhh (10.0.0.1, head: 0 CPU): left out (no room for an actor)"
    )
    with pytest.raises(
        PlacementError, match=r"no node has a whole CPU.*CPU >= 1 missing.*head: 0 CPU"
    ):
        plan_actors(RayConfig(), [head])


def test_cpu_actors_take_the_shape_that_puts_the_most_cores_to_work():
    """A small head and a 16-core worker: four 4-thread actors on the worker, the head's
    core left to the reader, rather than 1-thread actors everywhere."""
    nodes = [node("h", 1.0, head=True), node("w", 16.0)]
    plan = plan_actors(RayConfig(), nodes)
    assert (plan.actors, plan.threads) == (4, 4)
    assert_a_reader_always_fits(plan, nodes)


def test_gpu_actors_go_one_per_gpu_on_gpu_nodes_and_readers_anywhere():
    nodes = [node("h", 0.0, head=True), node("g", 8.0, 2.0), node("G", 16.0, 4.0), node("c", 4.0)]
    plan = plan_actors(RayConfig(), nodes)
    assert (plan.device, plan.actors, plan.gpus_per_actor) == ("cuda", 6, 1.0)
    assert [share.actors for share in plan.nodes] == [0, 2, 4, 0]
    assert plan.read_tasks == sum(share.read_tasks for share in plan.nodes) <= 6 * READERS_PER_GPU
    assert plan.nodes[3].read_tasks > 0, "a CPU-only node takes read tasks"
    assert_a_reader_always_fits(plan, nodes)


def test_a_gpu_node_without_cpus_takes_actors_that_reserve_none():
    nodes = [node("g", 0.0, 1.0), node("c", 2.0)]
    plan = plan_actors(RayConfig(), nodes)
    assert (plan.actors, plan.cpus_per_actor) == (1, 0.0)
    assert_a_reader_always_fits(plan, nodes)


@pytest.mark.parametrize("seed", range(40))
def test_on_any_cluster_every_actor_has_a_place_and_a_reader_always_fits(seed):
    rng = random.Random(seed)
    nodes = [
        node(
            chr(97 + i),
            float(rng.choice([0, 1, 1, 2, 3, 4, 8])),
            float(rng.choice([0, 0, 0, 1, 2])),
        )
        for i in range(rng.randint(1, 4))
    ]
    actors = rng.choice([None, None, 1, 2, 5])
    try:
        plan = plan_actors(RayConfig(num_actors=actors), nodes)
    except PlacementError:
        assert all(n.cpus < 1 for n in nodes) or all(n.cpus < READ_CPUS for n in nodes)
        return
    assert_a_reader_always_fits(plan, nodes)


def test_a_plan_stops_fitting_when_a_node_it_counts_on_leaves():
    head, worker = node("h", 1.0, head=True), node("w", 2.0)
    plan = plan_actors(RayConfig(), [head, worker])
    assert plan.fits([head, worker])
    assert not plan.fits([head])
    big = plan_actors(RayConfig(), [node("a", 16.0, 1.0), node("b", 16.0, 1.0)])
    assert not big.fits([node("a", 16.0, 1.0)]), "two GPU actors, one GPU left"
