"""Which models scored an output: shards are added to an output only by the same models.

Each commit record names the models that scored its shard. A config whose models
differ (another alias, architecture, checkpoint or tag) would mix their scores
with the old ones, or filter on columns the old shards lack, so the run refuses it
before any work, as it refuses a bad config.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow.parquet as pq

from pipeline.config import ConfigError
from pipeline.io.layout import OutputLayout
from pipeline.io.writer import METADATA_KEY


def identity(model: dict[str, Any]) -> tuple[str, str, str | None]:
    """What makes two models score alike: alias, architecture, and the checkpoint's hash
    where there is a file (its path may differ from run to run), else the tag."""
    return model["alias"], model["name"], model.get("checkpoint_sha256") or model["pretrained"]


def _named(models: list[dict[str, Any]]) -> str:
    return ", ".join(
        f"{m['alias']}: {m['name']} ({m['pretrained'] or 'random weights'})" for m in models
    )


def _footer_models(layout: OutputLayout, name: str) -> list[dict[str, Any]]:
    """The models in a scored file's metadata: records written before they named them."""
    with layout.fs.open(layout.scored(name), "rb") as handle:
        metadata = pq.read_schema(handle).metadata or {}
    return json.loads(metadata.get(METADATA_KEY, b"{}")).get("models", [])


def check_scored_models(
    models: list[dict[str, Any]], records: dict[str, dict[str, Any]], layout: OutputLayout
) -> None:
    """Refuse `models` (as `describe` gives them) for an output scored with others.

    Records from before they named their models are judged by one scored file's
    metadata: a run wrote all of its shards with one set of models."""
    wanted = [identity(m) for m in models]
    legacy = [name for name, record in records.items() if "models" not in record]
    found = [(name, r["models"]) for name, r in records.items() if "models" in r]
    found += [(legacy[0], _footer_models(layout, legacy[0]))] if legacy else []
    for name, recorded in found:
        if [identity(m) for m in recorded] != wanted:
            raise ConfigError(
                f"models: output {layout.url()} holds shards scored by {_named(recorded)} "
                f"(shard {name}), and this config's models are {_named(models)}: their scores "
                f"would mix. Point output.path at a new folder, or delete "
                f"{layout.url('scored')} and {layout.url('stats')} to score every shard again"
            )
