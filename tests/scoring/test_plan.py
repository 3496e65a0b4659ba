"""How a run sizes its model actors and readers from the cluster's resources."""

from __future__ import annotations

from pipeline.config import RayConfig
from pipeline.scoring.dataset import plan_actors


def test_gpu_cluster_gets_one_actor_per_gpu_and_readers_on_every_free_cpu():
    plan = plan_actors(RayConfig(), {"CPU": 16.0, "GPU": 2.0})
    assert (plan.device, plan.actors, plan.gpus_per_actor, plan.read_tasks) == ("cuda", 2, 1, None)


def test_cpu_actors_share_the_cores_and_each_has_one_reader():
    plan = plan_actors(RayConfig(), {"CPU": 8.0})
    assert (plan.device, plan.actors, plan.threads, plan.read_tasks) == ("cpu", 2, 4, 2)
    small = plan_actors(RayConfig(), {"CPU": 2.0})
    assert (small.actors, small.threads, small.read_tasks) == (1, 2, 1)
    chosen = plan_actors(RayConfig(num_actors=3), {"CPU": 12.0})
    assert (chosen.actors, chosen.threads, chosen.read_tasks) == (3, 4, 3)
