"""The benchmark: model-only, decode-only and end-to-end rates measured in one run.

Speed claims are ratios measured side by side on the same data and machine:
the towers alone on pre-made tensors (the ceiling), image decode + preprocess
alone, and the real job from Parquet on disk to scored Parquet on disk.
Weights are random unless given: speed does not depend on them.
"""

from __future__ import annotations

import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.bench.cpu_use import CpuUse, cpu_use
from pipeline.bench.decode_rates import decode_only, decode_tensor, synchronise
from pipeline.config import (
    ConfigError,
    ModelConfig,
    RayConfig,
    WinnowConfig,
    parse_config,
)
from pipeline.config_sections import DecodePath
from pipeline.heartbeat import logged_every, so_far
from pipeline.io.shards import discover, span_rows
from pipeline.models.encoder import encoder_for, resolve_precision
from pipeline.scoring.placement import ActorPlan, plan_actors, single_node
from pipeline.synth.web_pairs import WebPairsSpec, web_pairs

log = logging.getLogger(__name__)
T = TypeVar("T")
# Enough calls for a steady towers-only rate: ViT-L-14 over all of a large run's
# pairs would take half a minute of a GPU session's few minutes and tell no more.
MODEL_ONLY_CALLS = 64


@dataclass(frozen=True, kw_only=True)
class BenchSpec:
    model: str = "ViT-B-32"
    pretrained: str | None = None
    precision: str = "auto"
    device: str = "auto"
    batch_size: int = 256
    in_flight: int = 2
    actors: int | None = None
    compare_rows: int = 128
    # The decode-only rates and the tensor vs PIL comparison depend on the preprocess
    # alone: a second model with the same one (ViT-L-14 after ViT-B-32) can skip them.
    decodes: bool = True
    # The job's decode path (`images.decode`): `pil` measures a GPU job that decodes with
    # PIL in the actor, the towers on the GPU, against the same ceiling.
    decode: DecodePath = "auto"
    # What the generated shards depend on: every layout compared on them shares it.
    data: WebPairsSpec = field(default_factory=WebPairsSpec)


def _device(spec: BenchSpec) -> str:
    import torch

    if spec.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if spec.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: torch finds no CUDA device here; use --device cpu")
    return spec.device


def _model(spec: BenchSpec, precision: str | None = None) -> ModelConfig:
    """The benchmarked model, as every measurement and the job itself configure it."""
    return ModelConfig(
        name=spec.model,
        pretrained=spec.pretrained,
        precision=precision or spec.precision,
        batch_size=spec.batch_size,
    )


def _ray(spec: BenchSpec) -> RayConfig:
    return RayConfig(num_actors=spec.actors, batches_in_flight=spec.in_flight)


def layout(spec: BenchSpec, device: str) -> ActorPlan:
    """The model actors a local job runs on this machine: model-only measures the same layout."""
    cpus = float(len(os.sched_getaffinity(0)))
    return plan_actors(_ray(spec), single_node(cpus, 1.0 if device == "cuda" else 0.0))


def towers_rate(
    spec: BenchSpec,
    device: str,
    *,
    calls: list[int],
    threads: int | None = None,
    start: Any = None,
) -> float:
    """Pairs/s of both towers on pre-made tensors in this process, a call of each of `calls`
    rows in turn; `start` lines up processes."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    config = _model(spec)
    family = encoder_for(config)
    encoder = family.load(config, device=device)
    rows = max(calls)
    pixels = torch.randn(rows, 3, *encoder.image_size, device=device, dtype=encoder.dtype)
    ids = family.tokenizer(family.tokenizer_key(config))(["a photo of a cat"] * rows)
    tokens = torch.from_numpy(ids).long().to(device)
    with torch.inference_mode():
        encoder.encode_images(pixels)
        encoder.encode_texts(tokens)
        synchronise(device)
        if start is not None:
            start.wait()
        started = time.perf_counter()
        for call in calls:
            encoder.encode_images(pixels[:call])
            encoder.encode_texts(tokens[:call])
        synchronise(device)
    return sum(calls) / (time.perf_counter() - started)


def job_calls(folder: Path, spec: BenchSpec, plan: ActorPlan) -> list[int]:
    """The rows of each towers call the job makes on these shards, in its order.

    On a GPU, batches of the batch size. A CPU actor scores each span its read made a
    batch at a time (`build_dataset`), and a CPU model is faster per row on fewer rows
    (ViT-B-32 on one thread here: 4.9 pairs/s in calls of 64, 4.1 in calls of 256), so
    the ceiling is timed on the same calls as the job's, not on full batches.
    """
    if plan.device == "cuda":
        calls = [spec.batch_size] * max(1, spec.data.pairs // spec.batch_size)
    else:
        config = _config(folder, "unused", spec)
        step = spec.batch_size
        calls = [
            min(step, task["rows"] - at)
            for shard in discover(config.input.paths(), {}).shards
            for task in shard.read_tasks(rows=span_rows(config))
            for at in range(0, task["rows"], step)
        ]
    return calls[:MODEL_ONLY_CALLS]


def model_only(spec: BenchSpec, device: str, plan: ActorPlan, calls: list[int]) -> float:
    """Pairs/s of the towers alone, in the job's actor layout: the ceiling for the whole job.

    Several CPU actors are as many processes, each on its share of the calls and its
    threads, timed together.
    """
    if plan.actors == 1:
        return towers_rate(spec, device, calls=calls, threads=plan.threads)
    context = get_context("spawn")
    shares = [calls[actor :: plan.actors] or calls[:1] for actor in range(plan.actors)]
    with context.Manager() as manager, ProcessPoolExecutor(plan.actors, mp_context=context) as pool:
        start = manager.Barrier(plan.actors)
        rates = [
            pool.submit(towers_rate, spec, device, calls=share, threads=plan.threads, start=start)
            for share in shares
        ]
        return sum(rate.result() for rate in rates)


def _config(folder: Path, output: str, spec: BenchSpec, **images: Any) -> WinnowConfig:
    return parse_config(
        {
            "input": {"path": str(folder)},
            "output": {"path": output, "report": False},
            "models": [_model(spec).model_dump()],
            "images": {"decode": spec.decode, **images},
            "ray": _ray(spec).model_dump(),
        }
    )


def path_difference(folder: Path, spec: BenchSpec, device: str) -> dict[str, float] | None:
    """Max and mean |score difference| between the tensor and PIL decode paths, same rows."""
    import torch

    from pipeline.scoring.local import score_table, scorer_for

    first = sorted(folder.glob("*.parquet"))[0]
    rows = next(pq.ParquetFile(first).iter_batches(batch_size=spec.compare_rows))
    rows = pa.Table.from_batches([rows])
    scores = []
    for decode in ("pil", "tensor"):
        config = _config(folder, "unused", spec, decode=decode)
        torch.manual_seed(spec.data.seed)  # the same random weights for both, where none are given
        scorer = scorer_for(config, device=device)
        if decode == "tensor" and scorer.preparer.jpeg_device is None:
            return None
        out = score_table(rows, config, scorer)
        scores.append(np.asarray(out["clip_score"].to_numpy(zero_copy_only=False), np.float64))
    difference = np.abs(scores[0] - scores[1])
    difference = difference[~np.isnan(difference)]
    return {
        "rows": int(difference.size),
        "max": round(float(difference.max()), 5),
        "mean": round(float(difference.mean()), 5),
    }


def end_to_end(folder: Path, spec: BenchSpec) -> tuple[dict[str, Any], CpuUse]:
    """The real job, Parquet on disk to scored Parquet on disk: its summary's `this_run`,
    and where the machine's CPU went meanwhile."""
    from pipeline.run import run

    with tempfile.TemporaryDirectory() as output, cpu_use() as used:
        summary = run(_config(folder, output, spec)).summary["this_run"]
    return summary, used


def _describe(device: str) -> str:
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def _step(what: str, measure: Callable[[], T], *, heartbeat: bool = True) -> T:
    """Run one measurement with a line before and after: a CPU bench runs for minutes.
    In between, how long it has run every 30 s, unless it logs its own progress
    (`heartbeat=False`: the real job's scoring line)."""
    log.info("bench: %s ...", what)
    started = time.perf_counter()
    with logged_every(so_far(f"bench: {what}"), logger=log) if heartbeat else nullcontext():
        value = measure()
    rate = f"{value:,.1f} /s, " if isinstance(value, float) else ""
    log.info("bench: %s: %sdone in %.0f s", what, rate, time.perf_counter() - started)
    return value


def benchmark(spec: BenchSpec, *, workdir: Path) -> dict[str, Any]:
    # Checked as a job checks its config, before minutes of data and measurements.
    config = _model(spec)
    encoder_for(config).check(config, name_key="--model", pretrained_key="--pretrained")
    device = _device(spec)
    plan = layout(spec, device)
    data = workdir / "shards"
    generated = _step(f"data, {spec.data.pairs} pairs", lambda: web_pairs(data, spec.data))
    calls = job_calls(data, spec, plan)
    # One process on every thread, on as many calls as each of the layout's processes.
    one_process = replace(plan, actors=1, threads=None)
    fp32 = _model(spec, precision="fp32")
    images = min(max(spec.batch_size, spec.data.pairs // 4), 8192)
    tensor = (
        _step(
            f"decode + preprocess, tensor path on {device}, {images} images",
            lambda: decode_tensor(
                data, fp32, count=images, batch_size=spec.batch_size, device=device
            ),
        )
        if spec.decodes
        else None
    )
    ceiling = partial(model_only, spec, device, plan, calls)
    before = _step(f"model only, {plan.describe()}", ceiling)
    rates = {
        "model_only_pairs_per_s": before,
        "model_only_one_process_pairs_per_s": (
            _step(
                "model only, one process",
                lambda: model_only(spec, device, one_process, calls[:: plan.actors]),
            )
            if plan.actors > 1
            else None
        ),
        "decode_cpu_images_per_s": (
            _step(
                "decode + preprocess, PIL on one core",
                lambda: decode_only(data, fp32, count=min(images, 1024)),
            )
            if spec.decodes
            else None
        ),
        "decode_tensor_images_per_s": tensor["images_per_s"] if tensor else None,
    }
    difference = (
        _step("tensor vs PIL decode path scores", lambda: path_difference(data, spec, device))
        if spec.decodes
        else None
    )
    job, used = _step("end to end, the real job", lambda: end_to_end(data, spec), heartbeat=False)
    # A shared CPU's speed drifts by several percent over minutes (ViT-B-32's towers in
    # each of two one-thread processes here: 7.1, then 7.8, then 6.6 pairs/s within nine
    # minutes), as much as the ratio's margin: timed again after the job, the ceiling is
    # the mean of the two around it.
    after = _step("model only, again after the job", ceiling) if device == "cpu" else None
    if after is not None:
        rates["model_only_pairs_per_s"] = (before + after) / 2
    rates["end_to_end_pairs_per_s"] = job["rows_per_second"]
    rates["end_to_end_after_startup_pairs_per_s"] = job["steady_rows_per_second"]
    ratios = {
        k: None if v is None else round(v / rates["model_only_pairs_per_s"], 3)
        for k, v in rates.items()
    }
    return {
        "spec": asdict(spec),
        "device": _describe(device),
        "device_type": device,
        "precision": resolve_precision(spec.precision, device),
        "actors": job["actors"],
        "first_blocks_seconds": job["first_blocks_seconds"],
        "startup_seconds": job["startup_seconds"],
        "model_only_layout": plan.describe(),
        "model_only_before_after": None if after is None else [round(before, 1), round(after, 1)],
        "model_only_drift": None if after is None else round(after / before - 1, 4),
        "model_only_calls": {"calls": len(calls), "rows": [min(calls), max(calls)]},
        "batches_in_flight_per_actor": plan.calls_per_actor,
        "decode_threads": plan.decode_threads,
        "data": generated,
        "rates": {k: None if v is None else round(v, 1) for k, v in rates.items()},
        "ratios_to_model_only": ratios,
        "ratio_end_to_end_vs_model_only": ratios["end_to_end_pairs_per_s"],
        "tensor_path_us_per_image": tensor["us_per_image"] if tensor else None,
        "tensor_path_host_us_per_image": tensor["host_us_per_image"] if tensor else None,
        "tensor_vs_pil_score_difference": difference,
        "job_cpu": asdict(used),
    }
