"""Scored blocks reach the writer as each is done, not a block late, and as the reads made them."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.config import parse_config
from pipeline.io.shards import discover, span_rows
from pipeline.scoring.dataset import build_dataset, scored_blocks
from pipeline.scoring.placement import plan_actors, single_node
from tests.builders import config_data, good_rows, write_shard

pytestmark = pytest.mark.usefixtures("local_ray")
PATIENCE_S = 30.0


class WaitForFirst:
    """Scores block 1 only once the consumer has seen block 0 (or after PATIENCE_S)."""

    def __init__(self, seen: str) -> None:
        self.seen = Path(seen)

    def __call__(self, batch: pa.Table) -> pa.Table:
        waited = False
        if batch["block"][0].as_py() == 1:
            deadline = time.monotonic() + PATIENCE_S
            while not self.seen.exists():
                if time.monotonic() > deadline:
                    waited = True
                    break
                time.sleep(0.05)
        return batch.append_column("gave_up", pa.array([waited] * batch.num_rows))


def test_a_block_reaches_the_consumer_before_the_next_one_is_scored(tmp_path):
    import ray.data

    seen = tmp_path / "block-0-seen"
    dataset = ray.data.from_items([{"block": b} for b in range(2)], override_num_blocks=2)
    dataset = dataset.map_batches(
        WaitForFirst,
        batch_size=None,
        batch_format="pyarrow",
        fn_constructor_kwargs={"seen": str(seen)},
        compute=ray.data.ActorPoolStrategy(size=1, max_tasks_in_flight_per_actor=1),
    )
    blocks = []
    for block in scored_blocks(dataset):
        blocks.append(block)
        if block["block"][0].as_py() == 0:
            seen.touch()
    assert [b["block"][0].as_py() for b in blocks] == [0, 1]
    assert not any(b["gave_up"][0].as_py() for b in blocks), "block 0 was held back"


def test_a_cpu_actor_scores_each_span_as_one_call_not_bundled_up_to_a_batch(
    tmp_path, tiny_checkpoint
):
    """Bundled to a batch, a slow CPU model's calls outgrew the spans, and the first actor
    to finish idled for as long as the other's last call took."""
    write_shard(tmp_path / "in" / "00000.parquet", good_rows(0, 50), row_group_size=10)
    data = config_data(tmp_path / "in", tmp_path / "out", tiny_checkpoint)
    data["models"][0]["batch_size"] = 16  # two row groups (20 rows) would not fit a span
    config = parse_config(data)
    (shard,) = discover(config.input.paths(), {}).shards
    tasks = shard.read_tasks(rows=span_rows(config))
    plan = plan_actors(config.ray, single_node(2.0))
    blocks = list(scored_blocks(build_dataset(tasks, config, plan)))
    assert [b.num_rows for b in blocks] == [10] * 5
    assert [r for b in blocks for r in b["_winnow_row"].to_pylist()] == list(range(50))
    assert {s for b in blocks for s in b["_winnow_status"].to_pylist()} == {"ok"}
