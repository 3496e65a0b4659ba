"""Shard discovery: which input Parquet files a run covers, and what each holds.

Only footers are read here (row counts, row-group sizes, schema), so discovery
is cheap on any fsspec filesystem and a shard whose footer is unreadable is
reported as a failed shard instead of stopping the run.
"""

from __future__ import annotations

import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from itertools import accumulate
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec import AbstractFileSystem

from pipeline.config import ConfigError, WinnowConfig
from pipeline.io.retry import retrying

GLOB_CHARS = set("*?[")
# A span is consecutive row groups that one task reads and the writer joins and writes as
# one, of about one model batch (`span_rows`). img2dataset writes a row group every 100
# rows, and each read pays an open, a footer and a request per column, so one read a row
# group would be bound by those (spans of ten read 1.8x as fast from disk, 3x from S3).
# At most this many bytes (uncompressed, as the footer records them) in one, a larger row
# group alone: what a read task holds (Ray Data's block size). Such a group (pyarrow's
# writer puts up to 1Mi rows in one) is read and written in pieces of that size or a batch.
SPAN_BYTES = 128 * 2**20


def span_rows(config: WinnowConfig) -> int:
    """Rows a span holds at most: the largest model batch, so each read feeds about one
    call and a slow CPU model's last block is no longer than a batch."""
    return max(model.batch_size for model in config.models)


@dataclass(frozen=True, kw_only=True)
class Shard:
    """One input Parquet file and its footer facts."""

    index: int
    url: str
    name: str
    num_rows: int
    row_group_rows: tuple[int, ...]
    row_group_bytes: tuple[int, ...]
    schema: pa.Schema
    fingerprint: dict[str, Any]

    @property
    def columns(self) -> list[str]:
        return self.schema.names

    @property
    def row_group_starts(self) -> list[int]:
        return [0, *accumulate(self.row_group_rows)][:-1]

    def spans(self, *, rows: int, size: int = SPAN_BYTES, piece: int | None = None) -> list[Span]:
        """Runs of consecutive row groups of up to `rows` rows and `size` bytes (a larger
        group alone), in order; none without rows. A span's rows are read and written in
        pieces of at most `piece` rows (`rows` unless given) and `size` bytes: a run in one,
        a larger group in several."""
        runs: list[list[int]] = []
        held = weight = 0
        for group, (count, nbytes) in enumerate(
            zip(self.row_group_rows, self.row_group_bytes, strict=True)
        ):
            if not runs or held + count > rows or weight + nbytes > size:
                runs.append([])
                held = weight = 0
            runs[-1].append(group)
            held += count
            weight += nbytes
        starts = self.row_group_starts
        spans = []
        for run in runs:
            count = sum(self.row_group_rows[group] for group in run)
            nbytes = sum(self.row_group_bytes[group] for group in run)
            most = min(count, piece or rows, max(1, count * size // max(nbytes, 1)))
            spans.append(
                Span(row_groups=tuple(run), first_row=starts[run[0]], rows=count, piece=most)
            )
        return [span for span in spans if span.rows]

    def read_tasks(
        self, *, rows: int, size: int = SPAN_BYTES, piece: int | None = None
    ) -> list[dict[str, Any]]:
        """One read task per span, each knowing where its rows start and the pieces it
        reads them in."""
        return [
            {
                "shard": self.index,
                "url": self.url,
                "first_group": span.row_groups[0],
                "groups": len(span.row_groups),
                "first_row": span.first_row,
                "rows": span.rows,
                "piece": span.piece,
            }
            for span in self.spans(rows=rows, size=size, piece=piece)
        ]


@dataclass(frozen=True, kw_only=True)
class Span:
    row_groups: tuple[int, ...]
    first_row: int
    rows: int
    # Rows read and written at once: all of them, but for a row group too large for one.
    piece: int

    @property
    def in_pieces(self) -> bool:
        return self.piece < self.rows


def describe_groups(groups: list[int]) -> str:
    return f"row group {groups[0]}" if len(groups) == 1 else f"row groups {groups[0]}-{groups[-1]}"


@dataclass(frozen=True, kw_only=True)
class ShardFailure:
    """A shard that could not be processed, with the reason a user can act on."""

    name: str
    url: str
    error: str


@dataclass(kw_only=True)
class Discovery:
    shards: list[Shard] = field(default_factory=list)
    failures: list[ShardFailure] = field(default_factory=list)


def open_fs(url: str, storage_options: dict[str, Any]) -> tuple[AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    return fs, path


def open_without_readahead(fs: AbstractFileSystem, path: str) -> Any:
    """A Parquet file opened for reading some of its column chunks, without fsspec's
    read-ahead: on object storage that fetches s3fs's block size (50 MB) past each read,
    whatever the read asked for."""
    return fs.open(path, "rb", cache_type="none")


def is_data_file(path: str) -> bool:
    base = posixpath.basename(path)
    return base.endswith(".parquet") and not base.startswith(("_", "."))


def _expand(fs: AbstractFileSystem, path: str) -> list[str]:
    fs.invalidate_cache()  # a listing cached earlier in this process would hide new shards
    if GLOB_CHARS & set(path):
        return sorted(p for p in fs.glob(path) if is_data_file(p))
    if fs.isdir(path):
        return sorted(p for p in fs.ls(path, detail=False) if is_data_file(p))
    if fs.exists(path):
        return [path]
    raise ConfigError(f"input.path: {path!r} does not exist")


def shard_name(path: str) -> str:
    return posixpath.basename(path).removesuffix(".parquet")


def list_input_files(
    paths: list[str], storage_options: dict[str, Any]
) -> list[tuple[AbstractFileSystem, str]]:
    """Expand directories and globs to data files, refusing two inputs with one output name."""
    found: list[tuple[AbstractFileSystem, str]] = []
    for url in paths:
        fs, path = open_fs(url, storage_options)
        found.extend((fs, p) for p in _expand(fs, path))
    seen: dict[str, str] = {}
    for _, path in found:
        name = shard_name(path)
        if name in seen:
            raise ConfigError(
                f"input.path: {seen[name]} and {path} would both write output shard {name!r}; "
                "point input.path at one of them or rename one"
            )
        seen[name] = path
    if not found:
        hint = format_hint(paths, storage_options, suffix=".tar", fmt="webdataset")
        raise ConfigError(f"input.path: no .parquet shards found in {paths}{hint}")
    return found


def format_hint(paths: list[str], storage_options: dict[str, Any], *, suffix: str, fmt: str) -> str:
    """Where input.path's folders hold the other format's files, the setting that reads them."""
    count = 0
    for url in paths:
        fs, path = open_fs(url, storage_options)
        if not GLOB_CHARS & set(path) and fs.isdir(path):
            count += sum(p.endswith(suffix) for p in fs.ls(path, detail=False))
    return f" (it holds {count} {suffix} file(s): set input.format: {fmt})" if count else ""


def full_url(fs: AbstractFileSystem, path: str) -> str:
    return fs.unstrip_protocol(path)


def _footer(fs: AbstractFileSystem, path: str) -> pq.FileMetaData:
    with open_without_readahead(fs, path) as handle:
        return pq.ParquetFile(handle).metadata


# The first of these that a filesystem reports identifies a version of a file.
VERSION_KEYS = ("ETag", "etag", "md5Hash", "generation", "mtime", "LastModified", "last_modified")


def input_fingerprint(fs: AbstractFileSystem, path: str) -> dict[str, Any]:
    """Size and version (ETag or mtime) of an input file: a changed one is scored again."""
    info = fs.info(path)
    version = next((str(info[k]) for k in VERSION_KEYS if info.get(k) is not None), None)
    return {"size": info.get("size"), "version": version}


# Footers read at once: on object storage each read waits on a round trip or two.
DISCOVERY_THREADS = 16


def _describe(index: int, fs: AbstractFileSystem, path: str) -> Shard | ShardFailure:
    url = full_url(fs, path)
    try:
        meta = retrying(partial(_footer, fs, path), what=f"reading the footer of {url}")
        groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
        schema = meta.schema.to_arrow_schema()
        fingerprint = input_fingerprint(fs, path)
    except Exception as error:  # any unreadable footer is a per-shard failure
        return ShardFailure(name=shard_name(path), url=url, error=f"unreadable Parquet: {error}")
    return Shard(
        index=index,
        url=url,
        name=shard_name(path),
        num_rows=sum(group.num_rows for group in groups),
        row_group_rows=tuple(group.num_rows for group in groups),
        row_group_bytes=tuple(group.total_byte_size for group in groups),
        schema=schema.remove_metadata(),
        fingerprint=fingerprint,
    )


def discover(paths: list[str], storage_options: dict[str, Any]) -> Discovery:
    files = list_input_files(paths, storage_options)
    with ThreadPoolExecutor(DISCOVERY_THREADS, thread_name_prefix="winnow-discover") as pool:
        described = list(pool.map(lambda item: _describe(item[0], *item[1]), enumerate(files)))
    return Discovery(
        shards=[d for d in described if isinstance(d, Shard)],
        failures=[d for d in described if isinstance(d, ShardFailure)],
    )
