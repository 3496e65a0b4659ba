"""The cluster path: `ray start` nodes on 127.0.0.1, `ray job submit`, incremental reruns,
uneven nodes, a node lost mid-run, and a plan no node can take."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from tests.builders import config_data, good_rows, jpeg, write_dataset, write_shard
from tests.processes import kill_session

ROOT = Path(__file__).parents[1]
RAY = str(Path(sys.executable).parent / "ray")
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Cluster:
    """Ray nodes on this machine, each `ray start --block` in a session of its own, so that
    one node can be killed whole (its raylet and workers) as a machine that dies would be.

    Token authentication stays on, as on a real cluster: the nodes and the CLI share a token.
    """

    def __init__(self) -> None:
        self.port, self.dashboard = free_port(), free_port()
        self.address = f"http://127.0.0.1:{self.dashboard}"
        self.nodes: list[subprocess.Popen] = []
        self.env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
            # No drain on SIGTERM: Ray Data's detached stats actor would hold it for 30 s.
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
            # the cluster's `python` is the one Winnow is installed in, as on a cluster image
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
        }

    def start_node(self, *, cpus: int) -> subprocess.Popen:
        """The head first, then workers; each with ports of its own (a local Ray of the same
        test session holds the default ones). Returns once the cluster counts the node."""
        head = not self.nodes
        where = (
            [
                "--head",
                f"--port={self.port}",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard}",
                f"--ray-client-server-port={free_port()}",
            ]
            if head
            else [f"--address=127.0.0.1:{self.port}"]
        )
        node = subprocess.Popen(
            [
                RAY,
                "start",
                "--block",
                *where,
                "--node-ip-address=127.0.0.1",
                f"--num-cpus={cpus}",
                f"--dashboard-agent-listen-port={free_port()}",
                f"--dashboard-agent-grpc-port={free_port()}",
                f"--runtime-env-agent-port={free_port()}",
                f"--metrics-export-port={free_port()}",
                "--disable-usage-stats",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=self.env,
        )
        self.nodes.append(node)
        self._wait_for(len(self.nodes), node)
        return node

    def _wait_for(self, count: int, node: subprocess.Popen) -> None:
        """Ready means a job runs and sees `count` nodes: the dashboard answers before the
        node's job agent does."""
        probe = "import ray; ray.init(); assert len([n for n in ray.nodes() if n['Alive']]) == "
        command = [RAY, "job", "submit", "--address", self.address, "--", "python", "-c"]
        deadline = time.monotonic() + 180
        while subprocess.run(
            [*command, f"{probe}{count}"], capture_output=True, env=self.env
        ).returncode:
            assert node.poll() is None and time.monotonic() < deadline, "a ray node did not start"
            time.sleep(2)

    def kill_node(self, node: subprocess.Popen) -> None:
        kill_session(node.pid)
        node.wait()
        self.nodes.remove(node)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            kill_session(node.pid)
            node.wait()
        # `ray start` records its address for later `ray.init()` calls; do not leave ours.
        current = Path("/tmp/ray/ray_current_cluster")
        if current.exists() and current.read_text().strip().endswith(f":{self.port}"):
            current.unlink()

    def submit(
        self, config: Path, *, wait: bool = True
    ) -> subprocess.CompletedProcess | subprocess.Popen:
        command = [
            RAY,
            "job",
            "submit",
            "--address",
            self.address,
            "--working-dir",
            str(ROOT),
            "--",
            "python",
            "-m",
            "jobs.curate",
            str(config),
        ]
        env = {**self.env, "HF_HUB_OFFLINE": "1"}
        if not wait:
            return subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        return subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
        )


@pytest.fixture
def new_cluster() -> Iterator[Cluster]:
    cluster = Cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Uneven nodes, as real clusters are: a head with one CPU and a worker with two."""
    cluster = Cluster()
    try:
        cluster.start_node(cpus=1)
        cluster.start_node(cpus=2)
        yield cluster
    finally:
        cluster.stop()


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def sized_by_the_plan(input_path: Path, output_path: Path, checkpoint: Path) -> dict[str, Any]:
    """A config whose actors the run plans from the nodes (the tests' default is one)."""
    data = config_data(input_path, output_path, checkpoint)
    data["ray"] = {}
    return data


def clean_run(config: Path) -> None:
    """The same config scored by a plain local run (its own local Ray), for reference."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def assert_same_rows(got: Path, want: Path) -> None:
    """The same shards with the same rows in the same order, scored alike (the actors'
    batches differ between the two layouts, and with them the float rounding)."""
    names = sorted(p.name for p in (want / "scored").glob("*.parquet"))
    assert sorted(p.name for p in (got / "scored").glob("*.parquet")) == names
    for name in names:
        a = pq.read_table(got / "scored" / name).to_pydict()
        b = pq.read_table(want / "scored" / name).to_pydict()
        assert a["key"] == b["key"] and a["winnow_status"] == b["winnow_status"], name
        np.testing.assert_allclose(a["clip_score"], b["clip_score"], atol=1e-5)
        filtered = pq.read_table(got / "filtered" / name, columns=["key"])["key"].to_pylist()
        assert (
            filtered == pq.read_table(want / "filtered" / name, columns=["key"])["key"].to_pylist()
        )


def test_submitted_job_scores_then_an_incremental_rerun_takes_only_new_shards(
    cluster, tmp_path, tiny_checkpoint
):
    write_dataset(tmp_path / "in", shards=2, rows=5)
    config = write_config(
        tmp_path / "job.yaml", config_data(tmp_path / "in", tmp_path / "out", tiny_checkpoint)
    )
    first = cluster.submit(config)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "succeeded" in first.stdout
    assert "2 new shard(s) scored" in first.stdout
    for name in ("00000", "00001"):
        assert pq.read_table(tmp_path / "out" / "scored" / f"{name}.parquet").num_rows == 5

    write_shard(tmp_path / "in" / "00002.parquet", good_rows(2, 7))
    second = cluster.submit(config)
    assert second.returncode == 0, second.stdout[-3000:]
    assert "1 new shard(s) scored, 0 redone (input changed), 2 skipped, 0 failed" in second.stdout
    summary = json.loads((tmp_path / "out" / "_summary.json").read_text())
    assert summary["rows"] == 17
    assert summary["this_run"]["shards_new"] == 1


def test_a_job_on_uneven_nodes_places_every_actor_and_reader(cluster, tmp_path, tiny_checkpoint):
    """A plan from the cluster's totals (3 CPUs) once reserved 2.5 of them in actors, and
    the reader's half CPU, split over two nodes, fitted on neither: the job waited forever."""
    write_dataset(tmp_path / "in", shards=8, rows=20)
    config = write_config(
        tmp_path / "job.yaml", sized_by_the_plan(tmp_path / "in", tmp_path / "out", tiny_checkpoint)
    )
    done = cluster.submit(config)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "8 new shard(s) scored" in done.stdout
    plan = [line.split("plan: ", 1)[1] for line in done.stdout.splitlines() if "plan: " in line]
    assert len(plan) == 2 and any("read task" in line for line in plan), plan
    reference = write_config(
        tmp_path / "clean.yaml",
        sized_by_the_plan(tmp_path / "in", tmp_path / "clean", tiny_checkpoint),
    )
    clean_run(reference)
    assert_same_rows(tmp_path / "out", tmp_path / "clean")


def test_a_worker_node_lost_mid_run_leaves_the_output_of_a_clean_run(
    cluster, tmp_path, tiny_checkpoint
):
    """The head (1 CPU) cannot hold the plan made for both nodes once the worker is gone:
    the run streams the shards not yet committed again on a plan for the head alone. The
    module's last test on its cluster: the worker stays dead."""
    for shard in range(12):
        rows = good_rows(shard, 60)
        for row in rows:
            row["jpg"] = jpeg(shard * 100 + int(row["key"][-3:]), (640, 480))
        write_shard(tmp_path / "in" / f"{shard:05d}.parquet", rows, row_group_size=20)
    config = write_config(
        tmp_path / "job.yaml", sized_by_the_plan(tmp_path / "in", tmp_path / "out", tiny_checkpoint)
    )
    job = cluster.submit(config, wait=False)
    stats = tmp_path / "out" / "stats"
    deadline = time.monotonic() + 300
    while not (stats.exists() and any(stats.glob("*.json"))):
        assert job.poll() is None and time.monotonic() < deadline, job.stdout.read()[-3000:]
        time.sleep(0.2)
    cluster.kill_node(cluster.nodes[-1])
    output, _ = job.communicate(timeout=600)
    if job.returncode:  # the other outcome the contract allows: a clear error, then a rerun
        assert "scoring stopped" in output, output[-3000:]
        rerun = cluster.submit(config)
        assert rerun.returncode == 0, rerun.stdout[-3000:]
    else:
        events = json.loads((tmp_path / "out" / "_summary.json").read_text())["this_run"]
        assert any("left" in event for event in events["cluster"]["events"]), events
        assert "left the cluster mid-run" in output
    reference = write_config(
        tmp_path / "clean.yaml",
        sized_by_the_plan(tmp_path / "in", tmp_path / "clean", tiny_checkpoint),
    )
    clean_run(reference)
    assert_same_rows(tmp_path / "out", tmp_path / "clean")
    assert not list((tmp_path / "out").rglob(".*.tmp"))


def test_a_head_without_cpus_fails_clearly_then_runs_on_a_worker(
    new_cluster, tmp_path, tiny_checkpoint
):
    """A head kept for the driver (no CPUs for work) is left out of the plan; with no other
    node the run ends at once with exit code 1, naming what is missing."""
    write_dataset(tmp_path / "in", shards=2, rows=6)
    config = write_config(
        tmp_path / "job.yaml", sized_by_the_plan(tmp_path / "in", tmp_path / "out", tiny_checkpoint)
    )
    new_cluster.start_node(cpus=0)
    alone = new_cluster.submit(config)
    assert alone.returncode != 0
    assert "winnow: cannot place the model actors: no node has a whole CPU" in alone.stdout
    assert "CPU >= 1 missing" in alone.stdout and "head: 0 CPU" in alone.stdout
    assert not (tmp_path / "out" / "stats").exists() or not any(
        (tmp_path / "out" / "stats").iterdir()
    )

    new_cluster.start_node(cpus=2)
    done = new_cluster.submit(config)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "head: 0 CPU): left out" in done.stdout
    assert "2 new shard(s) scored" in done.stdout
