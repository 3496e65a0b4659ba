"""`winnow download`: URL lists to img2dataset Parquet shards, with the settings Winnow reads best.

Parquet output (image bytes in `jpg`, img2dataset's per-row `status` and
`error_message`), images resized to keep their aspect ratio with the shorter
side at `image_size` (never upscaled), sha256 hashes for exact dedup, and every
URL accounted for: failures stay in the shards as rows with their status.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipeline.config import ConfigError, DownloadConfig, apply_override, format_validation_error
from pipeline.io.shards import is_data_file, open_fs


def load_download_config(path: str | Path, *, overrides: list[str]) -> DownloadConfig:
    """The `download:` section of a config; the rest is `winnow run`'s to validate."""
    from pydantic import ValidationError

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read config {path}: {error}") from None
    for text in overrides:
        apply_override(data, text)
    if not isinstance(data, dict) or "download" not in data:
        raise ConfigError(
            f"{path} has no download: section; add one, e.g. download: "
            "{url_list: urls.csv, input_format: csv, url_col: url, caption_col: caption, "
            "output_path: shards/}"
        )
    try:
        return DownloadConfig.model_validate(data["download"])
    except ValidationError as error:
        raise ConfigError(format_validation_error(error).replace("\n  ", "\n  download.")) from None


def download(settings: DownloadConfig) -> dict[str, Any]:
    from img2dataset import download as img2dataset_download

    img2dataset_download(
        url_list=settings.url_list,
        input_format=settings.input_format,
        url_col=settings.url_col,
        caption_col=settings.caption_col,
        save_additional_columns=settings.extra_columns or None,
        output_folder=settings.output_path,
        output_format="parquet",
        image_size=settings.image_size,
        resize_mode=settings.resize_mode,
        resize_only_if_bigger=settings.resize_only_if_bigger,
        processes_count=settings.processes,
        thread_count=settings.threads,
        number_sample_per_shard=settings.rows_per_shard,
        timeout=settings.timeout_s,
        retries=settings.retries,
        compute_hash="sha256",
        enable_wandb=False,
        distributor="multiprocessing",
    )
    return shard_counts(settings.output_path)


def shard_counts(folder: str) -> dict[str, Any]:
    """Rows and statuses over the shards img2dataset wrote."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    fs, root = open_fs(folder, {})
    shards = sorted(p for p in fs.ls(root, detail=False) if is_data_file(p))
    statuses: dict[str, int] = {}
    for path in shards:
        with fs.open(path, "rb") as handle:
            status = pq.read_table(handle, columns=["status"])["status"]
        for item in pc.value_counts(status).to_pylist():
            statuses[item["values"]] = statuses.get(item["values"], 0) + item["counts"]
    return {"shards": len(shards), "rows": sum(statuses.values()), "status_counts": statuses}
