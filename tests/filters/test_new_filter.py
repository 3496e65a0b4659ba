"""A new filter is one file: the config takes its type and keys, and a run applies it."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.cli import main
from pipeline.config import ConfigError, parse_config
from tests.builders import config_data, good_rows, write_shard
from tests.filters import keyword_filter


def test_the_config_takes_a_new_filters_type_and_checks_its_keys(tmp_path):
    data = config_data(tmp_path / "in", tmp_path / "out", tmp_path / "w.safetensors")
    data["filters"] = [{"type": "keyword", "word": "cube"}]
    (spec,) = parse_config(data).filters
    assert isinstance(spec, keyword_filter.KeywordFilter) and spec.word == "cube"
    data["filters"] = [{"type": "keyword", "wrd": "cube"}]
    with pytest.raises(ConfigError, match=r"filters\.0\.wrd: unknown key; did you mean word\?"):
        parse_config(data)


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_winnow_run_applies_a_new_filter(tmp_path, tiny_checkpoint, capsys):
    rows = good_rows(0, 6)
    for index, row in enumerate(rows):
        row["caption"] = f"a red cube number {index}" if index % 2 else f"a blue ball {index}"
    write_shard(tmp_path / "in" / "00000.parquet", rows)
    data = config_data(tmp_path / "in", tmp_path / "out", tiny_checkpoint)
    data["filters"] = [{"type": "keyword", "word": "cube"}]
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(data))
    assert main(["run", str(config)]) == 0
    kept = pq.read_table(tmp_path / "out" / "filtered" / "00000.parquet")["caption"].to_pylist()
    rejected = pq.read_table(tmp_path / "out" / "rejected" / "00000.parquet").to_pydict()
    assert kept == [r["caption"] for r in rows if "cube" not in r["caption"]]
    assert set(rejected["winnow_rejected_by"]) == {"keyword"}
    assert set(rejected["winnow_reject_reason"]) == {"caption says 'cube'"}
