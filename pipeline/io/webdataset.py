"""WebDataset input: img2dataset / DataComp tars, staged once as Parquet shards.

Each `NAME.tar` (samples `KEY.jpg`, `KEY.txt`, `KEY.json`) becomes
`OUT/_staged/NAME.parquet` with img2dataset's Parquet columns, and the run
proceeds exactly as for Parquet input, so outputs are named after the tars and
every guarantee holds. When img2dataset's sidecar `NAME.parquet` sits next to a
tar, its rows (failed downloads included) are the shard's rows, in its order,
with image bytes joined from the tar by key; otherwise the tar's samples are.
A staged shard is rebuilt only when its tar changes (size and ETag/mtime).
Staging copies the image bytes once: budget that storage for large pools.
"""

from __future__ import annotations

import json
import posixpath
import tarfile
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import ConfigError, InputConfig
from pipeline.io.layout import OutputLayout
from pipeline.io.shards import GLOB_CHARS, input_fingerprint, open_fs

STAGED = "_staged"
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
FINGERPRINT_KEY = b"winnow_staged_from"


def _tars(fs: Any, path: str) -> list[str]:
    fs.invalidate_cache()
    if GLOB_CHARS & set(path):
        return sorted(p for p in fs.glob(path) if p.endswith(".tar"))
    if fs.isdir(path):
        return sorted(p for p in fs.ls(path, detail=False) if p.endswith(".tar"))
    if fs.exists(path):
        return [path]
    raise ConfigError(f"input.path: {path!r} does not exist")


def _samples(fs: Any, path: str, source: InputConfig) -> dict[str, dict[str, Any]]:
    samples: dict[str, dict[str, Any]] = {}
    with fs.open(path, "rb") as handle, tarfile.open(fileobj=handle, mode="r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, extension = posixpath.basename(member.name).partition(".")
            data = tar.extractfile(member).read()
            sample = samples.setdefault(key, {"key": key})
            if extension.lower() in IMAGE_EXTENSIONS:
                sample[source.image_column] = data
            elif extension == "txt":
                sample[source.caption_column] = data.decode("utf-8", "replace")
            elif extension == "json":
                meta = json.loads(data)
                sample.update(
                    {k: v for k, v in meta.items() if k not in ("key", source.image_column)}
                )
    return samples


def _table(fs: Any, path: str, source: InputConfig) -> pa.Table:
    samples = _samples(fs, path, source)
    sidecar = path[: -len(".tar")] + ".parquet"
    if fs.exists(sidecar):
        with fs.open(sidecar, "rb") as handle:
            rows = pq.read_table(handle).to_pylist()
        for row in rows:
            row[source.image_column] = samples.get(str(row.get("key")), {}).get(source.image_column)
    else:
        rows = list(samples.values())
    table = pa.Table.from_pylist(rows)
    if source.image_column not in table.column_names:
        table = table.append_column(source.image_column, pa.nulls(table.num_rows, pa.binary()))
    return table


def stage(source: InputConfig, layout: OutputLayout) -> list[str]:
    """Staged Parquet URLs for the input's tars, building those that are missing or stale."""
    staged = []
    layout.fs.makedirs(layout.path(STAGED), exist_ok=True)
    for url in source.paths():
        fs, root = open_fs(url, source.storage_options)
        for path in _tars(fs, root):
            name = posixpath.basename(path)[: -len(".tar")]
            target = layout.path(STAGED, f"{name}.parquet")
            stamp = json.dumps({"tar": fs.unstrip_protocol(path), **input_fingerprint(fs, path)})
            if layout.fs.exists(target):
                with layout.fs.open(target, "rb") as handle:
                    if (pq.read_schema(handle).metadata or {}).get(
                        FINGERPRINT_KEY
                    ) == stamp.encode():
                        staged.append(layout.url(STAGED, f"{name}.parquet"))
                        continue
            table = _table(fs, path, source)
            table = table.replace_schema_metadata({FINGERPRINT_KEY: stamp})
            temporary = layout.temporary(target)
            with layout.fs.open(temporary, "wb") as handle:
                pq.write_table(table, handle, row_group_size=1024)
            layout.commit(temporary, target)
            staged.append(layout.url(STAGED, f"{name}.parquet"))
    if not staged:
        raise ConfigError(f"input.path: no .tar shards found in {source.paths()}")
    return staged
