"""Typed run configuration, validated in full before any work starts.

Every section forbids unknown keys so a typo fails fast with the key's name
instead of being ignored; `ConfigError` carries a message that says what to
change, and the CLI turns it into exit code 2.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from difflib import get_close_matches
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.config_sections import (
    ColumnConfig,
    ConceptConfig,
    DownloadConfig,
    HeadConfig,
    ImagesConfig,
    InputConfig,
    OutputConfig,
    RayConfig,
    Section,
    check_identifier,
)
from pipeline.schema import model_columns, score_column


class ConfigError(ValueError):
    """A configuration the user must change before anything runs."""


class ModelConfig(Section):
    alias: str = "clip"
    name: str = Field(description="An open_clip architecture name, or an hf-hub:org/repo id.")
    pretrained: str | None = Field(
        default=None,
        description="An open_clip tag, a local or fsspec checkpoint path, or hf-hub:org/repo.",
    )
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    batch_size: int = Field(default=256, gt=0)

    @field_validator("alias")
    @classmethod
    def _alias_is_identifier(cls, value: str) -> str:
        return check_identifier(value, what="alias")

    def added_columns(self) -> list[str]:
        return model_columns(self.alias)


class FilterSpec(Section):
    """A filter's config: `type` names it, the rest are its own keys.

    Each filter is one file in `pipeline/filters/` that holds its spec (a subclass
    with `type: Literal["its_name"]`) beside its policy, and registers both by
    that type. Validating a `FilterSpec` validates the registered spec of its
    type, so unknown types and keys fail with the filter's own key names."""

    type: str

    @model_validator(mode="wrap")
    @classmethod
    def _as_its_type(cls, data: Any, handler: Any) -> Any:
        if cls is not FilterSpec or not isinstance(data, dict):
            return handler(data)
        known = filter_specs()
        kind = data.get("type")
        if kind not in known:
            raise ValueError(
                f"unknown filter type {kind!r} (known: {', '.join(sorted(known))})"
                if kind is not None
                else f"a filter needs a type (one of: {', '.join(sorted(known))})"
            )
        return known[kind].model_validate(data)


_FILTER_SPECS: dict[str, type[FilterSpec]] = {}
# Where the built-in filters live: the package imports each of its filter files.
FILTERS_PACKAGE = "pipeline.filters"


def filter_type(spec: type[FilterSpec]) -> str:
    return get_args(spec.model_fields["type"].annotation)[0]


def register_filter(spec: type[FilterSpec]) -> None:
    """Make `spec` the config of filters of its type (its `type` field's one literal)."""
    _FILTER_SPECS[filter_type(spec)] = spec


def filter_specs() -> dict[str, type[FilterSpec]]:
    """Every registered filter spec by type. The built-in filters register when their
    package is imported, found here by name: config sits below the filters, which
    import it, and so looks them up as a plugin registry would."""
    importlib.import_module(FILTERS_PACKAGE)
    return _FILTER_SPECS


class WinnowConfig(Section):
    download: DownloadConfig | None = None
    input: InputConfig
    output: OutputConfig
    models: list[ModelConfig] = Field(min_length=1)
    # Serialised as each filter's own spec, not as the base (which holds only `type`).
    filters: list[SerializeAsAny[FilterSpec]] = Field(default_factory=list)
    heads: list[HeadConfig] = Field(
        default_factory=list, description="Trained heads over an alias's embeddings."
    )
    concepts: list[ConceptConfig] = Field(
        default_factory=list, description="Zero-shot concepts over an alias's image embeddings."
    )
    images: ImagesConfig = Field(default_factory=ImagesConfig)
    ray: RayConfig = Field(default_factory=RayConfig)

    @model_validator(mode="after")
    def _names_do_not_clash(self) -> WinnowConfig:
        aliases = [m.alias for m in self.models]
        if len(set(aliases)) < len(aliases):
            raise ValueError(
                f"models: alias {_repeated(aliases)} is used twice; give each model its own"
            )
        added = self.added_columns()
        if len(set(added)) != len(added):
            raise ValueError(
                "the added column names (output.*_column, the models' columns, heads.N.name, "
                f"concepts.N.name) must differ; used twice: {_repeated(added)}"
            )
        entries = [
            *(("filters", i, p) for i, p in enumerate(self.filters)),
            *(("heads", i, h) for i, h in enumerate(self.heads)),
            *(("concepts", i, c) for i, c in enumerate(self.concepts)),
        ]
        for section, index, entry in entries:
            # A score filter given a column cuts on that column, whatever its alias says.
            alias = None if getattr(entry, "column", None) else getattr(entry, "alias", None)
            if alias is not None and alias not in aliases:
                raise ValueError(
                    f"{section}.{index}.alias: {alias!r} is not a model alias "
                    f"(have: {', '.join(aliases)})"
                )
        columns = self.score_columns()
        for index, policy in enumerate(self.filters):
            column = getattr(policy, "column", None)
            if column is not None and column not in columns:
                raise ValueError(
                    f"filters.{index}.column: {column!r} is not a score column of this config "
                    f"(have: {', '.join(columns)})"
                )
        return self

    def score_columns(self) -> list[str]:
        """The columns a score filter can cut on: each model's score, each head and concept."""
        return [score_column(m.alias) for m in self.models] + [c.name for c in self.columns()]

    def columns(self) -> list[ColumnConfig]:
        """The heads and concepts: each adds one column made from embeddings."""
        return [*self.heads, *self.concepts]

    def policies(self) -> list[FilterSpec]:
        """The filters in order, with the status filter first unless the list places it."""
        if any(p.type == "status" for p in self.filters):
            return list(self.filters)
        return [FilterSpec.model_validate({"type": "status"}), *self.filters]

    def added_columns(self) -> list[str]:
        names = [
            self.output.status_column,
            self.output.error_column,
            self.output.rejected_by_column,
            self.output.reject_reason_column,
        ]
        for model in self.models:
            names.extend(model.added_columns())
        return names + [column.name for column in self.columns()]

    def check_input_columns(self, columns: Iterable[str], *, where: str) -> None:
        """Refuse a run whose added columns would overwrite input columns."""
        present = set(columns)
        clashes = [name for name in self.added_columns() if name in present]
        if clashes:
            raise ConfigError(
                f"{where} already has column(s) {', '.join(clashes)}, which this run would add. "
                "Change output.status_column / output.error_column or the model alias "
                "(models.N.alias) so the names differ."
            )


def _repeated(names: list[str]) -> str:
    return ", ".join(repr(n) for n in sorted({n for n in names if names.count(n) > 1}))


def _sections(annotation: Any) -> list[type[BaseModel]]:
    """The config sections a field holds, through optionals, lists, Annotated and unions."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [section for arg in get_args(annotation) for section in _sections(arg)]


def _known_keys(loc: tuple[Any, ...], data: Any) -> list[str]:
    """The keys allowed beside the last one of `loc` (a validation error's path) in `data`;
    a filter's own type's where the path leads into one. Empty where the path leads to no
    section."""
    sections: list[type[BaseModel]] = [WinnowConfig]
    node = data
    for part in loc[:-1]:
        node = node[part] if isinstance(node, (dict, list)) and _has(node, part) else None
        if isinstance(part, int):
            continue
        fields = [s.model_fields[part].annotation for s in sections if part in s.model_fields]
        sections = [section for field in fields for section in _sections(field)]
    if sections == [FilterSpec] and isinstance(node, dict):
        spec = filter_specs().get(node.get("type"))
        sections = [spec] if spec else sections
    return list(dict.fromkeys(key for section in sections for key in section.model_fields))


def _has(node: dict | list, part: Any) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(part, int) and 0 <= part < len(node)


def _unknown_key(loc: tuple[Any, ...], data: Any) -> str:
    keys = _known_keys(loc, data)
    close = get_close_matches(str(loc[-1]), keys, n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean {close[0]}?"
    return f"unknown key (known here: {', '.join(keys)})" if keys else "unknown key"


def format_validation_error(error: ValidationError, data: Any = None) -> str:
    """One line per error: its key, and what to change; `data` is what was validated."""
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        if item["type"] == "extra_forbidden":
            lines.append(f"{key}: {_unknown_key(item['loc'], data)}")
            continue
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            message = "required key is missing"
        lines.append(f"{key}: {message}" if key else message)
    return "invalid config:\n  " + "\n  ".join(lines)


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected dotted.key=value, e.g. output.path=/tmp/out")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {text!r}: the key {key!r} has an empty part")
    return parts, yaml.safe_load(raw) if raw.strip() else ""


def apply_override(data: dict[str, Any], text: str) -> None:
    """Set one `dotted.key=value` in raw config data; list items are addressed by index."""
    parts, value = _parse_override(text)
    node: Any = data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(
                    f"--set {text!r}: {where} is not an index of a {len(node)}-item list"
                )
            index = int(part)
            if last:
                node[index] = value
            else:
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise ConfigError(f"--set {text!r}: {'.'.join(parts[:depth])} is not a section")


def parse_config(data: Any, *, overrides: Iterable[str] = ()) -> WinnowConfig:
    if not isinstance(data, dict):
        raise ConfigError("invalid config: the top level must be a mapping of sections")
    for text in overrides:
        apply_override(data, text)
    try:
        return WinnowConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, data)) from None


def load_config(path: str | Path, *, overrides: Iterable[str] = ()) -> WinnowConfig:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read config {path}: {error.strerror or error}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"config {path} is not valid YAML: {error}") from None
    return parse_config(data if data is not None else {}, overrides=overrides)
