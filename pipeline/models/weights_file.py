"""A weights file checked before Ray starts: a model checkpoint or a head's weights.

A file the actors would refuse (pickled code, cut off, not weights at all) is
refused here in one line that names the file and the cause, instead of after
every actor has failed to start. Nothing in the file is executed: a safetensors
file is judged by its header alone (every tensor's bytes must lie in the
file), and any other file is read by torch's weights-only unpickler, memory-
mapped, which refuses anything but tensors and plain containers.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
import tempfile
from pathlib import Path

# Bytes per element of each safetensors dtype.
DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
# A header larger than this is not a safetensors header (the format caps it at 100 MB).
HEADER_LIMIT = 100 << 20


class WeightsFileError(ValueError):
    """Why a weights file cannot be loaded, in one line."""


def is_remote(path: str) -> bool:
    return "://" in path


def local_copy(url: str) -> str:
    """Fetch weights held on object storage once per process; local paths pass through."""
    if not is_remote(url):
        return url
    import fsspec

    target = Path(tempfile.gettempdir()) / "winnow-checkpoints"
    target.mkdir(exist_ok=True)
    local = target / (hashlib.sha256(url.encode()).hexdigest()[:16] + "-" + Path(url).name)
    if not local.exists():
        partial = local.with_suffix(local.suffix + f".{os.getpid()}.part")
        with fsspec.open(url, "rb") as source, open(partial, "wb") as sink:
            while chunk := source.read(1 << 24):
                sink.write(chunk)
        partial.replace(local)
    return str(local)


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def check_weights_file(path: str) -> None:
    """Raise WeightsFileError naming the cause if `path` cannot be loaded as weights."""
    if Path(path).suffix == ".safetensors":
        _check_safetensors(path)
    else:
        _check_torch(path)


def _check_safetensors(path: str) -> None:
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise WeightsFileError(f"cut off: {size} bytes, shorter than a safetensors header")
        (length,) = struct.unpack("<Q", head)
        if length > min(HEADER_LIMIT, size - 8):
            raise WeightsFileError(
                f"not a safetensors file, or cut off: its header would be {length:,} bytes "
                f"of a {size:,}-byte file"
            )
        try:
            header = json.loads(handle.read(length))
        except ValueError as error:
            raise WeightsFileError(f"its safetensors header is not JSON: {error}") from None
    if not isinstance(header, dict):
        raise WeightsFileError("its safetensors header is not a JSON object")
    data = size - 8 - length
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            start, stop = entry["data_offsets"]
            count = math.prod(entry["shape"]) * DTYPE_BYTES[entry["dtype"]]
        except (KeyError, TypeError, ValueError):
            raise WeightsFileError(
                f"tensor {name!r} has no valid dtype, shape and offsets"
            ) from None
        if stop - start != count:
            raise WeightsFileError(
                f"tensor {name!r} has {stop - start:,} bytes for shape {entry['shape']} "
                f"of {entry['dtype']}"
            )
        end = max(end, stop)
    if end > data:
        raise WeightsFileError(
            f"cut off: its header places {end:,} bytes of tensors, the file holds {data:,}"
        )


def _check_torch(path: str) -> None:
    import pickle

    import torch

    try:
        try:
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            torch.load(path, map_location="cpu", weights_only=True)  # the legacy format
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as error:
        raise WeightsFileError(_cause(error)) from None


def _cause(error: Exception) -> str:
    """The line of torch's message that says why, not its advice around it."""
    text = str(error)
    # torch says "Unsupported global: GLOBAL posix.system ..." or "... unsupported GLOBAL
    # posix.system whose module posix is blocked", by version.
    refused = re.search(r"unsupported(?: global:)? GLOBAL ([\w.]+)", text, re.IGNORECASE)
    if refused:
        return f"unsupported global {refused.group(1)}: the file holds pickled code, not weights"
    for line in text.splitlines():
        if "WeightsUnpickler error:" in line:
            return line.split("WeightsUnpickler error:", 1)[1].strip()
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)
    if isinstance(error, EOFError) or "failed finding central directory" in text:
        return f"cut off or not a torch file ({first})"
    return first
