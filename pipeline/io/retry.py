"""Retrying storage calls: transient errors back off and retry, permanent ones raise at once."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

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
            if attempt == attempts:
                raise
            wait = delay * 2 ** (attempt - 1)
            log.warning(
                "%s failed (%s); retry %d/%d in %.1fs", what, error, attempt, attempts - 1, wait
            )
            time.sleep(wait)
    raise AssertionError("unreachable")
