"""`make demo`'s job, at a smaller size: it scores, grades and says where the output is."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]
pytestmark = pytest.mark.slow


def test_demo_grades_itself_above_the_bar(tmp_path):
    config = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    config["input"]["path"] = str(tmp_path / "shards")
    config["output"]["path"] = str(tmp_path / "out")
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.demo",
            "--config",
            str(path),
            "--shards",
            "2",
            "--rows",
            "200",
        ],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    auc = float(re.search(r"ROC AUC, clean vs noisy pairs: ([0-9.]+)", result.stdout).group(1))
    assert auc >= 0.95
    precision = float(re.search(r"precision ([0-9.]+)", result.stdout).group(1))
    assert precision >= 0.9
    assert f"Scored shards: {tmp_path / 'out'}/scored/" in result.stdout
    assert len(list((tmp_path / "out" / "scored").glob("*.parquet"))) == 2
