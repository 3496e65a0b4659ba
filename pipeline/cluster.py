"""The Ray session a run works in: the configured cluster, or a local Ray started for it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pipeline.config import RayConfig


@contextmanager
def ray_session(settings: RayConfig) -> Iterator[dict[str, float]]:
    """Join the configured cluster, or start a local Ray that ends with the run."""
    import ray

    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"address": settings.address, "logging_level": logging.WARNING}
        if settings.address is None:
            kwargs.update(num_cpus=settings.num_cpus, include_dashboard=False)
        ray.init(**kwargs)
        started = True
    try:
        yield ray.cluster_resources()
    finally:
        if started:
            ray.shutdown()
