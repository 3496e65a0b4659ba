"""`winnow report OUT`: one self-contained HTML page (PNG plots inline) about a run."""

from __future__ import annotations

import base64
import html
import json
from typing import Any

from matplotlib.figure import Figure

from pipeline.io.results import Run
from pipeline.report import plots, views

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Winnow run report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; }}
h1 {{ margin-bottom: 0.2rem; }} h2 {{ border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }}
table {{ border-collapse: collapse; margin: 0.5rem 0 1rem; }}
td, th {{ border: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: left; font-size: 0.9rem; }}
figure {{ display: inline-block; margin: 0.5rem; vertical-align: top; }}
img {{ max-width: 100%; }} .failed {{ color: #b00; }}
pre {{ background: #f6f6f6; padding: 0.6rem; }}
</style></head><body>
<h1>Winnow run report</h1><p>{output}</p>
<h2>Run</h2>{run_table}{failures}
<h2>Models</h2>{models_table}
<h2>Counts</h2>{counts}
<h2>Score distribution</h2>{distributions}
<h2>Examples</h2>{examples}
{added}
<h2>Scores against captions and images</h2>{relations}
<h2>Config</h2><details><summary>config as run</summary><pre>{config}</pre></details>
</body></html>
"""


def _figures(figures: dict[str, Figure]) -> str:
    parts = []
    for title, figure in figures.items():
        data = base64.b64encode(plots.png(figure)).decode()
        parts.append(
            f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(title)}</figcaption></figure>"
        )
    return "\n".join(parts) or "<p>nothing to show</p>"


def _table(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
    )
    return f"<table>{cells}</table>"


def _added(run: Run, table: Any) -> str:
    """The heads' and concepts' section, where the run has any."""
    figures = views.added_columns(run, table)
    if not figures:
        return ""
    return f"<h2>Heads and concepts</h2>{_figures(figures)}"


def render(run: Run) -> str:
    summary, this_run = run.summary, run.summary["this_run"]
    filters = summary.get("filters", {})
    rows = [
        ("rows in output", f"{summary['rows']:,}"),
        ("shards", len(summary["shards"])),
        ("kept by filters", f"{filters.get('kept', 0):,}"),
        ("rejected by filters", f"{filters.get('rejected', 0):,}"),
        ("last run", f"{this_run['shards_new']} new, {this_run['shards_redone']} redone, "
                     f"{this_run['shards_skipped']} skipped, {this_run['shards_failed']} failed"),
        ("throughput", f"{this_run['rows_per_second'] or 0:,.0f} rows/s on {this_run['actors']}"),
        ("finished", summary["finished_at"]),
    ]  # fmt: skip
    failures = "".join(
        f'<p class="failed">failed shard {html.escape(f["shard"])}: {html.escape(f["error"])}</p>'
        for f in summary["failed_shards"]
    )
    models = _table(
        [
            (m["alias"], f"{m['name']} / {m.get('pretrained')} / {m.get('precision')}")
            for m in summary["models"]
        ]
    )
    table = run.scores()
    examples: dict[str, Figure] = {}
    for alias in run.aliases:
        examples.update(views.examples(run, table, alias))
    return PAGE.format(
        output=html.escape(run.layout.url()),
        run_table=_table(rows),
        failures=failures,
        models_table=models,
        counts=_figures(views.counts(run)),
        distributions=_figures(views.distributions(run, table)),
        examples=_figures(examples),
        added=_added(run, table),
        relations=_figures(views.relations(run)),
        config=html.escape(json.dumps(summary["config"], indent=2)),
    )


def write_report(
    output: str,
    storage_options: dict[str, Any] | None = None,
    *,
    input_storage_options: dict[str, Any] | None = None,
) -> str:
    run = Run.open(output, storage_options, input_storage_options=input_storage_options)
    if not run.shards:
        failed = len(run.summary.get("failed_shards", []))
        raise ValueError(f"{run.layout.url()} has no scored shards to report on ({failed} failed)")
    page = render(run)
    path = run.layout.path("report", "index.html")
    run.layout.fs.makedirs(run.layout.path("report"), exist_ok=True)
    temporary = run.layout.temporary(path)
    with run.layout.fs.open(temporary, "w") as handle:
        handle.write(page)
    run.layout.commit(temporary, path)
    return run.layout.url("report", "index.html")
