"""No import in `pipeline/` points back up the layers that docs/architecture.md names."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
PIPELINE = ROOT / "pipeline"


def layers() -> dict[str, int]:
    """Each top-level part of `pipeline/` (a sub-package or a module) by its layer."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(r"<!-- layers -->\s*```\n(.*?)```", text, re.S)
    assert block, "docs/architecture.md lists no layers"
    found = {}
    for line in block.group(1).strip().splitlines():
        rank, *parts = line.split()
        found.update(dict.fromkeys(parts, int(rank)))
    return found


def part_of(module: str) -> str | None:
    """`pipeline.io.reader` -> `io`; None for what is not in `pipeline`."""
    names = module.split(".")
    return names[1] if names[0] == "pipeline" and len(names) > 1 else None


def imports(path: Path) -> list[tuple[int, str]]:
    """Every module `path` imports from `pipeline`, with its line, nested imports included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return found


def test_every_part_of_pipeline_has_a_layer():
    ranks = layers()
    parts = {p.stem if p.is_file() else p.name for p in PIPELINE.iterdir()}
    parts -= {"__init__", "__pycache__"}
    missing = sorted(p for p in parts if p not in ranks and not p.startswith("."))
    assert not missing, f"add {missing} to the layers in docs/architecture.md"


def test_no_import_points_back_up_the_layers():
    ranks = layers()
    arrows = []
    for path in sorted(PIPELINE.rglob("*.py")):
        source = path.relative_to(PIPELINE).parts
        here = source[0].removesuffix(".py")
        if here == "__init__":
            continue
        for line, module in imports(path):
            there = part_of(module)
            if there in ranks and ranks[there] > ranks[here]:
                arrows.append(f"pipeline/{'/'.join(source)}:{line} imports {module}")
    assert not arrows, "imports back up the layers:\n" + "\n".join(arrows)


def test_the_check_sees_an_arrow_back_up(tmp_path):
    """The reader of imports finds nested ones too, so the check above can fail."""
    module = tmp_path / "probe.py"
    module.write_text("def f():\n    from pipeline.report.html import write_report\n")
    assert (2, "pipeline.report.html") in imports(module)
