"""The benchmark's result as the table it prints, and as the JSON it writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.bench.cpu_use import CpuUse


def table(result: dict[str, Any]) -> str:
    rates, ratios = result["rates"], result["ratios_to_model_only"]
    spec, data = result["spec"], result["data"]
    rows = [
        ("model only (job's layout)", "model_only_pairs_per_s"),
        ("model only (one process)", "model_only_one_process_pairs_per_s"),
        ("decode + preprocess, CPU, 1 core", "decode_cpu_images_per_s"),
        (f"decode + preprocess, tensor, {result['device_type']}", "decode_tensor_images_per_s"),
        ("end to end (the job)", "end_to_end_pairs_per_s"),
        ("end to end, after start-up", "end_to_end_after_startup_pairs_per_s"),
    ]
    phases, host = result["tensor_path_us_per_image"], result["tensor_path_host_us_per_image"]
    per_image = (
        [
            f"tensor path per image, {result['device_type']} synchronised between phases "
            "(the calling thread's CPU time before it waits): "
            + ", ".join(
                f"{phase} {us:,.1f} us ({host[phase]:,.1f})" for phase, us in phases.items()
            )
        ]
        if phases
        else []
    )
    bracket = result["model_only_before_after"]
    drift = (
        [
            f"model only (job's layout) {bracket[0]:,.1f} /s before the job and "
            f"{bracket[1]:,.1f} after it ({result['model_only_drift']:+.1%}): the ceiling "
            "above is their mean"
        ]
        if bracket
        else []
    )
    calls = result["model_only_calls"]
    low, high = calls["rows"]
    call_rows = str(low) if low == high else f"{low}-{high}"
    difference = result["tensor_vs_pil_score_difference"]
    if difference:
        compared = (
            f"tensor vs PIL decode path, {difference['rows']} rows: |score difference| "
            f"max {difference['max']:.5f}, mean {difference['mean']:.5f}"
        )
    elif spec["decodes"]:
        compared = "tensor decode path not available for this model's preprocess"
    else:
        compared = "decode-only rates and the tensor vs PIL comparison skipped (--skip-decode)"
    return "\n".join(
        [
            f"model {spec['model']} ({spec['pretrained'] or 'random weights'}), "
            f"{result['precision']}, batch {spec['batch_size']}, on {result['device']}; "
            f"job: {result['actors']}, {result['batches_in_flight_per_actor']} batch(es) "
            f"in flight per actor, decode {spec['decode']} (PIL on "
            f"{result['decode_threads']} thread(s)); "
            f"model only: {result['model_only_layout']}, "
            f"{calls['calls']} calls of {call_rows} rows",
            f"data: {data['pairs']} pairs ({data['distinct_images']} distinct images), "
            f"JPEG median {data['jpeg_kb_median']} KB "
            f"(p10-p90 {data['jpeg_kb_p10_p90']} KB), "
            f"{spec['data']['min_side']}-{spec['data']['max_side']} px",
            "",
            f"{'measure':<38}{'rate /s':>12}  ratio to model-only",
            *(
                f"{name:<38}{rates[key]:>12,.1f}  {ratios[key]:.3f}"
                for name, key in rows
                if rates[key] is not None
            ),
            *drift,
            *per_image,
            CpuUse(**result["job_cpu"]).describe(),
            "",
            f"start-up: {result['startup_seconds']} s (every actor's first block at the writer "
            f"after {result['first_blocks_seconds']} s, less their work at the rate after it)",
            compared,
        ]
    )


def write_json(result: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(result, indent=2) + "\n")
