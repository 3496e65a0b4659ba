"""`winnow bench` refuses wrong arguments before it makes any data, naming the flag."""

from __future__ import annotations

import pytest
import torch

from pipeline.cli import EXIT_CONFIG, main
from tests.builders import TINY


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pairs", "0"], "argument --pairs: 0 is less than 1"),
        (["--batch-size", "-4"], "argument --batch-size: -4 is less than 1"),
        (["--in-flight", "two"], "argument --in-flight: 'two' is not a whole number"),
        (["--actors", "0"], "argument --actors: 0 is less than 1"),
    ],
)
def test_counts_below_one_are_usage_errors(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exited:
        main(["bench", *args, "--output", str(tmp_path / "bench")])
    assert exited.value.code == EXIT_CONFIG
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bench").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "ViT-B-33"], "--model: 'ViT-B-33' is not an open_clip architecture"),
        (
            ["--model", TINY, "--pretrained", "no/such/file.pt"],
            "--pretrained: 'no/such/file.pt' is neither an existing checkpoint file",
        ),
        (["--model", TINY, "--device", "cuda"], "--device cuda: torch finds no CUDA device here"),
    ],
)
def test_a_model_or_device_that_cannot_run_is_refused_before_any_data(
    tmp_path, capsys, monkeypatch, args, message
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["bench", *args, "--output", str(tmp_path / "bench")]) == EXIT_CONFIG
    assert f"winnow: {message}" in capsys.readouterr().err
    assert not (tmp_path / "bench" / "shards").exists()
