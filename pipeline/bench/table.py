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


def pool_table(result: dict[str, Any]) -> str:
    """The pool stages' scale benchmark as text: per run, per policy, then k-means and the
    projection."""
    lines = []
    for run in result["runs"]:
        found, whole = run["duplicates"], run["whole_chain"]
        lines += [
            f"{run['rows']:,} rows in {run['shards']} shards: {run['total_s']:,.1f} s, "
            f"{run['us_per_row']:.1f} us a row; driver peak {whole['driver_peak_mb']:,.0f} MB, "
            f"largest worker {whole['worker_peak_mb']:,.0f} MB",
            f"  {'policy':<22}{'fit s':>9}{'fit rows':>12}{'rows/s':>11}{'decide s':>10}"
            f"{'driver MB':>11}{'worker MB':>11}",
        ]
        for policy in run["policies"]:
            fit, rows = policy["fit_s"], policy["fit_rows"]
            rate = f"{rows / fit:,.0f}" if fit and rows else "-"
            lines.append(
                f"  {policy['policy']:<22}{fit if fit is not None else '-':>9}"
                f"{rows if rows is not None else '-':>12}{rate:>11}{policy['decide_task_s']:>10}"
                f"{policy.get('driver_peak_mb', '-'):>11}{policy.get('worker_peak_mb', '-'):>11}"
            )
        lines += [
            f"  filter pass (every shard: all policies decide, filtered/ and rejected/ written): "
            f"{run['filter_pass_s']:,.1f} s",
            f"  planted near-duplicates: {found['near_found']:,} of {found['near_planted']:,} "
            f"found ({found['near_recall']:.2%}), {found['near_missed']:,} missed; exact: "
            f"{found['exact_found']:,} of {found['exact_planted']:,}; other rows dropped as "
            f"duplicates: {found['other_rows_dropped_as_duplicates']}",
        ]
    lines.append(f"time per row, largest run over smallest: {result['per_row_growth']:.2f}x")
    lines.append("k-means fits semantic_dedup would make (this machine):")
    for fit in result["kmeans"]:
        lines.append(
            f"  {fit['pool_rows']:>13,} rows: {fit['groups']:,} groups from a driver sample of "
            f"{fit['driver_sample']:,} ({fit['driver_sample_mb']:,.0f} MB) in "
            f"{fit['driver_fit_s']:,.1f} s; {fit['clusters_per_group']} clusters a group, "
            f"{fit['group_fit_s']:.3f} s each, {fit['all_group_fits_s']:,.0f} s for all; "
            f"{fit['fit_on_this_machine_s']:,.0f} s in all"
        )
    lines.append("projection:")
    for row in result["projection"]:
        lines.append(
            f"  {row['rows']:>13,} rows on {row['cores']} cores: {row['total_h']:.2f} h "
            f"(per-row work {row['per_row_work_s']:,} s, coarse assignment "
            f"{row['coarse_assignment_s']:,} s, k-means {row['kmeans_s']:,} s)"
        )
    lines += [f"  assuming {a}" for a in result["assumptions"]]
    return "\n".join(lines)
