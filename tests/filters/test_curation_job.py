"""Filtering a run's scored output on a real local Ray: pool rules, accounting, re-filtering."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import parse_config
from pipeline.run import run
from tests.builders import config_data, good_rows, row, write_dataset, write_shard

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]


def configured(tmp_path, checkpoint, out="out", filters=(), **output):
    data = config_data(tmp_path / "in", tmp_path / out, checkpoint)
    data["filters"] = list(filters)
    data["output"].update(output)
    return parse_config(data)


def read_all(folder, columns=None):
    return pa.concat_tables(
        [pq.read_table(p, columns=columns) for p in sorted(folder.glob("*.parquet"))]
    )


def test_top_fraction_matches_datacomp_rule_over_the_whole_pool(
    tmp_path, tiny_checkpoint, caplog, monkeypatch
):
    write_dataset(tmp_path / "in", shards=3, rows=17, row_group_size=5)
    fraction = 0.3
    monkeypatch.setattr("pipeline.heartbeat.PROGRESS_SECONDS", 0.05)
    with caplog.at_level("INFO", logger="pipeline.filters.curate"):
        run(
            configured(
                tmp_path,
                tiny_checkpoint,
                filters=[{"type": "score_top_fraction", "fraction": fraction}],
            )
        )
    # A fit over the pool says what it is doing while it runs (every 30 s; here 0.05 s).
    assert "filters: fitting score_top_fraction:clip over the pool of 3 shard(s), 0 s so far" in (
        caplog.text
    )
    scored = read_all(tmp_path / "out" / "scored", ["key", "clip_score"])
    scores = scored["clip_score"].to_numpy()
    ranked = np.sort(scores)[::-1]
    threshold = ranked[math.floor(len(ranked) * fraction)]
    expected = set(np.asarray(scored["key"].to_pylist())[scores >= threshold])
    kept = set(read_all(tmp_path / "out" / "filtered")["key"].to_pylist())
    assert kept == expected
    assert len(kept) >= math.floor(51 * fraction) + 1
    summary = json.loads((tmp_path / "out" / "_summary.json").read_text())
    assert summary["filters"]["fitted"]["score_top_fraction:clip"]["pool_rows"] == 51
    assert summary["filters"]["kept"] == len(kept)


def test_every_row_is_kept_or_rejected_with_a_reason(tmp_path, tiny_checkpoint):
    rows = [
        *good_rows(0, 6),
        row("bad", b"broken", "a caption"),
        row("short", good_rows(0, 1)[0]["jpg"], "hi"),
    ]
    write_shard(tmp_path / "in" / "00000.parquet", rows, row_group_size=3)
    write_shard(tmp_path / "in" / "00001.parquet", [])
    run(configured(tmp_path, tiny_checkpoint, filters=[{"type": "caption", "min_words": 2}]))
    out = tmp_path / "out"
    source = pq.read_table(tmp_path / "in" / "00000.parquet")
    filtered = pq.read_table(out / "filtered" / "00000.parquet")
    rejected = pq.read_table(out / "rejected" / "00000.parquet")
    assert filtered.num_rows + rejected.num_rows == source.num_rows
    assert set(filtered["key"].to_pylist()) | set(rejected["key"].to_pylist()) == set(
        source["key"].to_pylist()
    )
    assert filtered.column_names == [
        *source.column_names,
        "winnow_status",
        "winnow_error",
        "clip_score",
    ]
    by_key = {k: source["jpg"][i].as_py() for i, k in enumerate(source["key"].to_pylist())}
    assert all(
        by_key[k] == j
        for k, j in zip(filtered["key"].to_pylist(), filtered["jpg"].to_pylist(), strict=True)
    )
    reasons = dict(
        zip(rejected["key"].to_pylist(), rejected["winnow_rejected_by"].to_pylist(), strict=True)
    )
    assert reasons == {"bad": "status", "short": "caption"}
    assert rejected["winnow_reject_reason"].to_pylist()[-1] == "1 word(s) < min_words 2"
    stats = json.loads((out / "stats" / "00000.json").read_text())["filters"]
    assert stats["kept"] == 6 and stats["rejected"] == 2
    assert stats["removed_by"] == {"status": 1, "caption": 1}
    assert pq.read_table(out / "filtered" / "00001.parquet").num_rows == 0
    assert pq.read_table(out / "rejected" / "00001.parquet").num_rows == 0


def test_refilter_with_new_thresholds_equals_a_fresh_run(tmp_path, tiny_checkpoint):
    write_dataset(tmp_path / "in", shards=2, rows=10)
    first = [{"type": "score_top_fraction", "fraction": 0.5}]
    second = [{"type": "score_top_fraction", "fraction": 0.2}, {"type": "caption", "min_words": 5}]
    run(configured(tmp_path, tiny_checkpoint, filters=first))
    refiltered = run(configured(tmp_path, tiny_checkpoint, filters=second), score=False)
    assert refiltered.summary["this_run"]["shards_scored"] == 0
    run(configured(tmp_path, tiny_checkpoint, out="fresh", filters=second))
    for side in ("filtered", "rejected"):
        again = read_all(tmp_path / "out" / side)
        fresh = read_all(tmp_path / "fresh" / side)
        assert again.num_rows > 0 or side == "filtered"
        assert again.equals(fresh), side


def test_unchanged_filters_skip_shards_on_rerun(tmp_path, tiny_checkpoint, caplog):
    write_dataset(tmp_path / "in", shards=2, rows=4)
    config = configured(
        tmp_path, tiny_checkpoint, filters=[{"type": "score_threshold", "value": 0.0}]
    )
    run(config)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out" / "filtered").iterdir()}
    with caplog.at_level("INFO"):
        run(config)
    assert "filtering 0 shard(s), 2 unchanged" in caplog.text
    assert {
        p.name: p.stat().st_mtime_ns for p in (tmp_path / "out" / "filtered").iterdir()
    } == before


def test_exact_dedup_keeps_the_smallest_id_across_shards(tmp_path, tiny_checkpoint):
    a, b = good_rows(0, 2)
    shard0 = [row("k5", a["jpg"], "first copy"), row("k1", b["jpg"], "other image")]
    shard1 = [row("k2", a["jpg"], "second copy"), row("k9", a["jpg"], "third copy")]
    write_shard(tmp_path / "in" / "00000.parquet", shard0)
    write_shard(tmp_path / "in" / "00001.parquet", shard1)
    run(configured(tmp_path, tiny_checkpoint, filters=[{"type": "exact_dedup", "by": "sha256"}]))
    kept = sorted(read_all(tmp_path / "out" / "filtered")["key"].to_pylist())
    assert kept == ["k1", "k2"]
    rejected = read_all(tmp_path / "out" / "rejected")
    assert set(rejected["winnow_reject_reason"].to_pylist()) == {"same sha256 as k2"}
