"""Ctrl-C kept until the run can act on it.

Python turns SIGINT into KeyboardInterrupt wherever the main thread is. Inside a
compiled module's set-up (Cython's, as Ray or pyarrow load) the exception is printed
as "Exception ignored" and lost, and a run interrupted there went on to its end. So
the handler also remembers the interrupt, and the run checks between its steps; and
the "Exception ignored" report of a KeyboardInterrupt, a traceback that says nothing
the run's own line does not, is left out.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")
_pending = False


def _interrupted(signum: int, frame: Any) -> None:
    global _pending
    _pending = True
    raise KeyboardInterrupt


def _quiet_about_interrupts(report: Callable[[Any], None]) -> Callable[[Any], None]:
    """`report` for every unraisable exception but a KeyboardInterrupt, which the handler
    has remembered and the run raises again (`stop_if_interrupted`)."""

    def hook(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            report(unraisable)

    return hook


@contextmanager
def interrupts_kept() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt, as Python's own handler does, and is remembered
    until the block ends; the handler and the unraisable hook before it are put back."""
    global _pending
    previous: Callable[..., Any] | int | None = signal.signal(signal.SIGINT, _interrupted)
    report = sys.unraisablehook
    sys.unraisablehook = _quiet_about_interrupts(report)
    try:
        yield
    finally:
        _pending = False
        sys.unraisablehook = report
        signal.signal(signal.SIGINT, previous)


def stop_if_interrupted() -> None:
    """Raise the interrupt again where it was lost; a run's steps call this between them."""
    global _pending
    if _pending:
        _pending = False
        raise KeyboardInterrupt


def interruptible(items: Iterable[T]) -> Iterator[T]:
    for item in items:
        stop_if_interrupted()
        yield item
