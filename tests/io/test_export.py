"""Exports for retrieval: clip-retrieval's npy layout (faiss finds each image itself), and Lance."""

from __future__ import annotations

import json
import subprocess
import sys

import faiss
import lance
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import parse_config
from pipeline.run import run
from tests.builders import config_data, good_rows, row, write_dataset, write_shard
from tests.isolated import run_script

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("export")
    write_dataset(root / "in", shards=2, rows=8)
    write_shard(
        root / "in" / "00002.parquet", [*good_rows(2, 3), row("broken", b"nope", "a caption")]
    )
    run(parse_config(config_data(root / "in", root / "out", tiny_checkpoint)))
    return root


def export(*args):
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "export", *args], capture_output=True, text=True
    )


def test_npy_export_aligns_with_metadata_and_indexes_with_faiss(scored_run):
    target = scored_run / "npy"
    result = export(str(scored_run / "out"), "--format", "npy", "--output", str(target))
    assert result.returncode == 0, result.stderr
    assert "exported 19 rows (npy)" in result.stdout
    images, texts, keys = [], [], []
    for part in range(3):
        image = np.load(target / "img_emb" / f"img_emb_{part}.npy")
        text = np.load(target / "text_emb" / f"text_emb_{part}.npy")
        metadata = pq.read_table(target / "metadata" / f"metadata_{part}.parquet")
        assert image.shape == text.shape == (metadata.num_rows, 32)
        scored = pq.read_table(scored_run / "out" / "scored" / f"{part:05d}.parquet")
        ok = [r for r in scored.to_pylist() if r["winnow_status"] == "ok"]
        assert metadata["key"].to_pylist() == [r["key"] for r in ok]
        np.testing.assert_array_equal(
            image, np.asarray([r["clip_image_embedding"] for r in ok], image.dtype)
        )
        images.append(image)
        texts.append(text)
        keys += metadata["key"].to_pylist()
    vectors = np.concatenate(images).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    _, found = index.search(vectors, 1)
    assert found[:, 0].tolist() == list(range(len(keys)))


def test_lance_export_holds_vectors(scored_run):
    target = scored_run / "table.lance"
    for _ in range(2):  # the second export replaces the first
        result = export(str(scored_run / "out"), "--format", "lance", "--output", str(target))
        assert result.returncode == 0, result.stderr
        assert "WARN" not in result.stderr
    table = lance.dataset(str(target)).to_table()
    assert table.num_rows == 19
    assert str(table.schema.field("vector").type) == "fixed_size_list<item: float>[32]"
    assert "broken" not in table["key"].to_pylist()


def test_export_refuses_an_unknown_alias(scored_run):
    result = export(str(scored_run / "out"), "--output", str(scored_run / "x"), "--alias", "l14")
    assert result.returncode == 2 and "not a model of this run" in result.stderr


EXPORT_PEAK = """
import json, resource, sys
import lance  # noqa: F401  (imported before the baseline: its import is not the export's)
from pipeline.io.export import export
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = export(sys.argv[1], fmt="lance", target=sys.argv[2])
grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"rows": result["rows"], "grew_kb": grew}))
"""


def scored_output(root, names, rows: int, dim: int):
    """A run's output with only what an export reads (its summary's models, shards and
    columns, and the scored shards), written directly: a job would take minutes to make
    this many embedding bytes. The shards are links to one set of files."""
    (root / "scored").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in names:
        source = root.parent / "source" / f"{name}.parquet"
        if not source.exists():
            source.parent.mkdir(exist_ok=True)

            def vectors():
                values = rng.standard_normal(rows * dim).astype(np.float16)
                return pa.FixedSizeListArray.from_arrays(pa.array(values), dim)

            table = pa.table(
                {
                    "key": [f"{name}-{i}" for i in range(rows)],
                    "caption": ["a caption"] * rows,
                    "clip_score": rng.random(rows).astype(np.float32),
                    "clip_image_embedding": vectors(),
                    "clip_text_embedding": vectors(),
                }
            )
            pq.write_table(table, source)
        (root / "scored" / f"{name}.parquet").symlink_to(source)
    summary = {
        "models": [{"alias": "clip"}],
        "shards": list(names),
        "config": {
            "input": {"id_column": "key", "caption_column": "caption", "image_column": "jpg"},
            "output": {"status_column": "winnow_status"},
        },
    }
    (root / "_summary.json").write_text(json.dumps(summary))
    return root


def test_lance_export_memory_holds_one_shard_however_many_the_run_has(tmp_path):
    """12,000 rows of two 256-float vectors are 24.6 MB a shard as float32: three times
    the shards must not take three times the memory (the old export joined them all)."""
    names = [f"{i:05d}" for i in range(9)]
    grew = {}
    for count in (3, 9):
        output = scored_output(tmp_path / f"out{count}", names[:count], rows=12_000, dim=256)
        measured = run_script(EXPORT_PEAK, str(output), str(tmp_path / f"t{count}.lance"))
        assert measured["rows"] == 12_000 * count
        grew[count] = measured["grew_kb"] / 1024
    table = lance.dataset(str(tmp_path / "t9.lance")).to_table(columns=["key"])
    assert table["key"].to_pylist() == [f"{n}-{i}" for n in names for i in range(12_000)]
    # Six more shards' vectors are 148 MB: joined, the peak grew by that much.
    assert grew[9] - grew[3] < 60, grew
