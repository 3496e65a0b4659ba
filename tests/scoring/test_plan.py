"""How a run sizes its model actors and readers from the cluster's resources."""

from __future__ import annotations

import pytest

from pipeline.config import RayConfig
from pipeline.scoring.dataset import READ_CPUS, READERS_PER_GPU, ActorPlan, plan_actors
from pipeline.scoring.scorer import GPU_PIL_THREADS


def _reserved(plan: ActorPlan) -> float:
    return plan.actors * plan.cpus_per_actor + READ_CPUS * plan.read_tasks


def test_gpu_cluster_gets_one_actor_per_gpu_and_readers_to_feed_them():
    plan = plan_actors(RayConfig(batches_in_flight=3), {"CPU": 16.0, "GPU": 2.0})
    assert (plan.device, plan.actors, plan.gpus_per_actor) == ("cuda", 2, 1)
    assert plan.read_tasks == 2 * READERS_PER_GPU
    assert plan.calls_per_actor == 3
    assert plan.describe() == "2 GPU actor(s)"


@pytest.mark.parametrize(("cpus", "readers"), [(64.0, READERS_PER_GPU), (4.0, 6), (1.0, 1)])
def test_gpu_readers_are_capped_by_the_gpu_and_fit_beside_the_actor(cpus, readers):
    """More reader processes than the GPU can use only slow its actor's start."""
    plan = plan_actors(RayConfig(), {"CPU": cpus, "GPU": 1.0})
    assert plan.read_tasks == readers
    assert _reserved(plan) <= max(cpus, plan.cpus_per_actor + READ_CPUS)


@pytest.mark.parametrize(
    ("cpus", "gpus", "actors", "threads"),
    [(16, 1, 1, 12), (16, 1, 2, 6), (16, 2, 2, 4), (4, 1, 1, GPU_PIL_THREADS), (64, 1, 1, 60)],
)
def test_gpu_actors_decode_pil_rows_on_the_cores_their_readers_leave(cpus, gpus, actors, threads):
    """Rows nvJPEG does not take (every row with `images.decode: pil`) are decoded with PIL
    in the actor: on a few threads, one core's rate would bound the GPU."""
    plan = plan_actors(RayConfig(num_actors=actors), {"CPU": float(cpus), "GPU": float(gpus)})
    assert plan.decode_threads == threads


@pytest.mark.parametrize(("gpus", "actors", "share"), [(1, 2, 0.5), (2, 3, 0.5), (2, 1, 1.0)])
def test_more_gpu_actors_than_gpus_share_them(gpus, actors, share):
    """Each actor asks for a slice that fits: a whole GPU each would leave some never placed."""
    plan = plan_actors(RayConfig(num_actors=actors), {"CPU": 16.0, "GPU": float(gpus)})
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
    plan = plan_actors(RayConfig(batches_in_flight=2), {"CPU": float(cpus)})
    assert (plan.device, plan.actors, plan.threads, plan.read_tasks) == ("cpu", actors, threads, 1)
    assert plan.decode_threads == threads  # decoding and towers share the actor's cores
    assert plan.calls_per_actor == 1
    assert _reserved(plan) <= cpus


def test_chosen_actor_counts_leave_room_for_the_reader():
    """More actors than cores must not hold every CPU: the reader would never start."""
    chosen = plan_actors(RayConfig(num_actors=3), {"CPU": 12.0})
    assert (chosen.actors, chosen.threads, chosen.read_tasks) == (3, 4, 1)
    crowded = plan_actors(RayConfig(num_actors=4), {"CPU": 2.0})
    assert (crowded.actors, crowded.threads) == (4, 1)
    assert _reserved(crowded) <= 2
