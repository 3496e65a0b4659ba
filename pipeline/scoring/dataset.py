"""The Ray Data plan: read tasks, tokenization, image headers, then the model actor pool.

Reading, tokenizing and reading image headers run as CPU tasks (fused by Ray
Data), the model runs on an actor pool with one actor per GPU, or CPU actors
sized to the cores (`placement` makes the plan, node by node).
Order is preserved so that rows reach the writer in input order and each
shard can be committed as soon as its last row arrives.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pipeline.config import WinnowConfig
from pipeline.images.headers import header_stage
from pipeline.io.reader import read_stage
from pipeline.scoring.captions import tokenize_stage
from pipeline.scoring.placement import READ_CPUS, ActorPlan
from pipeline.scoring.scorer import ClipScorer


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
    # Bundled up to a batch, spans become uneven calls of minutes each on a slow model, and
    # the first actor done idles while another finishes its last. GPUs need a batch size.
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
            "heads": [head.model_dump() for head in config.heads],
            "concepts": [concept.model_dump() for concept in config.concepts],
            "embedding_dtype": config.output.embedding_dtype,
            "device": plan.device,
            "threads": plan.threads,
            "decode_threads": plan.decode_threads,
        },
    )
