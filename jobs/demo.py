"""`make demo`: generate a fresh noisy dataset, score it on a local Ray, grade the result.

    python -m jobs.demo [--config configs/demo.yaml] [--shards 8] [--rows 500]

The data is generated with a seed the demo model never saw in training; its
ground-truth columns let the run grade itself (ROC AUC of the score for clean
vs noisy pairs, and precision/recall of the rows a threshold keeps).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pipeline.config import ConfigError, load_config
from pipeline.report.grading import kept_set_quality, roc_auc
from pipeline.report.summary import closing_line
from pipeline.run import run
from pipeline.synth.dataset import SynthSpec, write_synthetic


def grade(output: Path, inputs: Path) -> dict:
    """ROC AUC of the score, and precision/recall of what the filters kept, vs ground truth."""
    scored = pq.read_table(output / "scored", columns=["key", "clip_score"])
    truth = pq.read_table(inputs, columns=["key", "gt_clean"])
    kept = set(pq.read_table(output / "filtered", columns=["key"])["key"].to_pylist())
    joined = scored.join(truth, "key")
    score = np.asarray(joined["clip_score"].to_numpy(zero_copy_only=False), np.float64)
    clean = joined["gt_clean"].to_numpy(zero_copy_only=False)
    in_filtered = np.asarray([k in kept for k in joined["key"].to_pylist()])
    return {
        "rows": joined.num_rows,
        "noisy": int((~clean).sum()),
        "roc_auc": roc_auc(score, clean),
        **kept_set_quality(in_filtered, clean),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"demo: {error}", file=sys.stderr)
        return 2
    inputs, output = Path(str(config.input.path)), Path(config.output.path)
    for folder in (inputs, output):
        shutil.rmtree(folder, ignore_errors=True)
    spec = SynthSpec(shards=args.shards, rows_per_shard=args.rows, seed=args.seed)
    print(
        f"demo: generating {spec.shards} x {spec.rows_per_shard} pairs "
        f"({spec.noise_fraction:.0%} noisy) in {inputs}/"
    )
    write_synthetic(str(inputs), spec)
    result = run(config)
    print(closing_line(result.summary, result.output))
    print(f"demo: report -> {result.report}")
    report = grade(output, inputs)
    policies = ", ".join(
        f"{p.type}" + (f" >= {p.value}" if p.type == "score_threshold" else "")
        for p in config.policies()
    )
    print(
        f"\ndemo: graded against ground truth ({report['rows']} pairs, {report['noisy']} noisy):\n"
        f"  ROC AUC, clean vs noisy pairs: {report['roc_auc']:.4f}\n"
        f"  filters ({policies}) kept {report['kept']} rows: "
        f"precision {report['precision']:.3f}, recall {report['recall']:.3f}\n"
        f"\nScored shards: {output}/scored/, kept rows: {output}/filtered/, dropped rows and why: "
        f"{output}/rejected/ (stats in {output}/stats/, summary in {output}/_summary.json)\n"
        "Next: open the scored Parquet in pandas/DuckDB/Polars, or point configs/example.yaml "
        "at your own img2dataset shards:  .venv/bin/winnow run configs/example.yaml"
    )
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
