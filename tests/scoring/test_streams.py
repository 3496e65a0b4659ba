"""A GPU actor prepares batches on a stream of its own: it never waits for the towers,
the towers never read a batch before it is made, and nvJPEG never writes over memory
still in use there. They need a GPU; gpu_check runs them."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from pipeline.config import parse_config
from pipeline.images.tensor import decode_jpegs
from pipeline.scoring.local import actor_input, scorer_for
from tests.builders import TINY, good_rows, jpeg

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
# GPU clock cycles queued as a stand-in for a long forward pass: about a second and a half.
LONG = 3_000_000_000


def gpu_scorer_and_batches(checkpoint, shards: int = 1):
    """A GPU scorer on the tensor path and a batch of 40 JPEG rows from each shard."""
    config = parse_config(
        {
            "input": {"path": "unused"},
            "output": {"path": "unused"},
            "models": [{"name": TINY, "pretrained": str(checkpoint), "precision": "fp32"}],
            "images": {"decode": "tensor"},
        }
    )
    keys = ["key", "jpg", "caption", "status", "error_message"]
    batches = []
    for shard in range(shards):
        table = pa.Table.from_pylist([{k: r[k] for k in keys} for r in good_rows(shard, 40)])
        batches.append(actor_input(table, config, shard=shard))
    scorer = scorer_for(config, device="cuda")
    assert scorer.preparer.jpeg_device == "cuda"  # nvJPEG and the chunked resize, not PIL
    return scorer, batches


def scores(scorer, batch):
    return scorer(batch)["clip_score"].to_numpy(zero_copy_only=False)


def test_preparing_a_batch_does_not_wait_for_work_on_the_towers_stream(tiny_checkpoint):
    scorer, (batch,) = gpu_scorer_and_batches(tiny_checkpoint)
    scorer(batch)  # decoder, allocator and cuBLAS made ready, as in a running actor
    torch.cuda.synchronize()
    torch.cuda._sleep(LONG)  # queued on the towers' (this thread's current) stream
    prepared = scorer.prepare(batch)
    assert not torch.cuda.current_stream().query(), "preparing waited for the towers' stream"
    assert prepared.pixels[0].shape[0] == batch.num_rows
    torch.cuda.synchronize()


def test_the_towers_wait_for_a_batch_still_being_prepared(tiny_checkpoint):
    """The batch's memory last held another batch's pixels: towers that did not wait
    would score those."""
    scorer, (batch, other) = gpu_scorer_and_batches(tiny_checkpoint, shards=2)
    expected = scores(scorer, batch)
    assert not np.allclose(scores(scorer, other), expected, atol=1e-4)
    torch.cuda.synchronize()
    step = scorer.preparer.tensor_steps[0]

    def slow_step(images, device):
        torch.cuda._sleep(LONG)  # on the preparing stream: the resize is queued behind it
        return step(images, device)

    scorer.preparer.tensor_steps = [slow_step]
    np.testing.assert_allclose(scores(scorer, batch), expected, atol=1e-4)


def test_nvjpeg_never_writes_over_memory_that_queued_work_still_reads():
    """A block freed on the preparing stream while a kernel queued there still reads it
    (the last batch's resize) is the first candidate for nvJPEG's output, which it
    writes on a stream of its own."""
    stream = torch.cuda.Stream()
    data = torch.frombuffer(bytearray(jpeg(1, (96, 64))), dtype=torch.uint8)
    with torch.cuda.stream(stream):
        ready = decode_jpegs([data], "cuda")  # the decoder made; its output kept, not free
        torch.cuda.synchronize()
        earlier = torch.full((3, 64, 96), 7, dtype=torch.uint8, device="cuda")
        torch.cuda._sleep(LONG)
        copy = earlier.clone()  # queued behind the sleep
        del earlier  # its block is free for the next allocation on this stream
        (decoded,) = decode_jpegs([data], "cuda")
    torch.cuda.synchronize()
    assert decoded.shape == ready[0].shape == (3, 64, 96)
    assert bool((copy == 7).all()), "nvJPEG wrote over memory a queued kernel still read"
