"""A Ctrl-C that a library swallowed still stops the run at its next step."""

from __future__ import annotations

import os
import signal
import sys
import time
from types import SimpleNamespace

import pytest

from pipeline.interrupt import interruptible, interrupts_kept, stop_if_interrupted


def ctrl_c_lost() -> None:
    """SIGINT arriving where the KeyboardInterrupt is swallowed, as in a compiled import."""
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the handler runs here
    except KeyboardInterrupt:
        return
    raise AssertionError("SIGINT raised nothing")


def test_a_lost_ctrl_c_is_raised_again_at_the_next_check_once():
    with interrupts_kept():
        stop_if_interrupted()  # nothing pending
        ctrl_c_lost()
        with pytest.raises(KeyboardInterrupt):
            stop_if_interrupted()
        stop_if_interrupted()


def test_a_lost_ctrl_c_stops_a_stream_before_its_next_item():
    taken = []
    with interrupts_kept(), pytest.raises(KeyboardInterrupt):
        for item in interruptible(range(3)):
            taken.append(item)
            if item == 0:
                ctrl_c_lost()
    assert taken == [0]


def test_the_handler_before_is_put_back_and_nothing_stays_pending():
    before = signal.getsignal(signal.SIGINT)
    with interrupts_kept():
        assert signal.getsignal(signal.SIGINT) is not before
        ctrl_c_lost()
    assert signal.getsignal(signal.SIGINT) is before
    stop_if_interrupted()


def test_a_lost_ctrl_c_is_not_reported_as_an_ignored_exception(monkeypatch):
    """A compiled import reports the KeyboardInterrupt it swallowed through sys.unraisablehook
    (Python prints a traceback); the run's own line says it instead. Other reports pass."""
    reported = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    with interrupts_kept():
        sys.unraisablehook(SimpleNamespace(exc_value=KeyboardInterrupt()))
        other = SimpleNamespace(exc_value=ValueError("a real problem"))
        sys.unraisablehook(other)
    assert reported == [other]
    assert sys.unraisablehook == reported.append
