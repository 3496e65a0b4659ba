"""Several batches in flight on one actor: the model runs one batch at a time, scores unchanged."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pytest

from pipeline.config import parse_config
from pipeline.scoring.local import actor_input, score_table, scorer_for
from tests.builders import DEMO_CHECKPOINT, TINY, good_rows
from tests.images.devices import DEVICES


@pytest.mark.parametrize("device", DEVICES)
def test_concurrent_batches_score_as_if_one_at_a_time_and_never_share_the_model(
    tiny_checkpoint, device
):
    """On a GPU the batches are prepared on the preparing stream while another is in
    the towers, on theirs (bf16 there, hence the looser tolerance)."""
    config = parse_config(
        {
            "input": {"path": "unused"},
            "output": {"path": "unused"},
            "models": [{"name": TINY, "pretrained": str(tiny_checkpoint), "batch_size": 4}],
        }
    )
    keys = ["key", "jpg", "caption", "status", "error_message"]
    tables = [
        pa.Table.from_pylist([{k: r[k] for k in keys} for r in good_rows(shard, 10)])
        for shard in range(6)
    ]
    scorer = scorer_for(config, device=device)
    serial = [score_table(t, config, scorer) for t in tables]

    inside, most = 0, 0
    counting = threading.Lock()
    encode_image = scorer.models[0].model.encode_image

    def watched(pixels):
        nonlocal inside, most
        with counting:
            inside += 1
            most = max(most, inside)
        time.sleep(0.01)
        try:
            return encode_image(pixels)
        finally:
            with counting:
                inside -= 1

    scorer.models[0].model.encode_image = watched
    with ThreadPoolExecutor(3) as pool:
        concurrent = list(pool.map(lambda t: score_table(t, config, scorer), tables))

    assert most == 1
    for one, other in zip(serial, concurrent, strict=True):
        assert one["_winnow_status"].to_pylist() == other["_winnow_status"].to_pylist()
        np.testing.assert_allclose(
            one["clip_score"].to_numpy(),
            other["clip_score"].to_numpy(),
            atol=1e-6 if device == "cpu" else 1e-3,
        )


def test_models_with_the_same_preprocess_share_one_batch_of_pixels(tiny_checkpoint):
    config = parse_config(
        {
            "input": {"path": "unused"},
            "output": {"path": "unused"},
            "models": [
                {"alias": alias, "name": TINY, "pretrained": str(tiny_checkpoint)}
                for alias in ("first", "second")
            ],
        }
    )
    keys = ["key", "jpg", "caption", "status", "error_message"]
    table = pa.Table.from_pylist([{k: r[k] for k in keys} for r in good_rows(0, 5)])
    scorer = scorer_for(config)
    prepared = scorer.prepare(actor_input(table, config))
    assert prepared.pixels[0].shape[0] == 5
    assert prepared.pixels[0] is prepared.pixels[1]


@pytest.mark.parametrize("decode", ["pil", "tensor"])
def test_models_with_different_preprocesses_each_score_as_alone(tiny_checkpoint, decode):
    """A 32 px and a 64 px model in one config: each gets its own size of pixels (on the
    PIL path made in the same call as the decode), in the order of the models."""
    models = [
        {"alias": "small", "name": TINY, "pretrained": str(tiny_checkpoint)},
        {"alias": "demo", "name": "winnow-tiny", "pretrained": str(DEMO_CHECKPOINT)},
    ]

    def config(entries):
        return parse_config(
            {
                "input": {"path": "unused"},
                "output": {"path": "unused", "embedding_dtype": "float32"},
                "models": [{**entry, "precision": "fp32"} for entry in entries],
                "images": {"decode": decode},
            }
        )

    keys = ["key", "jpg", "caption", "status", "error_message"]
    table = pa.Table.from_pylist([{k: r[k] for k in keys} for r in good_rows(0, 5)])
    both = config(models)
    scorer = scorer_for(both)
    prepared = scorer.prepare(actor_input(table, both))
    assert [tuple(p.shape) for p in prepared.pixels] == [(5, 3, 32, 32), (5, 3, 64, 64)]
    together = score_table(table, both, scorer)
    for entry in models:
        alone = config([entry])
        single = score_table(table, alone, scorer_for(alone))
        column = f"{entry['alias']}_score"
        np.testing.assert_allclose(
            together[column].to_numpy(), single[column].to_numpy(), atol=1e-6
        )
