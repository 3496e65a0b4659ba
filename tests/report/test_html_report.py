"""`winnow report`: a self-contained page, rendered in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pipeline.report.html import write_report

pytestmark = pytest.mark.slow


def test_report_page_has_its_plots_and_examples_and_renders(demo_run, tmp_path):
    url = write_report(str(demo_run))
    page = (demo_run / "report" / "index.html").read_text()
    assert url.endswith("report/index.html")
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', page)
    assert {"histogram", "retention clip", "status", "caption length"} <= set(images)
    assert {"clip bottom", "clip top"} <= set(images)
    assert any(name.startswith("clip around") for name in images)
    # A histogram per head and concept column, and the examples at either end of it.
    for column in ("aesthetic", "red"):
        assert {f"{column} histogram", f"{column} bottom", f"{column} top"} <= set(images)
    assert "<h2>Heads and concepts</h2>" in page
    assert "winnow-tiny" in page and "rows/s" in page
    assert not re.search(r'(src|href)="(https?:)?//', page)  # self-contained: nothing fetched

    chromium = shutil.which("chromium")
    assert chromium, "headless Chromium is needed: apt-get install chromium (make test does it)"
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1300,2400",
            f"--screenshot={shot}",
            (demo_run / "report" / "index.html").as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    pixels = np.asarray(Image.open(shot).convert("L"), np.float32)
    assert pixels.std() > 20  # plots and photos, not a blank page
    assert (pixels < 128).mean() > 0.01


def test_report_command_refuses_a_folder_that_is_not_a_run(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "report", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "_summary.json not found" in result.stderr


@pytest.mark.parametrize(
    "command",
    [["report"], ["export", "--output", "x"], ["export", "--format", "lance", "--output", "x"]],
)
def test_a_run_whose_every_shard_failed_has_nothing_to_report_or_export(tmp_path, command):
    summary = {"shards": [], "models": [{"alias": "clip"}], "failed_shards": [{"shard": "a"}]}
    (tmp_path / "_summary.json").write_text(json.dumps(summary))
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", command[0], str(tmp_path), *command[1:]],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "has no scored shards to" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x").exists()
