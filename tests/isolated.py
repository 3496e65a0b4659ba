"""A test's script in a fresh Python process, from the repository root: peak memory
measured there (`ru_maxrss`) is that script's own, not the test session's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def run_script(script: str, *args: str) -> dict[str, Any]:
    """The JSON object the script prints last."""
    out = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[1],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])
