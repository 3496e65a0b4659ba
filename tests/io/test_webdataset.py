"""The same images as WebDataset tars (img2dataset's layout) score exactly as the Parquet route."""

from __future__ import annotations

import io
import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import parse_config
from pipeline.run import run
from tests.builders import config_data, good_rows, row, write_shard

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]


def write_tar(path, rows, *, sidecar: bool) -> None:
    with tarfile.open(path, "w") as tar:
        for r in rows:
            if r["status"] != "success":
                continue  # img2dataset's tars hold only what it fetched
            meta = {k: v for k, v in r.items() if k not in ("jpg", "caption")}
            for extension, data in (
                ("jpg", r["jpg"]),
                ("txt", r["caption"].encode()),
                ("json", json.dumps(meta).encode()),
            ):
                info = tarfile.TarInfo(f"{r['key']}.{extension}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    if sidecar:
        pq.write_table(
            pa.Table.from_pylist([{k: v for k, v in r.items() if k != "jpg"} for r in rows]),
            str(path).replace(".tar", ".parquet"),
        )


def test_webdataset_tars_score_like_parquet(tmp_path, tiny_checkpoint):
    shards = [
        [
            *good_rows(0, 5),
            row("failed", None, "gone", status="failed_to_download", error="HTTP Error 404"),
        ],
        good_rows(1, 4),
    ]
    for index, rows in enumerate(shards):
        write_shard(tmp_path / "parquet" / f"{index:05d}.parquet", rows)
    (tmp_path / "tars").mkdir()
    write_tar(tmp_path / "tars" / "00000.tar", shards[0], sidecar=True)
    write_tar(tmp_path / "tars" / "00001.tar", shards[1], sidecar=False)

    run(parse_config(config_data(tmp_path / "parquet", tmp_path / "from-parquet", tiny_checkpoint)))
    data = config_data(tmp_path / "tars", tmp_path / "from-tars", tiny_checkpoint)
    data["input"]["format"] = "webdataset"
    result = run(parse_config(data))
    assert result.failed == []
    for name in ("00000", "00001"):
        tars = pq.read_table(tmp_path / "from-tars" / "scored" / f"{name}.parquet")
        parquet = pq.read_table(tmp_path / "from-parquet" / "scored" / f"{name}.parquet")
        assert tars["key"].to_pylist() == parquet["key"].to_pylist()
        assert tars["clip_score"].equals(parquet["clip_score"])
        assert tars["winnow_status"].equals(parquet["winnow_status"])
        assert tars["clip_image_embedding"].equals(parquet["clip_image_embedding"])
    failed = pq.read_table(tmp_path / "from-tars" / "scored" / "00000.parquet").to_pylist()[-1]
    assert (
        failed["winnow_status"] == "upstream_failed" and failed["winnow_error"] == "HTTP Error 404"
    )

    again = run(parse_config(data))  # tars unchanged: nothing staged or scored again
    assert again.summary["this_run"]["shards_skipped"] == 2


def test_a_tar_that_cannot_be_read_fails_as_its_shard_and_the_rest_are_scored(
    tmp_path, tiny_checkpoint
):
    tars = tmp_path / "tars"
    tars.mkdir()
    write_tar(tars / "00000.tar", good_rows(0, 4), sidecar=False)
    write_tar(tars / "00001.tar", good_rows(1, 4), sidecar=False)
    with tarfile.open(tars / "00001.tar") as tar:
        middle = tar.getmembers()[6].offset  # the first member of the third sample
    cut = (tars / "00001.tar").read_bytes()[:middle]  # a copy cut off between two samples
    (tars / "00001.tar").write_bytes(cut)
    (tars / "00002.tar").write_bytes(b"<html>503 Service Unavailable</html>")
    data = config_data(tars, tmp_path / "out", tiny_checkpoint)
    data["input"]["format"] = "webdataset"
    staged = tmp_path / "out" / "_staged"
    staged.mkdir(parents=True)
    (staged / ".00000.parquet.0123456789ab.tmp").write_bytes(b"left by a killed run")

    result = run(parse_config(data))

    failed = {f["shard"]: f for f in result.failed}
    assert sorted(failed) == ["00001", "00002"]
    assert all("unreadable WebDataset tar" in f["error"] for f in failed.values())
    assert failed["00001"]["input"].endswith("00001.tar")
    assert "cut off" in failed["00001"]["error"]
    scored = pq.read_table(tmp_path / "out" / "scored" / "00000.parquet")
    assert scored.num_rows == 4 and set(scored["winnow_status"].to_pylist()) == {"ok"}
    assert [p.name for p in staged.iterdir()] == ["00000.parquet"]
