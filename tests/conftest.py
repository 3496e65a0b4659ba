from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.builders import TINY

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on the session's local Ray run last, in their usual order.

    Once up, that Ray's idle processes keep about a tenth of a core busy; the
    tests that start their own Ray (`winnow run` subprocesses, the cluster) run
    before it exists.
    """
    items.sort(key=lambda item: "local_ray" in item.fixturenames)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random weights for the tiny test architecture, saved the way users ship checkpoints."""
    import torch
    from safetensors.torch import save_file

    from pipeline.models.loader import open_clip

    torch.manual_seed(1234)
    model = open_clip().create_model(TINY)
    path = tmp_path_factory.mktemp("checkpoint") / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray for the in-process runs of the whole session (starting it costs seconds)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 endpoint: moto's server mode on 127.0.0.1, stopped at the end of the session."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.2)
    yield endpoint
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture
def s3(s3_server):
    """A fresh bucket on the moto server, with the storage options a config passes to fsspec."""
    import uuid

    import boto3
    import s3fs

    options = {
        "endpoint_url": s3_server,
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"region_name": "us-east-1"},
    }
    bucket = f"winnow-{uuid.uuid4().hex[:8]}"
    boto3.client(
        "s3",
        endpoint_url=s3_server,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)
    return s3fs.S3FileSystem(**options, skip_instance_cache=True), bucket, options
