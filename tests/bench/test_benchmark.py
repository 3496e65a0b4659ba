"""The benchmark in CI size: a smoke test of its code, with no timing assertion."""

from __future__ import annotations

import json
import logging
import os

import pytest

from pipeline.bench.benchmark import BenchSpec, _config, benchmark, job_calls, layout
from pipeline.bench.table import table, write_json
from pipeline.cli import main
from pipeline.io.shards import discover, span_rows
from pipeline.scoring.dataset import build_dataset, scored_blocks
from pipeline.synth.web_pairs import WebPairsSpec, web_pairs
from tests.builders import TINY

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]


def test_benchmark_measures_every_stage_on_generated_web_like_data(tmp_path, caplog):
    spec = BenchSpec(
        model=TINY,
        device="cpu",
        batch_size=16,
        compare_rows=24,
        data=WebPairsSpec(pairs=96, shards=4),
    )
    with caplog.at_level(logging.INFO, logger="pipeline.bench.benchmark"):
        result = benchmark(spec, workdir=tmp_path)
    for step in ("data, 96 pairs", "model only, ", "end to end, the real job"):
        assert f"bench: {step}" in caplog.text  # each step says it began and when it ended
    assert "bench: end to end, the real job: done in" in caplog.text
    assert result["data"]["pairs"] == result["data"]["distinct_images"] == 96
    assert 5 < result["data"]["jpeg_kb_median"] < 400
    several = layout(spec, "cpu").actors > 1
    assert set(result["rates"]) == {
        "model_only_pairs_per_s",
        "model_only_one_process_pairs_per_s",
        "decode_cpu_images_per_s",
        "decode_tensor_images_per_s",
        "end_to_end_pairs_per_s",
        "end_to_end_after_startup_pairs_per_s",
    }
    rates = dict(result["rates"])
    assert (rates.pop("model_only_one_process_pairs_per_s") is not None) == several
    # On a CPU the ceiling is timed before and after the job, and is their mean.
    before, after = result["model_only_before_after"]
    assert before > 0 and after > 0
    assert rates["model_only_pairs_per_s"] == pytest.approx((before + after) / 2, abs=0.1)
    drift = result["model_only_drift"]
    assert drift == pytest.approx(after / before - 1, abs=0.01)
    assert "bench: model only, again after the job: " in caplog.text
    assert 0 <= result["startup_seconds"] <= result["first_blocks_seconds"]
    assert all(rate > 0 for rate in rates.values())
    phases = result["tensor_path_us_per_image"]
    assert list(phases) == [
        "header checks + JPEG decode",
        "JPEG decode alone",
        "resize + crop + normalise",
    ]
    assert all(us > 0 for us in phases.values())
    host = result["tensor_path_host_us_per_image"]
    assert list(host) == list(phases) and all(us > 0 for us in host.values())
    used = result["job_cpu"]
    assert used["by_kind"]["model actors"] > 0  # the job's actors ran in its Ray's processes
    assert used["seconds"] > 0 and 0 <= used["idle"] <= used["cores"]
    difference = result["tensor_vs_pil_score_difference"]
    assert 0 <= difference["mean"] <= difference["max"] < 0.01
    # 24 rows a shard in one row group, read 16 rows at a time: the job's calls.
    assert result["model_only_calls"] == {"calls": 8, "rows": [8, 16]}
    text = table(result)
    for line in (
        "model only (job's layout)",
        "8 calls of 8-16 rows",
        f"model only (job's layout) {before:,.1f} /s before the job and {after:,.1f} after it "
        f"({drift:+.1%}): the ceiling above is their mean",
        *(["model only (one process)"] if several else []),
        "decode + preprocess, CPU",
        "decode + preprocess, tensor, cpu",
        "tensor path per image, cpu synchronised between phases (the calling thread's CPU "
        "time before it waits): header checks + JPEG decode "
        f"{phases['header checks + JPEG decode']:,.1f} us "
        f"({host['header checks + JPEG decode']:,.1f})",
        "end to end (the job)",
        f"CPU over the job's {used['seconds']:.0f} s, in cores of {used['cores']}: model actors",
        "tensor vs PIL decode path, 24 rows",
        f"start-up: {result['startup_seconds']} s (every actor's first block at the writer",
    ):
        assert line in text
    end_to_end = next(line for line in text.splitlines() if line.startswith("end to end"))
    assert end_to_end.endswith(f"{result['ratio_end_to_end_vs_model_only']:.3f}")
    write_json(result, tmp_path / "bench.json")
    assert json.loads((tmp_path / "bench.json").read_text())["precision"] == "fp32"


def test_chosen_actor_count_sets_both_the_job_and_the_model_only_layout(tmp_path):
    spec = BenchSpec(model=TINY, device="cpu", actors=1)
    assert layout(spec, "cpu").actors == 1
    assert _config(tmp_path, str(tmp_path / "out"), spec).ray.num_actors == 1


def test_chosen_decode_path_is_the_jobs_and_the_comparison_keeps_both(tmp_path):
    spec = BenchSpec(model=TINY, device="cpu", decode="pil")
    assert _config(tmp_path, "out", spec).images.decode == "pil"
    assert _config(tmp_path, "out", spec, decode="tensor").images.decode == "tensor"
    assert _config(tmp_path, "out", BenchSpec(model=TINY)).images.decode == "auto"


def test_winnow_bench_skipping_decode_measures_still_runs_the_towers_and_the_job(tmp_path, capsys):
    args = ["--model", TINY, "--device", "cpu", "--batch-size", "16", "--actors", "1"]
    args += ["--pairs", "48", "--skip-decode", "--decode", "tensor"]
    assert main(["bench", *args, "--output", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["spec"]["decode"] == "tensor" and not result["spec"]["decodes"]
    rates = result["rates"]
    assert rates["decode_cpu_images_per_s"] is rates["decode_tensor_images_per_s"] is None
    assert result["tensor_path_us_per_image"] is result["tensor_vs_pil_score_difference"] is None
    assert result["tensor_path_host_us_per_image"] is None
    assert rates["model_only_pairs_per_s"] > 0 and rates["end_to_end_pairs_per_s"] > 0
    assert table(result) in printed
    assert f"winnow: bench table as JSON -> {tmp_path / 'bench.json'}" in printed
    assert "decode + preprocess" not in printed
    assert "tensor vs PIL comparison skipped (--skip-decode)" in printed
    # One CPU actor on every core decodes on all of them.
    assert result["decode_threads"] == len(os.sched_getaffinity(0))
    threads = f"PIL on {result['decode_threads']} thread(s)"
    assert f"in flight per actor, decode tensor ({threads}); model only: " in printed


def test_a_cpu_model_only_rate_is_timed_on_the_calls_the_job_makes(tmp_path, tiny_checkpoint):
    """A CPU model is faster per row on fewer rows: the ceiling is timed on the job's own."""
    spec = BenchSpec(
        model=TINY,
        pretrained=str(tiny_checkpoint),
        device="cpu",
        batch_size=16,
        data=WebPairsSpec(pairs=64, shards=2, row_group_rows=10),
    )
    web_pairs(tmp_path / "shards", spec.data)
    plan = layout(spec, "cpu")
    config = _config(tmp_path / "shards", str(tmp_path / "out"), spec)
    tasks = [
        task
        for shard in discover(config.input.paths(), {}).shards
        for task in shard.read_tasks(rows=span_rows(config))
    ]
    made = [b.num_rows for b in scored_blocks(build_dataset(tasks, config, plan))]
    assert made == [10, 10, 12] * 2  # row groups of 10, 10, 10, 2; a span is what fits a batch
    assert job_calls(tmp_path / "shards", spec, plan) == made
