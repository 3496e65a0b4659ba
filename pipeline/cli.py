"""The `winnow` command. Heavy imports (Ray, torch, open_clip) wait until a run needs them."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import get_args

from pydantic import BaseModel

from pipeline.config import ConfigError, ImagesConfig, ModelConfig, load_config
from pipeline.interrupt import interrupts_kept

EXIT_CONFIG = 2
EXIT_FAILED_SHARDS = 1
EXIT_INTERRUPTED = 130  # main's return; the command itself then ends by SIGINT (see entry)


class QuietLibraries(logging.Filter):
    """open_clip reports every step of every model load at INFO, on the root logger, and
    faiss which of its builds it loads: lines that bury Winnow's own progress. Their
    warnings still show; -v shows all."""

    def filter(self, record: logging.LogRecord) -> bool:
        quiet = f"{os.sep}open_clip{os.sep}" in record.pathname or record.name.startswith("faiss")
        return record.levelno >= logging.WARNING or not quiet


class _Versions(argparse.Action):
    """`--version`: Winnow's and those of the libraries its results depend on, for a bug
    report; read from the installed packages' metadata, without importing them."""

    def __init__(self, option_strings: list[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        from pipeline.report.summary import versions

        found = versions()
        others = (f"{name} {version}" for name, version in found.items() if name != "winnow")
        print(f"winnow {found['winnow']}\n{', '.join(others)}")
        parser.exit()


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is less than 1")
    return value


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set output.path=/tmp/out --set models.0.precision=fp32",
    )
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return common


def _choices(config: type[BaseModel], field: str) -> list[str]:
    """A config field's allowed values: a flag for it offers exactly what the config takes."""
    return list(get_args(config.model_fields[field].annotation))


def _parser() -> argparse.ArgumentParser:
    from pipeline.io.formats import export_formats

    parser = argparse.ArgumentParser(
        prog="winnow", description="Score and curate image-caption Parquet shards with CLIP."
    )
    parser.add_argument(
        "--version", action=_Versions, help="print Winnow's version and its libraries', and exit"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="score every input shard not yet committed, then apply the filters",
        parents=[_common()],
    )
    run.add_argument("config", help="YAML config file, e.g. configs/example.yaml")
    run.add_argument(
        "--retry-failed",
        action="store_true",
        help="score only the shards the last run reported as failed",
    )
    refilter = commands.add_parser(
        "filter",
        help="re-apply the config's filters to a run's scored output, adding the heads and "
        "concepts it lacks from its stored embeddings; no image is scored again",
        parents=[_common()],
    )
    refilter.add_argument("config", help="the run's YAML config, with the filters to apply")
    fetch = commands.add_parser(
        "download",
        help="fetch a URL list into img2dataset Parquet shards (the config's download: section)",
        parents=[_common()],
    )
    fetch.add_argument("config", help="YAML config with a download: section")
    exporter = commands.add_parser(
        "export", help="write a run's embeddings for retrieval (npy, lance)"
    )
    exporter.add_argument("output", help="the run's output root (output.path)")
    exporter.add_argument(
        "--format",
        choices=export_formats(),
        default="npy",
        dest="fmt",
        help="npy: clip-retrieval's layout; lance: a Lance table; parquet: one file "
        "(default: %(default)s)",
    )
    exporter.add_argument(
        "--output", dest="target", required=True, help="where to write the export"
    )
    exporter.add_argument(
        "--alias", default=None, help="which model's embeddings (default: the first)"
    )
    exporter.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    bench = commands.add_parser(
        "bench",
        help="measure scoring (model-only, decode and end-to-end rates) or, with --stage "
        "filter, the pool stages at scale",
    )
    bench.add_argument(
        "--stage",
        choices=["score", "filter"],
        default="score",
        help="score: the scoring job (default); filter: the policy chain over synthetic "
        "scored runs of --rows rows, and k-means fits for 10M-1B row pools",
    )
    bench.add_argument(
        "--rows",
        type=_at_least_one,
        nargs="+",
        default=[100_000, 1_000_000, 4_000_000],
        help="with --stage filter: the runs' sizes, multiples of 100 (default: %(default)s)",
    )
    bench.add_argument(
        "--model", default="ViT-B-32", help="open_clip architecture (default: %(default)s)"
    )
    bench.add_argument(
        "--pretrained", default=None, help="weights (default: random; speed is the same)"
    )
    bench.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="auto: cuda where a GPU is, else cpu",
    )
    bench.add_argument(
        "--precision",
        choices=_choices(ModelConfig, "precision"),
        default="auto",
        help="auto: bf16 on a GPU, fp32 on the CPU",
    )
    bench.add_argument(
        "--pairs",
        type=_at_least_one,
        default=2048,
        help="web-like image-caption pairs to generate (default: %(default)s)",
    )
    bench.add_argument(
        "--batch-size",
        type=_at_least_one,
        default=256,
        help="rows per model call (models.N.batch_size; default: %(default)s)",
    )
    bench.add_argument(
        "--in-flight",
        type=_at_least_one,
        default=2,
        help="batches per GPU actor (ray.batches_in_flight, default: %(default)s); CPU "
        "actors take one",
    )
    bench.add_argument(
        "--actors",
        type=_at_least_one,
        default=None,
        help="model actors (ray.num_actors; default one per GPU, or sized to the CPUs); "
        "more than the GPUs share them",
    )
    bench.add_argument(
        "--skip-decode",
        action="store_true",
        help="skip the decode-only rates and the tensor vs PIL score comparison, which "
        "depend only on the preprocess (the end-to-end job still decodes)",
    )
    bench.add_argument(
        "--decode",
        choices=_choices(ImagesConfig, "decode"),
        default="auto",
        help="the job's decode path (images.decode; auto: nvJPEG and tensor preprocess on a "
        "GPU, PIL on the CPU)",
    )
    bench.add_argument(
        "--output",
        default="bench",
        help="folder for the data (reused by a rerun) and bench.json (default: %(default)s)",
    )
    bench.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    report = commands.add_parser("report", help="write OUT/report/index.html for a run's output")
    report.add_argument("output", help="the run's output root (output.path), any fsspec URL")
    report.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def _report(args: argparse.Namespace) -> int:
    from pipeline.report.html import write_report

    try:
        print(f"winnow: report -> {write_report(args.output)}")
    except (FileNotFoundError, ValueError) as error:
        print(f"winnow: {error}", file=sys.stderr)
        return EXIT_CONFIG
    return 0


def _download(args: argparse.Namespace) -> int:
    from pipeline.io.download import download, load_download_config

    settings = load_download_config(args.config, overrides=args.overrides)
    counts = download(settings)
    print(
        f"winnow: {counts['rows']:,} URLs in {counts['shards']} shard(s) at {settings.output_path} "
        f"(by img2dataset status: {counts['status_counts']})\n"
        f"Next: winnow run {args.config}   (with input.path: {settings.output_path})"
    )
    return 0


def _export(args: argparse.Namespace) -> int:
    from pipeline.io.export import export

    try:
        done = export(args.output, fmt=args.fmt, target=args.target, alias=args.alias)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"winnow: {error}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"winnow: exported {done['rows']:,} rows ({done['format']}) -> {done['output']}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    if args.stage == "filter":
        return _bench_pool(args.rows, Path(args.output))
    from pipeline.bench.benchmark import BenchSpec, benchmark
    from pipeline.bench.table import table, write_json
    from pipeline.synth.web_pairs import WebPairsSpec

    spec = BenchSpec(
        model=args.model,
        pretrained=args.pretrained,
        device=args.device,
        precision=args.precision,
        data=WebPairsSpec(pairs=args.pairs),
        batch_size=args.batch_size,
        in_flight=args.in_flight,
        actors=args.actors,
        decodes=not args.skip_decode,
        decode=args.decode,
    )
    workdir = Path(args.output)
    result = benchmark(spec, workdir=workdir)
    print(table(result))
    write_json(result, workdir / "bench.json")
    print(f"winnow: bench table as JSON -> {workdir / 'bench.json'}")
    return 0


def _bench_pool(rows: list[int], workdir: Path) -> int:
    from pipeline.bench.pool_scale import pool_scale
    from pipeline.bench.table import pool_table, write_json
    from pipeline.cluster import ray_session
    from pipeline.config import RayConfig

    uneven = [r for r in rows if r < 200 or r % 100]
    if uneven:
        print(f"winnow: --rows {uneven[0]}: give multiples of 100, 200 or more", file=sys.stderr)
        return EXIT_CONFIG
    with ray_session(RayConfig()):
        result = pool_scale(rows, workdir=workdir)
    print(pool_table(result))
    write_json(result, workdir / "bench_filter.json")
    print(f"winnow: bench table as JSON -> {workdir / 'bench_filter.json'}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from pipeline.report.summary import closing_line
    from pipeline.run import run
    from pipeline.scoring.placement import ScoringFailed

    config = load_config(args.config, overrides=args.overrides)
    scored = args.command == "run"
    try:
        result = run(config, score=scored, retry_failed=getattr(args, "retry_failed", False))
    except ScoringFailed as error:
        print(f"winnow: {error}", file=sys.stderr)
        return EXIT_FAILED_SHARDS
    print(closing_line(result.summary, result.output, scored=scored), flush=True)
    if result.report:
        print(f"winnow: report -> {result.report}", flush=True)
    for failure in result.failed:
        print(f"winnow: shard {failure['shard']} failed: {failure['error']}", file=sys.stderr)
    return EXIT_FAILED_SHARDS if result.failed else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not args.verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(QuietLibraries())
    try:
        commands = {"report": _report, "download": _download, "export": _export, "bench": _bench}
        with interrupts_kept():
            return commands.get(args.command, _run)(args)
    except ConfigError as error:
        print(f"winnow: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        print(
            "winnow: interrupted; shards committed so far are kept, and a rerun does the rest",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED


def _interrupt_printed(*_: object) -> None:
    """The excepthook for entry's own KeyboardInterrupt: main printed its one line."""


def entry(argv: list[str] | None = None) -> None:
    """The `winnow` command and the jobs: main's exit status, or, interrupted, the end
    Python gives any program stopped by Ctrl-C. It ends by SIGINT after its clean-up, so
    a shell shows status 130 and a script or loop that ran it stops as well (an exit
    status of 130 would let the loop go on). That end also comes whichever way Python
    was started: a Ctrl-C swallowed inside a compiled module leaves CPython set to end
    `python -m` by SIGINT anyway."""
    code = main(argv)
    if code != EXIT_INTERRUPTED:
        sys.exit(code)
    sys.excepthook = _interrupt_printed
    raise KeyboardInterrupt


if __name__ == "__main__":
    entry()
