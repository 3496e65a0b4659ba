"""Output formats behind one writer: written table by table, in place whole or not at all."""

from __future__ import annotations

import fsspec
import lance
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.cli import _parser
from pipeline.io.formats import TEXT_VECTOR, VECTOR, TableWriter, export_formats


def part(first: int, rows: int) -> pa.Table:
    vectors = pa.array(
        [[float(i), 0.5] for i in range(first, first + rows)], pa.list_(pa.float16(), 2)
    )
    return pa.table(
        {
            "key": [f"k{i}" for i in range(first, first + rows)],
            VECTOR: vectors,
            TEXT_VECTOR: vectors,
        }
    )


def writer(name: str, target) -> TableWriter:
    return TableWriter.FORMATS[name](fs=fsspec.filesystem("file"), final=str(target))


def read_back(name: str, target) -> list[str]:
    if name == "parquet":
        return pq.read_table(target)["key"].to_pylist()
    if name == "lance":
        return lance.dataset(str(target)).to_table()["key"].to_pylist()
    parts = sorted((target / "metadata").glob("*.parquet"), key=lambda p: int(p.stem.split("_")[1]))
    keys = [k for p in parts for k in pq.read_table(p)["key"].to_pylist()]
    images = np.concatenate(
        [np.load(target / "img_emb" / f"img_emb_{i}.npy") for i in range(len(parts))]
    )
    assert images.shape == (len(keys), 2)
    return keys


@pytest.mark.parametrize("name", ["parquet", "npy", "lance"])
def test_a_committed_output_holds_every_table_in_order(tmp_path, name):
    out = writer(name, tmp_path / "out")
    out.write(part(0, 3))
    out.write(part(3, 2))
    out.commit()
    assert read_back(name, tmp_path / "out") == [f"k{i}" for i in range(5)]
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("name", ["parquet", "npy", "lance"])
def test_an_aborted_output_leaves_nothing_behind(tmp_path, name):
    out = writer(name, tmp_path / "out")
    out.write(part(0, 3))
    out.abort()
    left = [p for p in tmp_path.rglob("*") if p.is_file()]
    if name == "lance":  # no committed version: nothing a reader can open
        with pytest.raises(ValueError):
            lance.dataset(str(tmp_path / "out"))
    else:
        assert left == []


def test_export_offers_the_registered_formats():
    assert set(export_formats()) == {"parquet", "npy", "lance"}
    args = _parser().parse_args(["export", "OUT", "--format", "parquet", "--output", "x"])
    assert args.fmt == "parquet"
