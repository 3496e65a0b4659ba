"""A GPU actor prepares its next batch on a CUDA stream of its own, beside the towers'.

Whatever waits for a stream from the host (a blocking copy to the GPU; a decode,
before nvJPEG writes) waits for everything queued on it. Sharing the towers'
stream, the next batch's decode and resize waited for the whole of the current
batch's forward pass, and the GPU could idle while the host then did their
part. On a stream of its own, preparing waits only for its own work, and the
towers' stream waits for a prepared batch with an event, never the host. On the
CPU all of this is a no-op."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any


class PrepareStream:
    def __init__(self, device: str) -> None:
        import torch

        target = torch.device(device)
        self.stream = torch.cuda.Stream(target) if target.type == "cuda" else None

    @contextmanager
    def active(self) -> Iterator[None]:
        """Work queued in this block (by this thread) goes on the preparing stream."""
        if self.stream is None:
            yield
            return
        import torch

        with torch.cuda.stream(self.stream):
            yield

    def done(self) -> Any:
        """An event marking the work queued so far, for `hand_over`; None on the CPU."""
        if self.stream is None:
            return None
        import torch

        event = torch.cuda.Event()
        event.record(self.stream)
        return event


def hand_over(ready: Any, tensors: Iterable[Any]) -> None:
    """Let the current stream use `tensors`, made on the preparing stream up to `ready`.

    The current stream waits for the event on the device, and the allocator learns
    that it uses their memory, so that the preparing stream cannot reuse it early.
    """
    if ready is None:
        return
    import torch

    current = torch.cuda.current_stream()
    current.wait_event(ready)
    for tensor in tensors:
        if tensor is not None and tensor.is_cuda:
            tensor.record_stream(current)
