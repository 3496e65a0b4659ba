"""The cluster path: `ray start --head` on 127.0.0.1, `ray job submit`, incremental reruns."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.builders import config_data, good_rows, write_dataset, write_shard

ROOT = Path(__file__).parents[1]
RAY = str(Path(sys.executable).parent / "ray")
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """A head node of its own (`ray start --block`), stopped with its process group at the end.

    Token authentication stays on, as on a real cluster: the head and the CLI share a token.
    """
    port, dashboard = free_port(), free_port()
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        # No drain on SIGTERM: Ray Data's detached stats actor would hold it for 30 s.
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
        # the cluster's `python` is the one Winnow is installed in, as on a real cluster image
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
    }
    head = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            "--num-cpus=2",
            # Ports of its own: a local Ray of the same test session holds the default ones.
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--ray-client-server-port={free_port()}",
            "--disable-usage-stats",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    try:
        address = f"http://127.0.0.1:{dashboard}"
        deadline = time.monotonic() + 180
        # Ready means a job runs: the dashboard answers before the node's job agent does.
        probe = [RAY, "job", "submit", "--address", address, "--", "python", "-c", "pass"]
        while subprocess.run(probe, capture_output=True, env=env).returncode:
            assert head.poll() is None and time.monotonic() < deadline, "ray head did not start"
            time.sleep(2)
        yield address, env
    finally:
        # Stopped like `ray stop` does it: SIGTERM to `ray start` alone (no drain, see
        # above), then a sweep of whatever of its group is left.
        head.terminate()
        head.wait(timeout=60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)
        # `ray start` records its address for later `ray.init()` calls; do not leave ours behind.
        current = Path("/tmp/ray/ray_current_cluster")
        if current.exists() and current.read_text().strip().endswith(f":{port}"):
            current.unlink()


def submit(cluster: tuple[str, dict], config: Path) -> subprocess.CompletedProcess:
    address, env = cluster
    return subprocess.run(
        [
            RAY,
            "job",
            "submit",
            "--address",
            address,
            "--working-dir",
            str(ROOT),
            "--",
            "python",
            "-m",
            "jobs.curate",
            str(config),
        ],
        cwd=ROOT,
        env={**env, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_submitted_job_scores_then_an_incremental_rerun_takes_only_new_shards(
    cluster, tmp_path, tiny_checkpoint
):
    write_dataset(tmp_path / "in", shards=2, rows=5)
    config = tmp_path / "job.yaml"
    config.write_text(
        yaml.safe_dump(config_data(tmp_path / "in", tmp_path / "out", tiny_checkpoint))
    )
    first = submit(cluster, config)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "succeeded" in first.stdout
    assert "2 new shard(s) scored" in first.stdout
    for name in ("00000", "00001"):
        assert pq.read_table(tmp_path / "out" / "scored" / f"{name}.parquet").num_rows == 5

    write_shard(tmp_path / "in" / "00002.parquet", good_rows(2, 7))
    second = submit(cluster, config)
    assert second.returncode == 0, second.stdout[-3000:]
    assert "1 new shard(s) scored, 0 redone (input changed), 2 skipped, 0 failed" in second.stdout
    summary = json.loads((tmp_path / "out" / "_summary.json").read_text())
    assert summary["rows"] == 17
    assert summary["this_run"]["shards_new"] == 1
