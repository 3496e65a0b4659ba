"""Exports for retrieval: clip-retrieval's npy layout (faiss finds each image itself), and Lance."""

from __future__ import annotations

import subprocess
import sys

import faiss
import lance
import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.config import parse_config
from pipeline.run import run
from tests.builders import config_data, good_rows, row, write_dataset, write_shard

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
    result = export(str(scored_run / "out"), "--format", "lance", "--output", str(target))
    assert result.returncode == 0, result.stderr
    table = lance.dataset(str(target)).to_table()
    assert table.num_rows == 19
    assert str(table.schema.field("vector").type) == "fixed_size_list<item: float>[32]"
    assert "broken" not in table["key"].to_pylist()


def test_export_refuses_an_unknown_alias(scored_run):
    result = export(str(scored_run / "out"), "--output", str(scored_run / "x"), "--alias", "l14")
    assert result.returncode == 2 and "not a model of this run" in result.stderr
