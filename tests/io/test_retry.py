from __future__ import annotations

import pytest

from pipeline.io.retry import retrying


def test_transient_errors_are_retried_then_succeed():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("reset by peer")
        return "data"

    assert retrying(flaky, what="read", delay=0.001) == "data"
    assert len(calls) == 3


def test_permanent_errors_raise_at_once():
    calls = []

    def missing():
        calls.append(1)
        raise FileNotFoundError("gone")

    with pytest.raises(FileNotFoundError):
        retrying(missing, what="read", delay=0.001)
    assert len(calls) == 1


def test_transient_errors_give_up_after_the_attempts():
    with pytest.raises(TimeoutError):
        retrying(
            lambda: (_ for _ in ()).throw(TimeoutError("slow")),
            what="read",
            attempts=2,
            delay=0.001,
        )
