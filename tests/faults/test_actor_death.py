"""A model actor killed mid-run is replaced by Ray and its batch redone: output as a clean run."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.config import parse_config
from pipeline.run import run
from tests.builders import config_data, good_rows, write_shard

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]
SHARDS = 6


def actor_pids() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"ClipScorer" in title:
                found.append(int(entry.name))
    return found


def kill_one_actor_mid_run(stats: Path, report: dict) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        committed = len(list(stats.glob("*.json"))) if stats.exists() else 0
        pids = actor_pids()
        if pids and committed >= 1:
            report["committed_at_kill"] = committed
            os.kill(pids[0], signal.SIGKILL)
            report["killed"] = pids[0]
            return
        time.sleep(0.02)


def test_killed_actor_is_replaced_and_nothing_is_lost_or_doubled(tmp_path, tiny_checkpoint):
    for shard in range(SHARDS):
        rows = good_rows(shard, 30)
        for r in rows:
            r["jpg"] = __import__("tests.builders", fromlist=["jpeg"]).jpeg(
                hash(r["key"]) % 10_000, (640, 480)
            )
        write_shard(tmp_path / "in" / f"{shard:05d}.parquet", rows, row_group_size=5)
    clean = config_data(tmp_path / "in", tmp_path / "clean", tiny_checkpoint)
    clean["models"][0]["batch_size"] = 5
    run(parse_config(clean))

    faulty = config_data(tmp_path / "in", tmp_path / "out", tiny_checkpoint)
    faulty["models"][0]["batch_size"] = 5
    report: dict = {}
    killer = threading.Thread(
        target=kill_one_actor_mid_run, args=(tmp_path / "out" / "stats", report)
    )
    killer.start()
    result = run(parse_config(faulty))
    killer.join()
    assert "killed" in report, "the actor was never seen"
    assert report["committed_at_kill"] < SHARDS, "the kill came after the run had finished scoring"
    assert result.failed == []
    for shard in range(SHARDS):
        name = f"{shard:05d}.parquet"
        got = pq.read_table(tmp_path / "out" / "scored" / name).replace_schema_metadata(None)
        want = pq.read_table(tmp_path / "clean" / "scored" / name).replace_schema_metadata(None)
        assert got.equals(want), name
