"""A run with input and output on S3 (moto's server on 127.0.0.1) equals the run on disk."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import parse_config
from pipeline.io.results import Run
from pipeline.run import run
from tests.builders import config_data, good_rows, write_dataset, write_shard

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]

SECRET = "never-in-an-output-4f9c"
FILTERS = [{"type": "caption", "min_words": 5}, {"type": "score_top_fraction", "fraction": 0.5}]


def data_columns(table: pa.Table) -> pa.Table:
    return table.replace_schema_metadata(None)


def test_run_on_s3_matches_the_same_run_on_local_disk(tmp_path, tiny_checkpoint, s3, monkeypatch):
    fs, bucket, options = s3
    options = {**options, "secret": SECRET}  # moto takes any credentials
    write_dataset(tmp_path / "in", shards=2, rows=9, row_group_size=4)
    fs.put(str(tmp_path / "in") + "/", f"{bucket}/in/", recursive=True)
    fs.pipe(f"{bucket}/in/00000_stats.json", b"{}")  # img2dataset's side file, ignored

    local = config_data(tmp_path / "in", tmp_path / "out", tiny_checkpoint)
    local["filters"] = FILTERS
    remote = config_data(tmp_path / "in", tmp_path / "unused", tiny_checkpoint)
    remote["filters"] = FILTERS
    remote["input"].update(path=f"s3://{bucket}/in/", storage_options=options)
    remote["output"].update(path=f"s3://{bucket}/out", storage_options=options)

    run(parse_config(local))
    result = run(parse_config(remote))
    assert result.failed == [], result.failed
    assert result.output == f"s3://{bucket}/out"
    for side in ("scored", "filtered", "rejected"):
        for name in ("00000", "00001"):
            on_disk = pq.read_table(tmp_path / "out" / side / f"{name}.parquet")
            with fs.open(f"{bucket}/out/{side}/{name}.parquet", "rb") as handle:
                on_s3 = pq.read_table(io.BytesIO(handle.read()))
            assert data_columns(on_s3).equals(data_columns(on_disk)), (side, name)
    summary = json.loads(fs.cat(f"{bucket}/out/_summary.json"))
    assert summary["rows"] == 18
    # Outputs get shared: the config they record keeps the endpoint, not the credentials.
    recorded = summary["config"]["input"]["storage_options"]
    assert recorded["endpoint_url"] == options["endpoint_url"]
    assert recorded["secret"] == "<redacted>"
    for side in ("scored", "filtered", "_summary.json"):
        for path in fs.find(f"{bucket}/out/{side}"):
            assert SECRET.encode() not in fs.cat(path), path
    # The report reads images back from the input with the run's options, and later
    # (`winnow report OUT`) with the recorded endpoint and the environment's credentials.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", options["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    for given in (options, None):
        later = Run.open(f"s3://{bucket}/out", options, input_storage_options=given)
        picked = later.sample(3, ["shard", "row", "key"])
        inputs = {
            name: pq.read_table(tmp_path / "in" / f"{name}.parquet")["jpg"].to_pylist()
            for name in ("00000", "00001")
        }
        places = zip(picked["shard"].to_pylist(), picked["row"].to_pylist(), strict=True)
        expected = [inputs[name][row] for name, row in places]
        assert later.images(picked) == expected and len(expected) == 3
    # `winnow export` and `winnow report` take the output root alone: S3-compatible
    # storage comes from the environment, as boto's own tools take it.
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": options["endpoint_url"],
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for command in (
        ["export", f"s3://{bucket}/out", "--output", f"s3://{bucket}/export"],
        ["report", f"s3://{bucket}/out"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", *command],
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
    assert len(fs.ls(f"{bucket}/export/img_emb")) == 2
    assert fs.exists(f"{bucket}/out/report/index.html")
    assert not fs.glob(f"{bucket}/out/**/.*.tmp")

    write_shard(tmp_path / "extra.parquet", good_rows(7, 3))
    fs.put(str(tmp_path / "extra.parquet"), f"{bucket}/in/00002.parquet")
    again = run(parse_config(remote))
    assert again.summary["this_run"]["shards_new"] == 1
    assert again.summary["this_run"]["shards_skipped"] == 2
