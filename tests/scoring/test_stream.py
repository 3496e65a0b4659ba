"""Scored blocks reach the writer as each is done, not one block late."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.scoring.dataset import scored_blocks

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
