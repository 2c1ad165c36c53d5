"""``edgeseg-run bench MODEL``: load time, latency, tiled throughput and peak memory."""

from __future__ import annotations

import argparse

from firmware_bridge.cliutil import count, positive_int
from firmware_bridge.commands.modelargs import add_model_args
from firmware_bridge.io.synthetic_raster import synthetic_block, write_synthetic_raster_in_child


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


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (``resource``; no psutil)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _throughput(seg, size: int, block: int) -> dict:
    import tempfile
    import time
    from pathlib import Path

    import numpy as np

    try:
        import rasterio  # noqa: F401
    except ImportError:
        image = np.stack(synthetic_block(0, 0, size, size, seg.channels, np.uint8), axis=-1)
        t0 = time.perf_counter()
        seg.predict_tiled(image)
        return {"mode": "in-memory (rasterio not installed)",
                "seconds": time.perf_counter() - t0}
    from firmware_bridge.io.raster import predict_geotiff

    with tempfile.TemporaryDirectory(prefix="edgeseg-bench-") as tmp:
        src = Path(tmp) / "scene.tif"
        # generated in a child, so that this process's peak memory is the prediction's alone
        write_synthetic_raster_in_child(src, size, seg.channels)
        rss_before = peak_rss_mb()
        t0 = time.perf_counter()
        predict_geotiff(seg, src, Path(tmp) / "mask.tif", block=block)
        seconds = time.perf_counter() - t0
    return {"mode": "streamed GeoTIFF", "seconds": seconds, "peak_rss_before_mb": round(rss_before, 1)}


def run_bench(args: argparse.Namespace) -> int:
    """Run the benchmark and print (and optionally save) the numbers."""
    import json
    import platform
    import time

    import numpy as np

    from firmware_bridge.commands.modelargs import options_from_args
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
    load_s = time.perf_counter() - t0
    th, tw = seg.tile
    tile = np.stack(synthetic_block(0, 0, th, tw, seg.channels, np.uint8), axis=-1)[None]
    t0 = time.perf_counter()
    seg.scores(tile)
    first_s = time.perf_counter() - t0
    for _ in range(5):  # untimed: thread pools and caches settle
        seg.scores(tile)
    lat = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        seg.scores(tile)
        lat.append((time.perf_counter() - t0) * 1e3)
    prepared = seg.preprocess(tile)
    runtime_ms = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        seg.backend.run(prepared)
        runtime_ms.append((time.perf_counter() - t0) * 1e3)
    tp = _throughput(seg, args.size, args.block)
    mpix = args.size * args.size / 1e6
    report = {
        "model": str(args.model), "machine": platform.machine(), "python": platform.python_version(),
        **seg.backend.describe(), "threads": args.threads, "tile": [th, tw],
        "overlap": seg.overlap, "batch": seg.options.batch,
        "load_ms": round(load_s * 1e3, 2), "first_inference_ms": round(first_s * 1e3, 2),
        "tile_latency_ms": {"p50": round(float(np.percentile(lat, 50)), 3),
                            "p90": round(float(np.percentile(lat, 90)), 3), "runs": args.runs},
        "raster": {"size": [args.size, args.size], "megapixels": round(mpix, 6), **tp,
                   "mpix_per_s": round(mpix / tp["seconds"], 3)},
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    report["raster"]["seconds"] = round(tp["seconds"], 3)
    stride_px = (th - seg.overlap) * (tw - seg.overlap)  # new pixels per tile in a large scene
    report["runtime_latency_ms"] = {"p50": round(float(np.percentile(runtime_ms, 50)), 3),
                                    "p90": round(float(np.percentile(runtime_ms, 90)), 3)}
    model_rate = stride_px / (report["tile_latency_ms"]["p50"] / 1e3) / 1e6
    runtime_rate = stride_px / (report["runtime_latency_ms"]["p50"] / 1e3) / 1e6
    report["model_rate_mpix_per_s"] = round(model_rate, 3)
    report["runtime_rate_mpix_per_s"] = round(runtime_rate, 3)
    report["streamed_vs_model"] = round(report["raster"]["mpix_per_s"] / model_rate, 3)
    report["streamed_vs_runtime"] = round(report["raster"]["mpix_per_s"] / runtime_rate, 3)
    if seg.backend.name == "litert" and not args.delegate:
        from firmware_bridge.runtime.backend_litert import xnnpack_effect
        from firmware_bridge.runtime.compute import matmul_rate, tflite_macs

        report["xnnpack"] = xnnpack_effect(seg.backend.path, args.threads)
        macs = tflite_macs(seg.backend.path)
        floor = matmul_rate()
        achieved = macs / (report["runtime_latency_ms"]["p50"] / 1e3)
        report["compute"] = {"gmac_per_tile": round(macs / 1e9, 3),
                             "gmac_per_mpix": round(macs / stride_px * 1e6 / 1e9, 2),
                             "runtime_gmac_per_s": round(achieved / 1e9, 1),
                             "numpy_fp32_matmul_gmac_per_s": round(floor / 1e9, 1),
                             "runtime_vs_matmul": round(achieved / floor, 2)}
    print(f"{seg.backend.name} {report['input']['dtype']} tile {th}x{tw}: load "
          f"{report['load_ms']} ms, first {report['first_inference_ms']} ms, per tile p50 "
          f"{report['tile_latency_ms']['p50']} ms p90 {report['tile_latency_ms']['p90']} ms")
    print(f"{args.size}x{args.size} raster ({tp['mode']}): {report['raster']['seconds']} s, "
          f"{report['raster']['mpix_per_s']} MPix/s, peak RSS {report['peak_rss_mb']} MiB")
    print(f"new pixels per second ({th - seg.overlap} px stride): a tile alone, normalised and "
          f"read back (p50) {report['model_rate_mpix_per_s']} MPix/s, the runtime alone "
          f"({report['runtime_latency_ms']['p50']} ms) {report['runtime_rate_mpix_per_s']} MPix/s; "
          f"streamed: {report['streamed_vs_model']:.2f} and {report['streamed_vs_runtime']:.2f} "
          "of those")
    if "compute" in report:
        c = report["compute"]
        print(f"the model: {c['gmac_per_tile']} GMAC per tile, {c['gmac_per_mpix']} GMAC per "
              f"megapixel of new pixels; the runtime alone does {c['runtime_gmac_per_s']} GMAC/s, "
              f"{c['runtime_vs_matmul']}x this machine's float32 matrix product "
              f"({c['numpy_fp32_matmul_gmac_per_s']} GMAC/s, numpy BLAS)")
    if "xnnpack" in report:
        x = report["xnnpack"]
        print(f"XNNPACK: {x['with_ms']} ms per inference with it, {x['without_ms']} ms without "
              f"({x['speedup']}x)")
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
    print(f"{args.model}: {seg.backend.name}, tile {seg.tile[0]}, batch {seg.options.batch}, "
          f"threads {args.threads}; generated H.264 videos, frames predicted whole with tiling")
    print("| video | frames | seconds | frames/s | ms per frame |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['width']}x{r['height']} | {r['frames']} | {r['seconds']} | {r['fps']} | "
              f"{r['ms_per_frame']} |")
    if args.json:
        atomic_write_bytes(args.json, (json.dumps({"model": str(args.model), "video": rows},
                                                  indent=2) + "\n").encode())
    return 0
