"""open_clip architecture configs read from their JSON files, without importing open_clip.

Importing open_clip (torch, torchvision, timm) costs the driver seconds of CPU
before any work starts; checking a model name and reading its embedding width
only needs the JSON files open_clip itself scans. The rule is open_clip's: a
`*.json` in its `model_configs` folder or in Winnow's own `configs` folder that
has `embed_dim`, `vision_cfg` and `text_cfg`. A name not found here is looked up
in open_clip itself, so a layout change there costs time, never a wrong answer.
"""

from __future__ import annotations

import importlib.util
import json
from functools import cache
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).parent / "configs"
REQUIRED = ("embed_dim", "vision_cfg", "text_cfg")


def open_clip_folders() -> list[Path]:
    """Where the installed open_clip package lies, found without importing it."""
    spec = importlib.util.find_spec("open_clip")
    return [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []


def _config_dirs() -> list[Path]:
    return [*(folder / "model_configs" for folder in open_clip_folders()), CONFIG_DIR]


@cache
def known_architectures() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for folder in _config_dirs():
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            config = json.loads(path.read_text())
            if all(key in config for key in REQUIRED):
                found[path.stem] = config
    return found


def architecture(name: str) -> dict[str, Any] | None:
    """The architecture config of a plain model name, or None where only open_clip can tell."""
    return known_architectures().get(name)
