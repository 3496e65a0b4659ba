from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.config import ConfigError, WinnowConfig, load_config, parse_config

ROOT = Path(__file__).parents[1]
EXAMPLE = ROOT / "configs" / "example.yaml"


def base() -> dict:
    return {
        "input": {"path": "data/shards/"},
        "output": {"path": "out/"},
        "models": [{"name": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"}],
    }


def test_defaults_follow_img2dataset_and_the_output_contract():
    config = parse_config(base())
    assert (config.input.image_column, config.input.caption_column, config.input.id_column) == (
        "jpg",
        "caption",
        "key",
    )
    assert config.output.embedding_dtype == "float16"
    assert config.models[0].alias == "clip"
    assert config.models[0].precision == "auto"
    assert config.ray.address is None
    assert "clip_score" in config.added_columns()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "output.embedings_dtype=float16",
            "output.embedings_dtype: unknown key; did you mean embedding_dtype?",
        ),
        ("models.0.nmae=x", "models.0.nmae: unknown key; did you mean name?"),
        # A filter's keys are its own type's, not every filter's.
        ("filters.0.vlaue=0.3", "unknown key; did you mean value?"),
        (
            "filters.0.fraction=0.3",
            "unknown key (known here: type, alias, column, value, min, max)",
        ),
        ("ray.workers=4", "ray.workers: unknown key (known here: address, num_actors, num_cpus,"),
    ],
)
def test_unknown_key_names_the_key_meant_or_the_keys_allowed(override, message):
    data = base()
    data["filters"] = [{"type": "score_threshold", "value": 0.2}]
    with pytest.raises(ConfigError) as error:
        parse_config(data, overrides=[override])
    assert message in str(error.value)


def test_wrong_value_lists_the_allowed_ones():
    data = base()
    data["models"][0]["precision"] = "int8"
    with pytest.raises(ConfigError) as error:
        parse_config(data)
    message = str(error.value)
    assert "models.0.precision" in message
    for allowed in ("auto", "fp32", "fp16", "bf16"):
        assert allowed in message


def test_wrong_type_is_named():
    data = base()
    data["models"][0]["batch_size"] = "large"
    with pytest.raises(ConfigError, match=r"models\.0\.batch_size: .*integer"):
        parse_config(data)


def test_missing_section_is_named():
    data = base()
    del data["output"]
    with pytest.raises(ConfigError, match=r"output: required key is missing"):
        parse_config(data)


def test_overrides_reach_nested_keys_and_list_items():
    config = parse_config(
        base(),
        overrides=[
            "output.path=/tmp/elsewhere",
            "models.0.precision=fp32",
            "models.0.batch_size=32",
            "output.keep_image_bytes=true",
        ],
    )
    assert config.output.path == "/tmp/elsewhere"
    assert config.models[0].precision == "fp32"
    assert config.models[0].batch_size == 32
    assert config.output.keep_image_bytes is True


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("output.path", "expected dotted.key=value"),
        ("models.3.precision=fp32", "models.3 is not an index"),
        ("output..path=x", "empty part"),
    ],
)
def test_bad_overrides_say_what_is_wrong(override, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(base(), overrides=[override])


def test_aliases_must_be_usable_column_prefixes_and_unique():
    data = base()
    data["models"][0]["alias"] = "b-32"
    with pytest.raises(ConfigError, match="alias must start with a letter"):
        parse_config(data)
    data = base()
    data["models"].append(dict(data["models"][0]))
    with pytest.raises(ConfigError, match="alias 'clip' is used twice"):
        parse_config(data)


def test_collision_with_input_columns_is_a_config_error():
    config = parse_config(base(), overrides=["output.status_column=status"])
    with pytest.raises(ConfigError, match="already has column"):
        config.check_input_columns(["key", "jpg", "caption", "status"], where="input shard x")


def test_load_config_reports_bad_yaml_and_missing_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("input: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)


def test_the_example_config_lists_every_key_at_its_default():
    """The README sends users to configs/example.yaml for every key and its default."""
    raw = yaml.safe_load(EXAMPLE.read_text())
    config = parse_config(raw)
    assert set(raw) == set(WinnowConfig.model_fields)
    assert raw["download"] is None and raw["filters"] == []
    sections = [(name, raw[name], getattr(config, name)) for name in ("input", "output", "images")]
    sections += [("ray", raw["ray"], config.ray), ("models.0", raw["models"][0], config.models[0])]
    for name, written, parsed in sections:
        for key, field in type(parsed).model_fields.items():
            assert key in written, f"{name}.{key} is missing from {EXAMPLE.name}"
            if not field.is_required() and (name, key) != ("models.0", "pretrained"):
                default = field.get_default(call_default_factory=True)
                assert getattr(parsed, key) == default, f"{name}.{key} is not its default"


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates_and_names_weights_open_clip_knows(path):
    """The configs users start from: a wrong key or an unknown tag would end their first run."""
    from pipeline.models.architectures import architecture
    from pipeline.models.loader import open_clip

    config = load_config(path)
    for model in config.models:
        assert architecture(model.name) is not None, f"{path.name}: {model.name}"
        if model.pretrained and not (ROOT / model.pretrained).is_file():
            tags = open_clip().list_pretrained_tags_by_model(model.name)
            assert model.pretrained in tags, f"{path.name}: {model.pretrained} not in {tags}"


def test_a_config_dumps_each_filter_with_its_own_keys():
    """The run records its config, and reruns and the report read the filters back from it."""
    data = base()
    data["filters"] = [{"type": "score_threshold", "value": 0.2}, {"type": "caption"}]
    dumped = parse_config(data).model_dump(mode="json")["filters"]
    assert dumped[0] == {"type": "score_threshold", "alias": "clip", "value": 0.2}
    assert dumped[1]["min_words"] == 0
    assert parse_config({**base(), "filters": dumped}).model_dump(mode="json")["filters"] == dumped
