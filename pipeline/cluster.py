"""The Ray session a run works in: the configured cluster, or a local Ray started for it."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pipeline.config import RayConfig


def resolve_address(settings: RayConfig) -> str:
    """null means: the cluster this job was submitted to (RAY_ADDRESS), else a new local Ray.

    Never whatever `ray start` cluster happens to run on this machine: a local
    run stays local unless the config or the job submission says otherwise.
    """
    if settings.address is not None:
        return settings.address
    return os.environ.get("RAY_ADDRESS") or "local"


def ray_data_console_to_warnings() -> None:
    """Ray Data's INFO lines to its log file only, unless logging is at debug level (-v).

    On a console that is not a terminal (a scheduled job's log, a notebook) Ray Data
    logs a nine-line block of operator state every 10 s, besides its execution plan;
    the run logs its own progress (`heartbeat`), so a log shows the run's lines.
    Warnings still show, and a Ray Data logging config of the user's own
    (RAY_DATA_LOGGING_CONFIG) is left as it is.
    """
    if os.environ.get("RAY_DATA_LOGGING_CONFIG") or logging.getLogger().isEnabledFor(logging.DEBUG):
        return
    import ray.data  # noqa: F401  (importing it sets up its loggers)

    for handler in logging.getLogger("ray.data").handlers:
        if handler.name == "console":
            handler.setLevel(logging.WARNING)


# The logger of Ray Data's issue detectors, in the driver, which runs the executor.
RAY_DATA_ISSUES = "ray.data._internal.issue_detection.issue_detector_manager"


# A figure in a warning, with its unit if it has one: "1.8GiB", "2576980378", "30".
FIGURE = re.compile(r"\d+(\.\d+)?\s?([KMGT]i?B|B|s)?\b")


class OnceEach(logging.Filter):
    """Lets each of Ray Data's issue warnings through once. Its detectors repeat theirs
    every 30 s for as long as the issue lasts (a model actor over Ray Data's 2.4 GiB per
    reserved CPU gets a 20-line warning each time). A warning with other figures in it
    (and so wrapped elsewhere) is the same one."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = " ".join(FIGURE.sub("#", record.getMessage()).split())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


@contextmanager
def ray_data_issues_once() -> Iterator[None]:
    """Each of Ray Data's issue warnings shown once while this lasts (a run)."""
    issues, once = logging.getLogger(RAY_DATA_ISSUES), OnceEach()
    issues.addFilter(once)
    try:
        yield
    finally:
        issues.removeFilter(once)


TOKEN_NOTICES = "ray._private.authentication.authentication_token_setup"


def not_the_token_notice(record: logging.LogRecord) -> bool:
    """Drops Ray's notice that the local Ray it starts has token authentication on: for
    the Ray a run starts and stops for itself, a line of noise on every run. Its warning
    that authentication is off still shows."""
    return not record.getMessage().startswith("Token authentication is enabled")


@contextmanager
def ray_session(settings: RayConfig) -> Iterator[None]:
    """Join the configured cluster, or start a local Ray that ends with the run."""
    import ray

    ray_data_console_to_warnings()
    started = False
    if not ray.is_initialized():
        address = resolve_address(settings)
        kwargs: dict[str, Any] = {"address": address, "logging_level": logging.WARNING}
        notices = logging.getLogger(TOKEN_NOTICES)
        if address == "local":
            kwargs.update(num_cpus=settings.num_cpus, include_dashboard=False)
            notices.addFilter(not_the_token_notice)
        try:
            ray.init(**kwargs)
        finally:
            notices.removeFilter(not_the_token_notice)
        started = True
    try:
        with ray_data_issues_once():
            yield
    finally:
        if started:
            ray.shutdown()
