"""``edgeseg bench``: accuracy, speed, memory and sizes of every exported format (``make bench``)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from edgeseg.bench.options import SECTIONS, BenchOptions
from edgeseg.bench.report import to_json
from edgeseg.bench.runner import run_benchmark, stderr_log
from firmware_bridge.cliutil import count, positive_int
from firmware_bridge.errors import EdgesegError

SECTION_HELP = "accuracy, latency, throughput, memory, sizes"


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace(",", " ").split())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas: {text!r}") from exc


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``bench`` command."""
    p = sub.add_parser(
        "bench", help="benchmark every exported format: mIoU, per-tile latency and tiled "
                      "throughput against TensorFlow, peak memory, sizes (JSON + markdown + plots)",
        description="Benchmark a trained run's exported models on a dataset (--data and --classes, "
                    "or EDGESEG_DATA and EDGESEG_CLASSES). Prints JSON; writes OUT/bench.json, "
                    "OUT/bench.md and plots. Sections not run keep their earlier results in "
                    "OUT/bench.json.",
    )
    p.add_argument("--run", help="training run directory (TensorFlow baseline, Keras mIoU, and "
                                 "the source of missing exports)")
    p.add_argument("--artifacts", action="append", default=[], metavar="DIR",
                   help="export folder from 'edgeseg export' (repeatable, e.g. one per input "
                        "size); default OUT/artifacts, exported from --run when empty")
    p.add_argument("--out", default="runs/bench", help="output folder (default runs/bench)")
    p.add_argument("--data", help="dataset folder (default $EDGESEG_DATA)")
    p.add_argument("--classes", help="class table CSV (default $EDGESEG_CLASSES)")
    p.add_argument("--val-pattern", help="validation stems (default: the run's)")
    p.add_argument("--sections", type=_names, help=f"only these sections: {SECTION_HELP}")
    p.add_argument("--skip", type=_names, default=(), help=f"leave out these sections: {SECTION_HELP}")
    p.add_argument("--formats", type=_names, help="only these export formats, e.g. tflite-int8,onnx")
    p.add_argument("--resolutions", type=_ints, default=(256, 512),
                   help="tile sizes for per-tile latency (default 256,512)")
    p.add_argument("--threads", type=positive_int, default=2, help="CPU threads of every runtime (default 2)")
    p.add_argument("--batch", type=positive_int, default=1, help="tiles per call in the throughput runs")
    p.add_argument("--warmup", type=count, default=5, help="untimed calls before timing (default 5)")
    p.add_argument("--tile-runs", type=positive_int, default=50, help="timed single-tile calls (default 50)")
    p.add_argument("--raster-size", type=positive_int, default=8192,
                   help="edge of the generated raster for throughput (default 8192)")
    p.add_argument("--throughput-tile", type=positive_int,
                   help="tile size of the throughput runs (default: the artifacts' input size)")
    p.add_argument("--sizes", type=_ints, default=(2048, 8192, 16384),
                   help="scene edges for the peak-memory runs (default 2048,8192,16384)")
    p.add_argument("--memory-format", help="format for the memory runs (default tflite-qat-int8, "
                                           "else tflite-int8)")
    p.add_argument("--block", type=positive_int, default=1024, help="GeoTIFF streaming block edge")
    p.add_argument("--no-tf", action="store_true", help="no TensorFlow baseline")
    p.add_argument("--no-export", action="store_true",
                   help="never export; sizes without artifacts are reported as not measured")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run_bench)


def options_from_args(args: argparse.Namespace):
    """Build :class:`edgeseg.bench.BenchOptions` from parsed arguments.

    Raises:
        EdgesegError: For unknown section names or non-positive settings.
    """
    chosen = args.sections or SECTIONS
    unknown = [s for s in (*chosen, *args.skip) if s not in SECTIONS]
    if unknown:
        raise EdgesegError(f"unknown section {', '.join(unknown)}; valid: {', '.join(SECTIONS)}")
    return BenchOptions(
        out=Path(args.out), run=args.run, artifacts=args.artifacts, data=args.data,
        classes=args.classes, val_pattern=args.val_pattern,
        sections=tuple(s for s in SECTIONS if s in chosen and s not in args.skip),
        formats=args.formats or None, resolutions=args.resolutions, threads=args.threads,
        batch=args.batch, warmup=args.warmup, tile_runs=args.tile_runs,
        raster_size=args.raster_size, throughput_tile=args.throughput_tile,
        memory_sizes=args.sizes, memory_format=args.memory_format, block=args.block,
        tensorflow=not args.no_tf, export_missing=not args.no_export, verbose=not args.quiet,
    )


def run_bench(args: argparse.Namespace) -> int:
    """Run the benchmark and print the report as JSON."""
    opts = options_from_args(args)
    command = shlex.join(["edgeseg", *args.argv])  # args.argv: set by run_main, as given
    report = run_benchmark(opts, command, stderr_log if opts.verbose else (lambda line: None))
    print(to_json(report), end="")
    return 0
