"""Storage credentials stay out of what a run records.

A run writes its config into `_summary.json`, every output Parquet file's metadata
and the HTML report, and outputs get shared and published. So the recorded
`storage_options` keep only the settings known to be harmless (endpoints,
regions, flags) and say `<redacted>` for every other value: a secret under any
name (`key`, `secret`, `token`, `account_key`, `sas_token`, ...) never lands in
an output.
"""

from __future__ import annotations

from typing import Any

from pipeline.config import WinnowConfig

REDACTED = "<redacted>"
# fsspec / s3fs / gcsfs / adlfs / botocore settings that locate storage or tune access.
HARMLESS = frozenset(
    {
        "endpoint_url",
        "region_name",
        "anon",
        "use_ssl",
        "requester_pays",
        "project",
        "account_name",
        "version_aware",
        "skip_instance_cache",
        "use_listings_cache",
        "listings_expiry_time",
        "default_block_size",
        "default_cache_type",
        "connect_timeout",
        "read_timeout",
        "retries",
        "max_attempts",
        "signature_version",
        "addressing_style",
        "mode",
        "s3",
        "client_kwargs",
        "config_kwargs",
    }
)


def redact(options: dict[str, Any]) -> dict[str, Any]:
    """`options` with every value not known to be harmless replaced (a harmless key's
    dict, such as `client_kwargs`, is redacted in turn)."""
    return {
        key: REDACTED
        if key not in HARMLESS
        else redact(value)
        if isinstance(value, dict)
        else value
        for key, value in options.items()
    }


def unredacted(options: dict[str, Any]) -> dict[str, Any]:
    """Recorded options without the redacted entries: where the storage is, with the
    credentials left to the environment (AWS_* variables, a profile, a service account)."""
    return {
        key: unredacted(value) if isinstance(value, dict) else value
        for key, value in options.items()
        if value != REDACTED
    }


def recorded(config: WinnowConfig) -> dict[str, Any]:
    """The config as a run records it, credentials redacted."""
    data = config.model_dump(mode="json")
    for section in ("input", "output"):
        data[section]["storage_options"] = redact(data[section]["storage_options"])
    return data
