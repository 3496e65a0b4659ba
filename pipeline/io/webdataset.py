"""WebDataset input: img2dataset / DataComp tars, staged once as Parquet shards.

Each `NAME.tar` (samples `KEY.jpg`, `KEY.txt`, `KEY.json`) becomes
`OUT/_staged/NAME.parquet` with img2dataset's Parquet columns, and the run
proceeds exactly as for Parquet input, so outputs are named after the tars and
every guarantee holds. When img2dataset's sidecar `NAME.parquet` sits next to a
tar, its rows (failed downloads included) are the shard's rows, in its order,
with image bytes joined from the tar by key; otherwise the tar's samples are.
A staged shard is rebuilt only when its tar changes (size and ETag/mtime).
Staging copies the image bytes once: budget that storage for large pools. A tar
that cannot be read (cut off, not a tar, bad JSON) is a failed shard in the
summary, and the other tars are scored.
"""

from __future__ import annotations

import json
import logging
import posixpath
import tarfile
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import ConfigError, InputConfig
from pipeline.heartbeat import Tally, logged_every
from pipeline.io.formats import ParquetWriter
from pipeline.io.layout import STAGED, OutputLayout
from pipeline.io.retry import retrying
from pipeline.io.shards import (
    GLOB_CHARS,
    ShardFailure,
    format_hint,
    input_fingerprint,
    open_fs,
)

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
FINGERPRINT_KEY = b"winnow_staged_from"
# Rows per row group of a staged copy: each read task then takes a batch's worth or less.
STAGED_ROWS = 1024
# CPUs a staging task reserves: it mostly waits on storage, so two share a core.
STAGE_CPUS = 0.5
BLOCK = tarfile.BLOCKSIZE


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
    end = 0  # where the last member's data (padded to whole blocks) ends
    with fs.open(path, "rb") as handle:
        with tarfile.open(fileobj=handle, mode="r|") as tar:
            for member in tar:
                end = member.offset_data + -(-member.size // BLOCK) * BLOCK
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
        # A tar cut off between two members reads as a shorter tar: only the missing
        # end-of-archive marker (two zero blocks) tells, and the samples after would vanish.
        handle.seek(end)
        if handle.read(2 * BLOCK) != bytes(2 * BLOCK):
            raise tarfile.ReadError(
                f"no end-of-archive marker after its {len(samples)} sample(s): cut off"
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


@dataclass(frozen=True, kw_only=True)
class Staged:
    urls: list[str]
    failures: list[ShardFailure]


def _stage_one(fs: Any, path: str, source: InputConfig, layout: OutputLayout) -> str | ShardFailure:
    """The tar's staged URL, rebuilt if missing or stale; a tar that cannot be read fails
    as its shard (with why), as an unreadable Parquet footer does, and the run goes on."""
    name = posixpath.basename(path)[: -len(".tar")]
    target = layout.path(STAGED, f"{name}.parquet")
    url = fs.unstrip_protocol(path)
    try:
        stamp = json.dumps({"tar": url, **input_fingerprint(fs, path)})
        if _staged_from(layout, target) == stamp.encode():
            return layout.url(STAGED, f"{name}.parquet")
        table = retrying(lambda: _table(fs, path, source), what=f"staging {url}")
    except Exception as error:  # a cut-off tar, bad JSON, an unreadable sidecar
        return _failed(
            name,
            url,
            f"unreadable WebDataset tar: {type(error).__name__}: {error}; "
            "fetch it again or leave it out of input.path",
        )
    table = table.replace_schema_metadata({FINGERPRINT_KEY: stamp})
    writer = ParquetWriter(fs=layout.fs, final=target, schema=table.schema)
    try:
        for start in range(0, max(table.num_rows, 1), STAGED_ROWS):
            writer.write(table.slice(start, STAGED_ROWS))
        writer.commit()
    except Exception as error:  # as a scored shard that cannot be written fails alone
        writer.abort()
        return _failed(name, url, f"cannot write its staged copy {target}: {error}")
    return layout.url(STAGED, f"{name}.parquet")


def _staged_from(layout: OutputLayout, target: str) -> bytes | None:
    """The stamp of the tar a staged copy was made from; None where there is no readable
    copy (it is made again)."""
    try:
        with layout.fs.open(target, "rb") as handle:
            return (pq.read_schema(handle).metadata or {}).get(FINGERPRINT_KEY)
    except Exception:  # missing or unreadable: staged again
        return None


def _failed(name: str, url: str, error: str) -> ShardFailure:
    log.warning("cannot stage %s: %s", url, error)
    return ShardFailure(name=name, url=url, error=error)


def find_tars(source: InputConfig) -> list[tuple[Any, str]]:
    """The input's tars (filesystem, path); none is a config error."""
    tars = []
    for url in source.paths():
        fs, root = open_fs(url, source.storage_options)
        tars += [(fs, path) for path in _tars(fs, root)]
    if not tars:
        hint = format_hint(source.paths(), source.storage_options, suffix=".parquet", fmt="parquet")
        raise ConfigError(f"input.path: no .tar shards found in {source.paths()}{hint}")
    seen: dict[str, str] = {}
    for _, path in tars:
        name = posixpath.basename(path)
        if name in seen:
            raise ConfigError(
                f"input.path: {seen[name]} and {path} would both be staged and written as "
                f"shard {name[: -len('.tar')]!r}; point input.path at one of them or rename one"
            )
        seen[name] = path
    return tars


def stage(source: InputConfig, layout: OutputLayout, tars: list[tuple[Any, str]]) -> Staged:
    """Staged Parquet URLs for the tars, building those that are missing or stale in Ray
    tasks (each holds its tar twice: samples, then table), and the tars that failed."""
    import ray

    layout.fs.makedirs(layout.path(STAGED), exist_ok=True)
    remote = ray.remote(num_cpus=STAGE_CPUS, max_retries=2)(_stage_one)
    refs = [remote.remote(fs, path, source, layout) for fs, path in tars]
    index = {ref: i for i, ref in enumerate(refs)}
    done: list[str | ShardFailure | None] = [None] * len(refs)
    tally = Tally(what="staging", unit="tar(s) staged", total=len(tars))
    waiting = refs
    with logged_every(tally.line, logger=log):
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            at = index[ready[0]]
            fs, path = tars[at]
            try:
                done[at] = ray.get(ready[0])
            except Exception as error:  # the task's worker died (out of memory, a lost node)
                name = posixpath.basename(path)[: -len(".tar")]
                done[at] = _failed(name, fs.unstrip_protocol(path), f"staging failed: {error}")
            tally.done += 1
    return Staged(
        urls=[d for d in done if isinstance(d, str)],
        failures=[d for d in done if isinstance(d, ShardFailure)],
    )
