"""Retrying storage calls: transient errors back off and retry, permanent ones raise at once."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)
T = TypeVar("T")

# Not worth retrying: the object is not there, or we may not touch it.
PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
TRANSIENT = (OSError, ConnectionError, TimeoutError)


def retrying(call: Callable[[], T], *, what: str, attempts: int = 4, delay: float = 0.25) -> T:
    """Run `call`, retrying transient storage errors with exponential backoff."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except PERMANENT:
            raise
        except TRANSIENT as error:
            _back_off(error, attempt=attempt, attempts=attempts, delay=delay, what=what)
    raise AssertionError("unreachable")


def retrying_rows(
    tables: Callable[[int], Iterable[pa.Table]],
    *,
    what: str,
    attempts: int = 4,
    delay: float = 0.25,
) -> Iterator[pa.Table]:
    """The tables of `tables(skip)` as they are read, retrying transient storage errors as
    `retrying` does: a retry reads again from `skip` rows in, past the rows already given."""
    given = 0
    for attempt in range(1, attempts + 1):
        try:
            for table in tables(given):
                given += table.num_rows
                yield table
            return
        except PERMANENT:
            raise
        except TRANSIENT as error:
            _back_off(error, attempt=attempt, attempts=attempts, delay=delay, what=what)


def _back_off(error: Exception, *, attempt: int, attempts: int, delay: float, what: str) -> None:
    """Wait before the next attempt; after the last one, raise the error."""
    if attempt == attempts:
        raise error
    wait = delay * 2 ** (attempt - 1)
    log.warning("%s failed (%s); retry %d/%d in %.1fs", what, error, attempt, attempts - 1, wait)
    time.sleep(wait)
