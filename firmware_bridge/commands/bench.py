"""``edgeseg-run bench MODEL``: load time, latency, tiled throughput and peak memory."""

from __future__ import annotations

import argparse

from firmware_bridge.cliutil import count, positive_int
from firmware_bridge.commands.modelargs import add_model_args


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``bench`` command."""
    p = sub.add_parser("bench", help="measure load time, per-tile latency, tiled throughput "
                                     "on a generated raster, peak memory")
    p.add_argument("model", help=".tflite, .xml (OpenVINO IR) or .onnx model")
    p.add_argument("--json", help="write the measurements to this JSON file")
    p.add_argument("--runs", type=positive_int, default=30, help="single-tile runs for the latency")
    p.add_argument("--size", type=positive_int, default=2048,
                   help="edge of the generated square raster for the throughput (pixels)")
    p.add_argument("--block", type=positive_int, default=1024, help="GeoTIFF streaming block edge")
    c = p.add_argument_group("past one machine (pip install 'edgeseg[cluster]')")
    c.add_argument("--workers", type=_worker_counts, metavar="N,N,...",
                   help="instead: MPix/s of an archive of generated scenes on a local Dask cluster "
                        "of each worker count, against the single-process path")
    c.add_argument("--scenes", type=positive_int, default=8, help="generated scenes (with --workers)")
    c.add_argument("--scene-size", type=positive_int, default=4096, help="their edge in pixels")
    c.add_argument("--large-size", type=count, default=16384,
                   help="edge of one more, large scene (0: none)")
    p.add_argument("--video", type=_worker_counts, metavar="HEIGHTS",
                   help="instead: frames per second on generated videos of these heights, e.g. "
                        "720,1080 (pip install 'edgeseg[video]')")
    add_model_args(p)
    p.set_defaults(func=run_bench)


def _worker_counts(text: str) -> list[int]:
    try:
        counts = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of worker counts, e.g. 1,2")
    return counts


def run_bench(args: argparse.Namespace) -> int:
    """Run the benchmark (:func:`firmware_bridge.bench.bench_model`); print and save the numbers."""
    import json
    import time

    from firmware_bridge.bench import bench_model, int8_section, report_lines
    from firmware_bridge.commands.modelargs import options_from_args, say_assumed
    from firmware_bridge.errors import EdgesegError
    from firmware_bridge.fsutil import atomic_write_bytes, check_output_file
    from firmware_bridge.runtime.segmenter import Segmenter

    if args.runs < 1 or args.size < 1:
        raise EdgesegError("--runs and --size must be positive")
    if args.json:
        check_output_file(args.json, "--json")  # before the measurements, not after them
    if args.workers:
        return _run_cluster_bench(args)
    if args.video:
        return _run_video_bench(args)
    t0 = time.perf_counter()
    seg = Segmenter(args.model, args.backend, options_from_args(args))
    say_assumed(seg, args)
    report = bench_model(seg, time.perf_counter() - t0, args.runs, args.size, args.block,
                         args.threads, bool(args.delegate), args.bands)
    report["model"] = str(args.model)
    report["int8"] = int8_section(args.model, seg,
                                  lambda p: Segmenter(p, args.backend, options_from_args(args)),
                                  min(args.runs, 10))
    print("\n".join(report_lines(report)))
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(report, indent=2) + "\n").encode())
    return 0


def _run_cluster_bench(args: argparse.Namespace) -> int:
    import json
    import sys

    from firmware_bridge.cluster.bench import cluster_bench, markdown
    from firmware_bridge.commands.modelargs import options_from_args
    from firmware_bridge.fsutil import atomic_write_bytes

    result = cluster_bench(args.model, args.workers, args.backend, options_from_args(args),
                           args.scenes, args.scene_size, args.large_size, args.block,
                           log=lambda line: print(line, file=sys.stderr, flush=True))
    result["model"] = str(args.model)
    print(markdown(result))
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(result, indent=2) + "\n").encode())
    return 0


def _run_video_bench(args: argparse.Namespace) -> int:
    import json

    from firmware_bridge.commands.modelargs import load_segmenter
    from firmware_bridge.fsutil import atomic_write_bytes
    from firmware_bridge.video.bench import video_fps

    seg = load_segmenter(args)
    rows = video_fps(seg, args.video)
    th, tw = seg.tile
    how = "with tiling" if seg.resize == "tile" else f"resized ({seg.resize})"
    print(f"{args.model}: {seg.backend.name}, tile {th if th == tw else f'{th}x{tw}'}, batch "
          f"{seg.options.batch}, threads {args.threads}; generated H.264 videos, frames "
          f"predicted whole {how}")
    print("| video | frames | seconds | frames/s | ms per frame |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['width']}x{r['height']} | {r['frames']} | {r['seconds']} | {r['fps']} | "
              f"{r['ms_per_frame']} |")
    if args.json:
        atomic_write_bytes(args.json, (json.dumps({"model": str(args.model), "video": rows},
                                                  indent=2) + "\n").encode())
    return 0
