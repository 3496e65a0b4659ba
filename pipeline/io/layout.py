"""Where a run's outputs live, and how a file appears complete or not at all.

Files are written under a temporary dot-name in their final folder and then
moved into place. A shard's stats JSON is written after its data files and is
its commit record (as in img2dataset): it names the input's size and version,
and the folder of them is the run's manifest. A rerun skips shards whose record
matches their input, redoes changed ones, and first removes temporary files
that a killed attempt left behind.
"""

from __future__ import annotations

import json
import posixpath
import re
import uuid
from typing import Any

import pyarrow as pa
from fsspec import AbstractFileSystem

from pipeline.io.retry import retrying
from pipeline.io.shards import open_fs

SCORED = "scored"
FILTERED = "filtered"
REJECTED = "rejected"
STATS = "stats"
STAGED = "_staged"  # WebDataset tars as Parquet (pipeline/io/webdataset.py)
POOL = "_pool"  # pool policies' fitted state, such as drop lists (pipeline/filters/drops.py)
SUMMARY = "_summary.json"


def to_json(data: dict[str, Any]) -> str:
    """Indented JSON with lists of numbers kept on one line (histograms stay readable)."""
    text = json.dumps(data, indent=2, default=str)
    return re.sub(
        r"\[\s*([-0-9.,e\s]+?)\s*\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text
    )


def parquet_options(schema: pa.Schema) -> dict[str, Any]:
    """How Winnow writes its Parquet so that a reader can take a row group in pieces.

    pyarrow's writer checks a page's size every `write_batch_size` values (1,024 unless
    set), and makes a dictionary of the first values of each column: on 80 KB images,
    an 82 MB page and an 82 MB dictionary page per 1,024 rows, each read whole to read
    any row of it. Pages of 16 rows and no dictionary keep a piece's read small.
    Dictionaries and statistics are kept for scalar columns only: on float16 embeddings
    they took most of the write time and serve no reader."""
    scalars = [
        field.name
        for field in schema
        if not (
            pa.types.is_fixed_size_list(field.type)
            or pa.types.is_binary(field.type)
            or pa.types.is_large_binary(field.type)
        )
    ]
    return {"use_dictionary": scalars, "write_statistics": scalars, "write_batch_size": 16}


def temporary_name(final: str) -> str:
    """A dot-name beside `final`, unique to this attempt: a rerun removes such leftovers."""
    folder, base = posixpath.split(final)
    return posixpath.join(folder, f".{base}.{uuid.uuid4().hex[:12]}.tmp")


def commit_file(fs: AbstractFileSystem, temporary: str, final: str) -> None:
    """Move a finished file into place (a copy and a delete on S3), retrying transient errors.
    Every commit of every output goes through here (the kill tests stop a run here)."""
    retrying(lambda: fs.mv(temporary, final), what=f"committing {final}")


def discard_file(fs: AbstractFileSystem, temporary: str) -> None:
    """Remove an attempt's temporary file, if it got as far as creating one."""
    if fs.exists(temporary):
        fs.rm(temporary)


class OutputLayout:
    def __init__(self, *, root: str, storage_options: dict[str, Any]) -> None:
        self.fs: AbstractFileSystem
        self.fs, self.root = open_fs(root, storage_options)
        self.root = self.root.rstrip("/")
        self.fs.invalidate_cache()  # another process may have written here since

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def url(self, *parts: str) -> str:
        return self.fs.unstrip_protocol(self.path(*parts))

    def scored(self, name: str) -> str:
        return self.path(SCORED, f"{name}.parquet")

    def filtered(self, name: str) -> str:
        return self.path(FILTERED, f"{name}.parquet")

    def rejected(self, name: str) -> str:
        return self.path(REJECTED, f"{name}.parquet")

    def stats(self, name: str) -> str:
        return self.path(STATS, f"{name}.json")

    def prepare(self, *folders: str) -> None:
        for folder in folders or (SCORED, STATS):
            self.fs.makedirs(self.path(folder), exist_ok=True)

    def temporary(self, final: str) -> str:
        return temporary_name(final)

    def commit(self, temporary: str, final: str) -> None:
        commit_file(self.fs, temporary, final)

    def write_json(self, final: str, data: dict[str, Any]) -> None:
        temporary = self.temporary(final)
        with self.fs.open(temporary, "w") as handle:
            handle.write(to_json(data))
        self.commit(temporary, final)

    def read_json(self, final: str) -> dict[str, Any] | None:
        if not self.fs.exists(final):
            return None
        with self.fs.open(final, "r") as handle:
            return json.load(handle)

    def names_in(self, folder: str) -> set[str]:
        """The shard names with a data or stats file in `folder`: one listing, not a
        request per shard (on object storage, thousands of requests take minutes)."""
        path = self.path(folder)
        if not self.fs.exists(path):
            return set()
        files = (posixpath.basename(p) for p in self.fs.ls(path, detail=False))
        return {f.rsplit(".", 1)[0] for f in files if f.endswith((".parquet", ".json"))}

    def records(self, names: list[str]) -> dict[str, dict[str, Any]]:
        """The commit records of those of `names` that are committed (a stats record and a
        scored file), read in one batched request where the storage has one."""
        committed = set(names) & self.names_in(STATS) & self.names_in(SCORED)
        paths = {self.stats(name): name for name in committed}
        found = self.fs.cat(list(paths), on_error="omit") if paths else {}
        return {paths[path]: json.loads(data) for path, data in found.items()}

    def remove_leftovers(self) -> list[str]:
        """Delete temporary files of attempts that never committed (the caller holds the lock)."""
        found = []
        for folder in (SCORED, FILTERED, REJECTED, STATS, STAGED, ""):
            pattern = self.path(folder, ".*.tmp") if folder else self.path(".*.tmp")
            found += self.fs.glob(pattern)
        for path in found:
            self.fs.rm(path)
        return found
