"""The cluster manifests run configs that validate, with the overrides they pass."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from pipeline.config import load_config

K8S = Path(__file__).parents[1] / "jobs" / "k8s"
ROOT = K8S.parents[1]


def curate_args(command: list[str]) -> tuple[str, list[str]]:
    args = command[command.index("jobs.curate") + 1 :]
    overrides = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    return args[0], overrides


def test_rayjob_entrypoint_config_is_valid():
    job = yaml.safe_load((K8S / "rayjob.yaml").read_text())
    assert job["kind"] == "RayJob"
    config, overrides = curate_args(shlex.split(job["spec"]["entrypoint"]))
    loaded = load_config(ROOT / config, overrides=overrides)
    assert loaded.input.path.startswith("s3://") and loaded.output.path.startswith("s3://")
    workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert (
        workers["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    )


def test_cronjob_submits_a_valid_config_and_never_overlaps():
    cron = yaml.safe_load((K8S / "cronjob.yaml").read_text())
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:3] == ["ray", "job", "submit"]
    config, overrides = curate_args(container["command"])
    load_config(ROOT / config, overrides=overrides)
