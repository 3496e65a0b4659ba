from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import parse_config
from pipeline.run import run
from pipeline.synth.dataset import SynthSpec, write_synthetic
from tests.builders import DEMO_CHECKPOINT


@pytest.fixture(scope="package")
def demo_run(tmp_path_factory, local_ray) -> Path:
    """A demo-sized run (generated noisy shards, the demo model, a threshold) to look at."""
    root = tmp_path_factory.mktemp("demo-run")
    write_synthetic(str(root / "in"), SynthSpec(shards=3, rows_per_shard=60, seed=99))
    config = parse_config(
        {
            "input": {"path": str(root / "in")},
            "output": {"path": str(root / "out")},
            "models": [{"name": "winnow-tiny", "pretrained": str(DEMO_CHECKPOINT)}],
            "filters": [{"type": "score_threshold", "value": 0.7}],
        }
    )
    result = run(config)
    assert result.failed == []
    return root / "out"
