"""The Ray Data plan: read tasks, tokenization, image headers, then the model actor pool.

Reading, tokenizing and reading image headers run as CPU tasks (fused by Ray
Data), the model runs on an actor pool with one actor per GPU, or CPU actors
sized to the cores.
Order is preserved so that rows reach the writer in input order and each
shard can be committed as soon as its last row arrives.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pipeline.config import RayConfig, WinnowConfig
from pipeline.images.headers import header_stage
from pipeline.io.reader import read_stage
from pipeline.scoring.captions import tokenize_stage
from pipeline.scoring.scorer import GPU_PIL_THREADS, ClipScorer

log = logging.getLogger(__name__)
READ_CPUS = 0.5
# A reader process reads and tokenizes about 3,000 web-like pairs/s (70 KB JPEGs;
# reading dominates) on one core of the 2-core development machine: eight feed one
# GPU's towers (ViT-B-32's: 14,000 pairs/s on an H200). Every free CPU instead meant
# thirty processes on the 16-core H200 machine, each then importing torch + open_clip
# (860 MB) beside the starting actor; its first block came 50 s after the job began.
# For CLIP's own BPE, readers now import neither (170 MB and 1 s of start each).
READERS_PER_GPU = 8


@dataclass(frozen=True, kw_only=True)
class ActorPlan:
    device: str
    actors: int
    gpus_per_actor: float
    # The CPUs Ray reserves for each actor: never so many that no reader fits beside them.
    cpus_per_actor: float
    threads: int | None
    # Blocks Ray hands each actor at once, no more: a block queued in one actor would wait
    # there while another idles. On a CPU one: decoding and towers share the cores.
    calls_per_actor: int
    # Concurrent read + tokenize tasks, each its own process (see READERS_PER_GPU).
    read_tasks: int
    # Threads each actor decodes with PIL on, unless `images.decode_threads` says.
    decode_threads: int

    def describe(self) -> str:
        if self.device == "cuda":
            per_gpu = round(1 / self.gpus_per_actor)
            return f"{self.actors} GPU actor(s)" + (f", {per_gpu} per GPU" if per_gpu > 1 else "")
        return f"{self.actors} CPU actor(s) x {self.threads} thread(s)"


def plan_actors(settings: RayConfig, resources: dict[str, float]) -> ActorPlan:
    gpus = int(resources.get("GPU", 0))
    cpus = max(1, int(resources.get("CPU", os.cpu_count() or 1)))
    if gpus:
        # More actors than GPUs share them, an equal slice each: two processes can keep
        # one GPU fed where one process's decode and launches cannot.
        actors = settings.num_actors or gpus
        cpus_each = _cpus_each(cpus, actors)
        free = max(1, int((cpus - actors * cpus_each) / READ_CPUS))
        read_tasks = min(free, READERS_PER_GPU * gpus)
        return ActorPlan(
            device="cuda",
            actors=actors,
            gpus_per_actor=1 / -(-actors // gpus),
            cpus_per_actor=cpus_each,
            threads=None,
            calls_per_actor=settings.batches_in_flight,
            read_tasks=read_tasks,
            decode_threads=max(GPU_PIL_THREADS, int((cpus - read_tasks * READ_CPUS) / actors)),
        )
    # A CPU model is a thousand times slower than reading and tokenizing: one reader
    # keeps every actor fed and leaves the cores to the towers. Up to four cores, one
    # single-threaded actor per core: two such processes ran ViT-B-32's towers 10-25%
    # faster than one process on two threads, whose threads wait on each other.
    actors = settings.num_actors or min(cpus, max(4, cpus // 4))
    threads = max(1, cpus // actors)
    return ActorPlan(
        device="cpu",
        actors=actors,
        gpus_per_actor=0,
        cpus_per_actor=_cpus_each(cpus, actors),
        threads=threads,
        calls_per_actor=1,
        read_tasks=1,
        decode_threads=threads,
    )


def _cpus_each(cpus: int, actors: int) -> float:
    """One CPU per actor, less where that would leave no room for a reader task."""
    return min(1.0, (cpus - READ_CPUS) / actors)


def scored_blocks(dataset: Any) -> Iterator[Any]:
    """The plan's output blocks, each as soon as it is scored.

    Ray Data's default prefetch holds each block back until the next one is
    done, which on a slow model delays every commit by a whole block.
    """
    return dataset.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0)


def build_dataset(tasks: list[dict[str, Any]], config: WinnowConfig, plan: ActorPlan) -> Any:
    import ray.data

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    models = [m.model_dump() for m in config.models]
    dataset = ray.data.from_items(tasks, override_num_blocks=max(1, len(tasks)))
    readers = ray.data.TaskPoolStrategy(size=plan.read_tasks)
    # Half a CPU each: light tasks, and a different footprint from the actors keeps
    # Ray Data from fusing them into the actor, where they would stall the model.
    dataset = dataset.map_batches(
        read_stage,
        batch_size=1,
        batch_format="numpy",
        fn_kwargs={"source": config.input},
        num_cpus=READ_CPUS,
        compute=readers,
    )
    dataset = dataset.map_batches(
        tokenize_stage,
        batch_size=None,
        batch_format="pyarrow",
        fn_kwargs={"models": config.models},
        num_cpus=READ_CPUS,
        compute=readers,
    )
    dataset = dataset.map_batches(
        header_stage,
        batch_size=None,
        batch_format="pyarrow",
        num_cpus=READ_CPUS,
        compute=readers,
    )
    # A CPU actor is handed each block as its read made it: a span, at most a batch's rows.
    # Bundled up to a batch first, 200-row spans became calls of 312 and 400 rows, a minute
    # and a half each, and the first actor to finish its last one idled while the other
    # worked through its own (42 s of a 275 s job on 2,048 pairs). GPUs need a batch size.
    call_rows = None if plan.device == "cpu" else max(m.batch_size for m in config.models)
    return dataset.map_batches(
        ClipScorer,
        batch_size=call_rows,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(
            size=plan.actors,
            max_concurrent_calls_per_actor=plan.calls_per_actor,
            max_tasks_in_flight_per_actor=plan.calls_per_actor,
            enable_true_multi_threading=plan.calls_per_actor > 1,
        ),
        num_gpus=plan.gpus_per_actor,
        num_cpus=plan.cpus_per_actor,
        fn_constructor_kwargs={
            "models": models,
            "images": config.images.model_dump(),
            "embedding_dtype": config.output.embedding_dtype,
            "device": plan.device,
            "threads": plan.threads,
            "decode_threads": plan.decode_threads,
        },
    )
