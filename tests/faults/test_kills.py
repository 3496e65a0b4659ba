"""Kill the driver (SIGKILL) at several points, rerun, and compare with a clean run.

Everything the run started is then killed, as a job scheduler ending the job
would: the local Ray goes with it, its workers included (a worker left alive
would go on writing beside the rerun).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.builders import config_data, write_dataset
from tests.processes import kill_session

pytestmark = pytest.mark.slow
KILLSWITCH = Path(__file__).parent / "killswitch"
FILTERS = [{"type": "caption", "min_words": 5}, {"type": "score_top_fraction", "fraction": 0.5}]


def winnow(config: Path, *, kill_at: str | None = None) -> int:
    """The run's exit code; its output goes to CONFIG.log, whose end a failed assert shows."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if kill_at:
        env["WINNOW_KILL_AT"] = kill_at
        env["PYTHONPATH"] = os.pathsep.join([str(KILLSWITCH), env.get("PYTHONPATH", "")])
    with log_of(config).open("a") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "run", str(config)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        code = process.wait(timeout=300)
    kill_session(process.pid)
    return code


def log_of(config: Path) -> Path:
    return config.with_suffix(".log")


def log_tail(config: Path) -> str:
    return "\n".join(log_of(config).read_text().splitlines()[-30:])


def ids(folder: Path) -> dict[str, list[str]]:
    return {
        p.name: pq.read_table(p, columns=["key"])["key"].to_pylist()
        for p in sorted(folder.glob("*.parquet"))
    }


@pytest.fixture(scope="module")
def clean(tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("kills")
    write_dataset(root / "in", shards=3, rows=6, row_group_size=4)

    def configure(name: str) -> Path:
        data = config_data(root / "in", root / name, tiny_checkpoint)
        data["filters"] = FILTERS
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    config = configure("clean")
    assert winnow(config) == 0, log_tail(config)
    return root, configure


@pytest.mark.parametrize(
    "kill_at",
    ["scored:1:before", "scored:2:after", "stats:2:after", "stats:4:after"],
    ids=["before-first-commit", "during-a-commit", "between-commits", "while-filtering"],
)
def test_rerun_after_a_kill_gives_the_clean_run(clean, kill_at):
    root, configure = clean
    name = kill_at.replace(":", "-")
    config = configure(name)
    assert winnow(config, kill_at=kill_at) == -signal.SIGKILL, log_tail(config)
    assert winnow(config) == 0, log_tail(config)
    for side in ("scored", "filtered", "rejected"):
        got, want = ids(root / name / side), ids(root / "clean" / side)
        assert got == want, side
        assert all(len(set(keys)) == len(keys) for keys in got.values())
    assert not list((root / name).rglob(".*.tmp"))
    assert not (root / name / "_lock.json").exists()
