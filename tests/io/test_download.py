"""`winnow download` fetches a URL list from a local HTTP server; `winnow run` scores the result."""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tests.builders import config_data, jpeg

pytestmark = pytest.mark.slow


@pytest.fixture
def image_server(tmp_path):
    """Generated JPEGs, a corrupt file and missing paths, served on 127.0.0.1."""
    site = tmp_path / "site"
    site.mkdir()
    for index in range(7):
        (site / f"{index}.jpg").write_bytes(jpeg(index, (320, 240)))
    (site / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def winnow(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_download_then_run_accounts_for_every_url(tmp_path, image_server, tiny_checkpoint):
    urls = [f"{image_server}/{i}.jpg" for i in range(7)]
    urls += [f"{image_server}/missing-{i}.jpg" for i in range(2)] + [f"{image_server}/corrupt.jpg"]
    pd.DataFrame(
        {"url": urls, "caption": [f"picture {i}" for i in range(len(urls))], "source": "test"}
    ).to_csv(tmp_path / "urls.csv", index=False)
    data = config_data(tmp_path / "shards", tmp_path / "out", tiny_checkpoint)
    data["download"] = {
        "url_list": str(tmp_path / "urls.csv"),
        "input_format": "csv",
        "url_col": "url",
        "caption_col": "caption",
        "extra_columns": ["source"],
        "output_path": str(tmp_path / "shards"),
        "rows_per_shard": 4,
        "threads": 4,
        "timeout_s": 5,
    }
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data))

    fetched = winnow("download", str(config), cwd=tmp_path)
    assert fetched.returncode == 0, fetched.stderr[-3000:]
    assert f"10 URLs in 3 shard(s) at {tmp_path / 'shards'}" in fetched.stdout
    assert f"Next: winnow run {config}" in fetched.stdout

    scored = winnow("run", str(config), cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr[-3000:]
    table = pa.concat_tables(
        [pq.read_table(p) for p in sorted((tmp_path / "out" / "scored").glob("*.parquet"))]
    )
    assert sorted(table["url"].to_pylist()) == sorted(urls)
    by_url = {r["url"]: r for r in table.to_pylist()}
    for url in urls[:7]:
        assert by_url[url]["winnow_status"] == "ok" and by_url[url]["source"] == "test"
    for url in urls[7:9]:
        row = by_url[url]
        assert row["status"] == "failed_to_download"
        assert row["winnow_status"] == "upstream_failed" and "404" in row["winnow_error"]
    corrupt = by_url[urls[9]]
    assert corrupt["status"] != "success" and corrupt["winnow_status"] == "upstream_failed"
    assert corrupt["clip_score"] is None


def test_download_needs_its_section(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"input": {"path": "x"}}))
    result = winnow("download", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert "has no download: section" in result.stderr
