"""`winnow run` as a user runs it: a subprocess starting its own local Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.builders import config_data, good_rows, write_dataset, write_shard

pytestmark = pytest.mark.slow


def winnow(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_run_then_rerun_skips_committed_shards(tmp_path, tiny_checkpoint):
    write_dataset(tmp_path / "in", shards=3, rows=5)
    data = config_data(tmp_path / "in", tmp_path / "elsewhere", tiny_checkpoint)
    config = write_config(tmp_path / "run.yaml", data)
    out = tmp_path / "out"
    first = winnow(
        "run",
        str(config),
        "--set",
        f"output.path={out}",
        "--set",
        "models.0.precision=fp32",
        "--set",
        "output.report=true",
        cwd=tmp_path,
    )
    assert first.returncode == 0, first.stderr
    assert "Token authentication" not in first.stderr  # Ray's notice, of no use here
    assert "3 new shard(s) scored, 0 redone (input changed), 0 skipped, 0 failed" in first.stdout
    assert f"-> file://{out}" in first.stdout
    assert f"report -> file://{out}/report/index.html" in first.stdout
    assert "<h2>Score distribution</h2>" in (out / "report" / "index.html").read_text()
    assert not (tmp_path / "elsewhere").exists()
    committed = {p.name: p.stat().st_mtime_ns for p in (out / "scored").iterdir()}
    assert sorted(committed) == ["00000.parquet", "00001.parquet", "00002.parquet"]

    second = winnow("run", str(config), "--set", f"output.path={out}", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert (
        "0 new shard(s) scored, 0 redone (input changed), 3 skipped, 0 failed; "
        "0 rows this run; 15 rows in output"
    ) in second.stdout
    assert {p.name: p.stat().st_mtime_ns for p in (out / "scored").iterdir()} == committed
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["rows"] == 15
    assert summary["this_run"]["shards_skipped"] == 3
    # Filtering again loads no model, and says what it did rather than "0 scored".
    refiltered = winnow("filter", str(config), "--set", f"output.path={out}", cwd=tmp_path)
    assert refiltered.returncode == 0, refiltered.stderr
    assert "winnow: filters applied to 3 scored shard(s); 15 rows in output" in refiltered.stdout
    assert "scored," not in refiltered.stdout
    # Other models than the output's are refused before anything is written: their
    # scores would mix with the old ones, or filter on columns the old shards lack.
    before = (out / "_summary.json").read_text()
    for command in ("filter", "run"):
        other = winnow(
            command,
            str(config),
            "--set",
            f"output.path={out}",
            "--set",
            "models.0.alias=b32",
            cwd=tmp_path,
        )
        assert other.returncode == 2, other.stderr
        assert "holds shards scored by clip: winnow-test-tiny" in other.stderr
        assert "this config's models are b32: winnow-test-tiny" in other.stderr
    assert (out / "_summary.json").read_text() == before

    # A new shard and a changed one in the same rerun: each counted for what it is.
    write_shard(tmp_path / "in" / "00003.parquet", good_rows(3, 4))
    write_shard(tmp_path / "in" / "00001.parquet", good_rows(11, 2))
    third = winnow("run", str(config), "--set", f"output.path={out}", cwd=tmp_path)
    assert "1 new shard(s) scored, 1 redone (input changed), 2 skipped, 0 failed" in third.stdout
    assert pq.read_table(out / "scored" / "00003.parquet").num_rows == 4
    assert not [p for p in out.rglob(".*.tmp")]
    redone = pq.read_table(out / "scored" / "00001.parquet")
    assert redone["key"].to_pylist() == [r["key"] for r in good_rows(11, 2)]


def test_failed_shard_exits_non_zero_and_names_it(tmp_path, tiny_checkpoint):
    write_dataset(tmp_path / "in", shards=1, rows=3)
    (tmp_path / "in" / "00001.parquet").write_bytes(b"PAR1 this is not parquet")
    config = write_config(
        tmp_path / "run.yaml", config_data(tmp_path / "in", tmp_path / "out", tiny_checkpoint)
    )
    result = winnow("run", str(config), cwd=tmp_path)
    assert result.returncode == 1
    assert "shard 00001 failed" in result.stderr
    assert (tmp_path / "out" / "scored" / "00000.parquet").exists()

    # Repaired, with a new shard beside it: --retry-failed redoes only the failed one.
    write_shard(tmp_path / "in" / "00001.parquet", good_rows(1, 2))
    write_shard(tmp_path / "in" / "00002.parquet", good_rows(2, 2))
    retried = winnow("run", str(config), "--retry-failed", cwd=tmp_path)
    assert retried.returncode == 0, retried.stderr
    assert "1 new shard(s) scored" in retried.stdout
    assert (tmp_path / "out" / "scored" / "00001.parquet").exists()
    assert not (tmp_path / "out" / "scored" / "00002.parquet").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["output"].update(embeddings="float16"), "output.embeddings: unknown key"),
        (lambda d: d["models"][0].update(batch_size="many"), "models.0.batch_size"),
        (lambda d: d["output"].update(status_column="status"), "already has column(s) status"),
        (lambda d: d["models"][0].update(name="ViT-Q-99"), "not an open_clip architecture"),
        (
            lambda d: d["models"][0].update(pretrained="/no/such/file.safetensors"),
            "neither an existing checkpoint",
        ),
        (
            lambda d: d["models"][0].update(name="ViT-B-32", pretrained="laion2b_s34b_b79k"),
            "are not in the Hugging Face cache, and HF_HUB_OFFLINE forbids downloading them",
        ),
    ],
    ids=[
        "unknown-key",
        "wrong-type",
        "column-collision",
        "unknown-model",
        "missing-checkpoint",
        "weights-out-of-reach",
    ],
)
def test_config_errors_exit_2_and_write_nothing(tmp_path, tiny_checkpoint, change, message):
    write_dataset(tmp_path / "in", shards=1, rows=2)
    data = config_data(tmp_path / "in", tmp_path / "out", tiny_checkpoint)
    change(data)
    result = winnow("run", str(write_config(tmp_path / "bad.yaml", data)), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_actors_that_cannot_load_their_model_end_the_run_with_one_line(tmp_path, tiny_checkpoint):
    import torch
    from safetensors.torch import save_file

    write_dataset(tmp_path / "in", shards=1, rows=2)
    other = tmp_path / "other.safetensors"  # sound weights, of another model
    save_file({"head.weight": torch.zeros(2, 3)}, str(other))
    data = config_data(tmp_path / "in", tmp_path / "out", tiny_checkpoint)
    data["models"][0]["pretrained"] = str(other)
    result = winnow("run", str(write_config(tmp_path / "other.yaml", data)), cwd=tmp_path)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("winnow: the model actors could not start or kept dying ("), last
    assert "Unexpected key(s) in state_dict" in last  # the root cause
    assert last.endswith("0 shard(s) were committed before, and a rerun goes on from there")


class PickledCode:
    """What a malicious .pt holds: unpickling it would run a command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# `winnow filter` loads no model checkpoint, but heads it may have to compute.
@pytest.mark.parametrize(
    ("where", "command"), [("model", "run"), ("head", "run"), ("head", "filter")]
)
@pytest.mark.parametrize("kind", ["pickled-code.pt", "cut.safetensors"])
def test_unloadable_weights_are_refused_before_ray_starts(
    tmp_path, tiny_checkpoint, kind, where, command
):
    """A model checkpoint or a head's weights: no code in them runs, the run ends in one
    line naming the file and the cause, and nothing is written."""
    import torch
    from safetensors.torch import save_file

    write_dataset(tmp_path / "in", shards=1, rows=2)
    marker = tmp_path / "code-ran"
    bad = tmp_path / kind
    if kind.endswith(".pt"):
        torch.save({"state_dict": PickledCode(marker)}, bad)
        cause = "unsupported global posix.system: the file holds pickled code, not weights"
    else:
        sound = tiny_checkpoint
        if where == "head":
            sound = tmp_path / "head.safetensors"
            save_file({"weight": torch.zeros(1, 32), "bias": torch.zeros(1)}, str(sound))
        bad.write_bytes(sound.read_bytes()[:-64])  # a download cut off
        cause = "cut off: its header places"
    data = config_data(tmp_path / "in", tmp_path / "out", tiny_checkpoint)
    if where == "model":
        data["models"][0]["pretrained"] = str(bad)
        key, what = "models.0.pretrained", "cannot be loaded"
    else:
        data["heads"] = [{"name": "aesthetic", "weights": str(bad)}]
        key, what = "heads.0.weights", "cannot be loaded as a head"
    result = winnow(command, str(write_config(tmp_path / "bad.yaml", data)), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"winnow: {key}: {bad} {what}: "), lines
    assert cause in lines[0]
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("shapes", "cause"),
    [
        (
            {"weight": [1, 768], "bias": [1]},
            "heads.0: aesthetic takes 768-wide embeddings, but alias 'clip' (winnow-test-tiny) "
            "makes 32-wide ones; give it the head trained for that model",
        ),
        (
            {"layers.0.weight": [8, 32], "layers.2.weight": [1, 9]},
            "heads.0.weights: {head} cannot be loaded as a head: layers.2 takes 9 inputs, "
            "but layers.0 gives 8",
        ),
    ],
    ids=["another-width", "wrong-shapes"],
)
def test_a_head_of_the_wrong_shapes_is_refused_in_one_line(
    tmp_path, tiny_checkpoint, shapes, cause
):
    import torch
    from safetensors.torch import save_file

    write_dataset(tmp_path / "in", shards=1, rows=2)
    head = tmp_path / "head.safetensors"
    save_file({key: torch.zeros(shape) for key, shape in shapes.items()}, str(head))
    data = config_data(tmp_path / "in", tmp_path / "out", tiny_checkpoint)
    data["heads"] = [{"name": "aesthetic", "weights": str(head)}]
    result = winnow("run", str(write_config(tmp_path / "head.yaml", data)), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [f"winnow: {cause.format(head=head)}"]
    assert not (tmp_path / "out").exists()


def test_open_clips_info_lines_are_quiet_but_its_warnings_and_ours_show():
    import logging

    from pipeline.cli import QuietLibraries

    def record(path: str, level: int) -> logging.LogRecord:
        return logging.LogRecord("root", level, path, 1, "message", None, None)

    library = os.path.join("site-packages", "open_clip", "factory.py")
    ours = os.path.join("pipeline", "scoring", "benchmark.py")
    quiet = QuietLibraries()
    assert not quiet.filter(record(library, logging.INFO))
    assert quiet.filter(record(library, logging.WARNING))
    assert quiet.filter(record(ours, logging.INFO))


def test_version_names_winnow_and_the_libraries_its_scores_depend_on(tmp_path):
    import open_clip
    import ray
    import torch

    import pipeline

    result = winnow("--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    first, libraries = result.stdout.splitlines()
    assert first == f"winnow {pipeline.__version__}"
    for name, version in [  # as pip has them: torch's build tag (+cu130) is not in its metadata
        ("torch", torch.__version__.split("+")[0]),
        ("ray", ray.__version__),
        ("open_clip_torch", open_clip.__version__),
    ]:
        assert f"{name} {version}" in libraries.split(", ")


INTERRUPTED = "winnow: interrupted; shards committed so far are kept, and a rerun does the rest"


def interrupt_once_locked(command: list[str], cwd: Path) -> tuple[int, str]:
    """Start `command` in its own session, Ctrl-C its process group once the run holds its
    lock, as a terminal does; the return code and stderr."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    job = subprocess.Popen(
        command, cwd=cwd, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while not (cwd / "out" / "_lock.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(job.pid, signal.SIGINT)
    _, stderr = job.communicate(timeout=120)
    return job.returncode, stderr


@pytest.mark.parametrize("launch", ["python -m", "a shell loop over the winnow command"])
def test_ctrl_c_stops_a_run_with_one_line_and_leaves_no_lock(tmp_path, tiny_checkpoint, launch):
    """Interrupted, winnow ends by SIGINT (a shell shows 130), however it was started, so a
    script that runs it stops too instead of going on to its next command."""
    write_dataset(tmp_path / "in", shards=2, rows=4)
    config = write_config(
        tmp_path / "c.yaml", config_data(tmp_path / "in", tmp_path / "out", tiny_checkpoint)
    )
    if launch == "python -m":
        command = [sys.executable, "-m", "pipeline.cli", "run", str(config)]
    else:
        winnow_command = Path(sys.executable).parent / "winnow"
        script = f"for c in {config} {config}; do {winnow_command} run $c; done; echo went on >&2"
        command = ["bash", "-c", script]
    returncode, stderr = interrupt_once_locked(command, tmp_path)
    assert returncode == -signal.SIGINT, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == INTERRUPTED
    assert not (tmp_path / "out" / "_lock.json").exists()
