"""The scoring job on a real local Ray, checked against a plain open_clip computation."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.config import parse_config
from pipeline.models.loader import open_clip
from pipeline.run import run
from tests.builders import (
    TINY,
    bomb_png,
    config_data,
    encode,
    good_rows,
    jpeg,
    photo,
    row,
    write_dataset,
    write_shard,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]


def reference_scores(checkpoint, images: list[bytes], captions: list[str]):
    """What a user would compute by hand with open_clip on the same weights."""
    model, _, preprocess = open_clip().create_model_and_transforms(TINY, pretrained=str(checkpoint))
    model.eval()
    tokenizer = open_clip().get_tokenizer(TINY)
    pixels = torch.stack([preprocess(Image.open(io.BytesIO(b)).convert("RGB")) for b in images])
    with torch.no_grad():
        image = F.normalize(model.encode_image(pixels), dim=-1)
        text = F.normalize(model.encode_text(tokenizer(captions)), dim=-1)
    return (image * text).sum(-1).numpy(), image.numpy(), text.numpy()


def embeddings(table, column):
    return np.stack(table[column].to_numpy(zero_copy_only=False))


def test_scores_and_embeddings_match_plain_open_clip(tmp_path, tiny_checkpoint):
    # Row groups of 3 are read, joined and written two at a time (spans of up to a batch of
    # 8), and one row group of 20 (as pyarrow writes by default) a batch at a time.
    inputs = [
        write_shard(tmp_path / "in" / f"{s:05d}.parquet", good_rows(s, 20), row_group_size=size)
        for s, size in enumerate((3, 20))
    ]
    groups = {"00000.parquet": [6, 6, 8], "00001.parquet": [8, 8, 4]}
    config = parse_config(config_data(tmp_path / "in", tmp_path / "out", tiny_checkpoint))
    result = run(config)
    assert result.failed == []
    for path in inputs:
        source = pq.read_table(path)
        scored = pq.read_table(tmp_path / "out" / "scored" / path.name)
        assert scored.num_rows == source.num_rows
        assert scored["key"].to_pylist() == source["key"].to_pylist()
        assert scored["caption"].to_pylist() == source["caption"].to_pylist()
        assert "jpg" not in scored.column_names
        score, image, text = reference_scores(
            tiny_checkpoint, source["jpg"].to_pylist(), source["caption"].to_pylist()
        )
        np.testing.assert_allclose(scored["clip_score"].to_numpy(), score, atol=1e-4)
        np.testing.assert_allclose(embeddings(scored, "clip_image_embedding"), image, atol=1e-4)
        np.testing.assert_allclose(embeddings(scored, "clip_text_embedding"), text, atol=1e-4)
        assert set(scored["winnow_status"].to_pylist()) == {"ok"}
        written = pq.ParquetFile(tmp_path / "out" / "scored" / path.name).metadata
        assert [written.row_group(i).num_rows for i in range(written.num_row_groups)] == groups[
            path.name
        ]
        # Embeddings are written plain (no dictionary, no statistics): far faster to write.
        columns = written.row_group(0)
        chunks = {
            columns.column(i).path_in_schema: columns.column(i) for i in range(columns.num_columns)
        }
        vectors = [chunks[f"clip_{tower}_embedding.list.element"] for tower in ("image", "text")]
        assert all(not v.is_stats_set and not v.has_dictionary_page for v in vectors)
        assert chunks["clip_score"].is_stats_set and chunks["key"].has_dictionary_page
    summary = json.loads((tmp_path / "out" / "_summary.json").read_text())
    assert summary["rows"] == 40
    assert summary["this_run"]["shards_scored"] == 2
    # The first block (after the actor imported torch and loaded the model) came in time.
    assert 0 < summary["this_run"]["first_blocks_seconds"] < summary["this_run"]["scoring_seconds"]


def zoo() -> list[tuple[dict, str]]:
    """Each bad input next to the status it must get."""
    ok = "ok"
    sixteen = encode(
        Image.fromarray((np.arange(48 * 64).reshape(48, 64) * 20).astype(np.uint16)), "PNG"
    )
    cases = [
        (
            row("bad00", None, "gone", status="failed_to_download", error="HTTP 404"),
            "upstream_failed",
        ),
        (row("bad01", None, "a caption"), "missing_image"),
        (row("bad02", b"", "a caption"), "decode_error"),
        (row("bad03", b"\x89PNG\r\n\x1a\n garbage", "a caption"), "decode_error"),
        (row("bad04", jpeg(77, (200, 200))[:400], "a caption"), "decode_error"),
        (row("bad05", b"%PDF-1.4 not an image", "a caption"), "decode_error"),
        (row("bad06", bomb_png(), "a caption"), "image_too_large"),
        (row("bad07", jpeg(78), None), "missing_caption"),
        (row("bad08", jpeg(79), ""), "empty_caption"),
        (row("odd00", encode(photo(80).convert("L"), "PNG"), "grey"), ok),
        (row("odd01", encode(photo(81).convert("CMYK"), "JPEG"), "cmyk"), ok),
        (row("odd02", encode(photo(82).convert("P"), "PNG"), "palette"), ok),
        (row("odd03", encode(photo(83).convert("RGBA"), "PNG"), "alpha"), ok),
        (row("odd04", sixteen, "sixteen bit"), ok),
        (row("odd05", encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"), "one pixel"), ok),
        (row("odd06", jpeg(84), "long " * 5000), ok),
    ]
    good = good_rows(9, 6)
    mixed = []
    for index, case in enumerate(cases):
        mixed.append(case)
        if index % 3 == 0 and good:
            mixed.append((good.pop(), ok))
    return mixed + [(g, ok) for g in good]


def test_bad_input_zoo_gets_statuses_and_leaves_good_rows_alone(tmp_path, tiny_checkpoint):
    cases = zoo()
    write_shard(tmp_path / "in" / "zoo.parquet", [r for r, _ in cases], row_group_size=5)
    result = run(parse_config(config_data(tmp_path / "in", tmp_path / "out", tiny_checkpoint)))
    assert result.failed == []
    scored = pq.read_table(tmp_path / "out" / "scored" / "zoo.parquet")
    assert scored["key"].to_pylist() == [r["key"] for r, _ in cases]
    assert scored["winnow_status"].to_pylist() == [s for _, s in cases]
    statuses = scored["winnow_status"].to_pylist()
    errors = scored["winnow_error"].to_pylist()
    scores = scored["clip_score"].to_pylist()
    for status, error, score in zip(statuses, errors, scores, strict=True):
        assert (error is None) == (status == "ok")
        assert (score is None) == (status != "ok")
    assert errors[0] == "HTTP 404"
    # Image embedding present when the image decoded, text embedding when the caption was usable.
    image_emb = scored["clip_image_embedding"].to_pylist()
    text_emb = scored["clip_text_embedding"].to_pylist()
    by_key = dict(zip(scored["key"].to_pylist(), range(scored.num_rows), strict=True))
    assert image_emb[by_key["bad07"]] is not None and text_emb[by_key["bad07"]] is None
    assert image_emb[by_key["bad01"]] is None and text_emb[by_key["bad01"]] is not None
    # Good rows score exactly as they would alone.
    plain = [i for i, (r, _) in enumerate(cases) if r["key"].startswith("0")]
    score, _, _ = reference_scores(
        tiny_checkpoint,
        [cases[i][0]["jpg"] for i in plain],
        [cases[i][0]["caption"] for i in plain],
    )
    np.testing.assert_allclose(np.asarray([scores[i] for i in plain]), score, atol=1e-4)
    stats = json.loads((tmp_path / "out" / "stats" / "zoo.json").read_text())
    assert stats["rows"] == len(cases)
    assert stats["status_counts"]["decode_error"] == 4
    assert stats["status_counts"]["ok"] == statuses.count("ok")


def test_failed_and_empty_shards_are_reported_while_others_complete(
    tmp_path, tiny_checkpoint, caplog, capfd, monkeypatch
):
    write_dataset(tmp_path / "in", shards=2, rows=6)
    write_shard(tmp_path / "in" / "empty.parquet", [])
    good = (tmp_path / "in" / "00000.parquet").read_bytes()
    (tmp_path / "in" / "truncated.parquet").write_bytes(good[: len(good) // 2])
    no_caption = [{k: v for k, v in r.items() if k != "caption"} for r in good_rows(5, 3)]
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(no_caption), tmp_path / "in" / "nocaption.parquet")
    numbered = [{**r, "caption": index} for index, r in enumerate(good_rows(6, 3))]
    pq.write_table(pa.Table.from_pylist(numbered), tmp_path / "in" / "numbers.parquet")
    listed = [{**r, "status": [r["status"]]} for r in good_rows(7, 2)]
    pq.write_table(pa.Table.from_pylist(listed), tmp_path / "in" / "liststatus.parquet")
    # Row groups of 3 read two at a time (a batch is 8 rows); the second one's captions damaged.
    damaged = tmp_path / "in" / "damaged.parquet"
    write_shard(damaged, good_rows(8, 9), row_group_size=3)
    captions = pq.ParquetFile(damaged).metadata.row_group(1).column(2)
    assert captions.path_in_schema == "caption"
    data = bytearray(damaged.read_bytes())
    data[captions.data_page_offset : captions.data_page_offset + 16] = b"\xff" * 16
    damaged.write_bytes(bytes(data))
    monkeypatch.setattr("pipeline.heartbeat.PROGRESS_SECONDS", 0.2)
    with (
        caplog.at_level("INFO", logger="pipeline.io.sink"),
        caplog.at_level("INFO", logger="pipeline.scoring.progress"),
    ):
        result = run(parse_config(config_data(tmp_path / "in", tmp_path / "out", tiny_checkpoint)))
    failed = {f["shard"]: f["error"] for f in result.failed}
    assert set(failed) == {"truncated", "nocaption", "numbers", "liststatus", "damaged"}
    # Progress on a long run: a line every so often (30 s; here 0.2 s, the first before
    # the actors have started), and a line per committed shard.
    assert "scoring: no rows back yet after 0 s" in caplog.text
    # Ray Data's own progress block (its operators' state) stays in its log file.
    assert "Total Progress" not in capfd.readouterr().err
    assert "committed shard empty: 0 rows (1 of 5 shards)" in caplog.text
    assert "committed shard 00000: 6 rows" in caplog.text
    assert "(3 of 5 shards)" in caplog.text
    assert "unreadable Parquet" in failed["truncated"]
    assert "missing column(s) caption" in failed["nocaption"]
    # The read stage's own error, not only that rows went missing.
    assert failed["liststatus"].startswith("unreadable row group 0: Unsupported cast from list")
    assert failed["damaged"].startswith("unreadable row group 1: ")
    assert failed["numbers"] == (
        "column 'caption' is int64, which cannot be read as the captions (string); "
        "set input.caption_column to the captions' column"
    )
    out = tmp_path / "out" / "scored"
    assert sorted(p.name for p in out.iterdir()) == [
        "00000.parquet",
        "00001.parquet",
        "empty.parquet",
    ]
    assert pq.read_table(out / "empty.parquet").num_rows == 0
    assert "clip_score" in pq.read_table(out / "empty.parquet").column_names


def test_hugging_face_image_structs_score_as_their_bytes(tmp_path, tiny_checkpoint):
    write_dataset(tmp_path / "in", shards=1, rows=5)
    table = pq.read_table(tmp_path / "in" / "00000.parquet")
    images = [{"bytes": b, "path": None} for b in table["jpg"].to_pylist()]
    import pyarrow as pa

    table = table.set_column(table.schema.get_field_index("jpg"), "jpg", pa.array(images))
    pq.write_table(table, tmp_path / "in" / "structs.parquet")
    result = run(parse_config(config_data(tmp_path / "in", tmp_path / "out", tiny_checkpoint)))
    assert result.failed == []
    scored = {
        n: pq.read_table(tmp_path / "out" / "scored" / f"{n}.parquet")
        for n in result.summary["shards"]
    }
    assert scored["structs"]["winnow_status"].to_pylist() == ["ok"] * 5
    np.testing.assert_allclose(  # the same images, batched with other rows
        scored["structs"]["clip_score"].to_numpy(),
        scored["00000"]["clip_score"].to_numpy(),
        atol=1e-6,
    )


def test_metadata_records_model_checkpoint_precision_version_and_config(tmp_path, tiny_checkpoint):
    write_dataset(tmp_path / "in", shards=1, rows=3)
    run(parse_config(config_data(tmp_path / "in", tmp_path / "out", tiny_checkpoint)))
    meta = pq.read_schema(tmp_path / "out" / "scored" / "00000.parquet").metadata
    record = json.loads(meta[b"winnow"])
    model = record["models"][0]
    assert model["name"] == TINY
    assert model["precision"] == "fp32"
    import hashlib

    assert model["checkpoint_sha256"] == hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    assert record["winnow_version"]
    assert record["config"]["models"][0]["pretrained"] == str(tiny_checkpoint)


def test_float16_embeddings_by_default_and_image_bytes_on_request(tmp_path, tiny_checkpoint):
    write_dataset(tmp_path / "in", shards=1, rows=4)
    data = config_data(tmp_path / "in", tmp_path / "out", tiny_checkpoint)
    data["output"] = {"path": str(tmp_path / "out"), "keep_image_bytes": True}
    run(parse_config(data))
    scored = pq.read_table(tmp_path / "out" / "scored" / "00000.parquet")
    assert (
        str(scored.schema.field("clip_image_embedding").type)
        == "fixed_size_list<element: halffloat>[32]"
    )
    assert (
        scored["jpg"].to_pylist()
        == pq.read_table(tmp_path / "in" / "00000.parquet")["jpg"].to_pylist()
    )
    norms = np.linalg.norm(embeddings(scored, "clip_image_embedding").astype(np.float32), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=2e-3)


def test_several_models_share_one_read_and_decode(tmp_path, tiny_checkpoint):
    write_dataset(tmp_path / "in", shards=1, rows=6)
    data = config_data(tmp_path / "in", tmp_path / "out", tiny_checkpoint)
    second = {**data["models"][0], "alias": "b32", "batch_size": 4}
    data["models"].append(second)
    run(parse_config(data))
    scored = pq.read_table(tmp_path / "out" / "scored" / "00000.parquet")
    for alias in ("clip", "b32"):
        assert f"{alias}_score" in scored.column_names
        assert f"{alias}_image_embedding" in scored.column_names
    np.testing.assert_allclose(
        scored["clip_score"].to_numpy(), scored["b32_score"].to_numpy(), atol=1e-6
    )
    record = json.loads(
        pq.read_schema(tmp_path / "out" / "scored" / "00000.parquet").metadata[b"winnow"]
    )
    assert [m["alias"] for m in record["models"]] == ["clip", "b32"]
