"""gpu_check's summary of a sampled actor: where its samples were, by function."""

from __future__ import annotations

import subprocess
import sys

from jobs.stack_summary import shares

RAW = [
    "thread (1);__call__ (scorer.py:250);prepare (scorer.py:200);check_rows (scorer.py:60) 30",
    "thread (1);__call__ (scorer.py:250);prepare (scorer.py:200);decode_jpegs (tensor.py:150) 50",
    "thread (2);__call__ (scorer.py:250);_encode (scorer.py:220) 20",
    "",
]


def test_shares_count_each_frame_once_per_stack():
    total, inclusive, top = shares(RAW)
    assert total == 100
    assert inclusive["__call__ (scorer.py:250)"] == 100
    assert inclusive["prepare (scorer.py:200)"] == 80
    assert top["decode_jpegs (tensor.py:150)"] == 50
    assert "prepare (scorer.py:200)" not in top


def test_the_command_prints_both_tables(tmp_path):
    stacks = tmp_path / "stacks.txt"
    stacks.write_text("\n".join(RAW))
    run = subprocess.run(
        [sys.executable, "-m", "jobs.stack_summary", str(stacks), "--top", "2"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "100 samples; share of them with the frame on the stack:" in run.stdout
    assert " 50.0%  decode_jpegs (tensor.py:150)" in run.stdout


def test_piped_into_head_it_ends_quietly(tmp_path):
    stacks = tmp_path / "stacks.txt"
    stacks.write_text("\n".join(f"thread (1);frame_{i} (x.py:{i}) 1" for i in range(5000)))
    run = subprocess.run(
        f"{sys.executable} -m jobs.stack_summary {stacks} --top 5000 | head -1",
        shell=True,
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stdout == "5,000 samples; share of them with the frame on the stack:\n"
    assert run.stderr == ""
