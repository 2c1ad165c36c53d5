"""Throughput of the cluster path with 1, 2, ... workers against the single-process path.

One run, one machine: a folder of generated GeoTIFFs is predicted by the single-process
streamed path with the same runtime threads as one worker (the reference for the cluster's
overhead), by the single-process path on every core (for context), then by a ``LocalCluster``
of each worker count, every worker with the same runtime threads (as machines would be). Cluster
start-up is excluded; each worker's peak memory is asked of the worker itself.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from firmware_bridge.errors import require
from firmware_bridge.io.synthetic_raster import write_synthetic_raster_in_child
from firmware_bridge.runtime.segmenter import Segmenter, SegmenterOptions


def _peak_rss_mb() -> float:
    """Peak resident memory of the calling process itself, MiB.

    Linux's ``VmHWM``: a spawned worker does not inherit its parent's peak there, as
    ``getrusage`` would report it.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def generate_scenes(folder: Path, count: int, size: int, large: int, channels: int) -> list[Path]:
    """``count`` scenes of ``size`` pixels and one of ``large`` (0: none), in a child process."""
    sizes = [size] * count + ([large] if large else [])
    paths = []
    for i, edge in enumerate(sizes):
        path = folder / f"scene_{i:02d}_{edge}.tif"
        write_synthetic_raster_in_child(path, edge, channels)
        paths.append(path)
    return paths


def cluster_bench(model: str | Path, workers: Sequence[int], backend: str | None = None,
                  options: SegmenterOptions | None = None, scenes: int = 8, size: int = 4096,
                  large: int = 16384, block: int = 1024,
                  log: Callable[[str], None] = print) -> dict:
    """Measure MPix/s of the single-process path and of the cluster with each worker count.

    Args:
        model: The model file.
        workers: Worker counts to try, e.g. ``(1, 2)``.
        backend: Backend name (default: from the suffix).
        options: Runtime options; ``threads`` (default 1) is each worker's and the reference
            single process's.
        scenes: Generated scenes of ``size`` pixels.
        size: Their edge.
        large: Edge of one more, large scene (0: none).
        block: Output block edge (the unit of work).
        log: Where progress lines go.

    Returns:
        ``{"scenes", "megapixels", "cores", "single": [...], "cluster": [...]}`` with seconds,
        MPix/s, the ratio to the single process with the same threads, speed-up against one
        worker, parallel efficiency and peak memory per worker.
    """
    distributed = require("distributed", "cluster")
    from firmware_bridge.cluster.archive import predict_many
    from firmware_bridge.io.raster import predict_geotiff

    cores = os.cpu_count() or 1
    base = options or SegmenterOptions()
    channels = Segmenter(model, backend, base).channels
    with tempfile.TemporaryDirectory(prefix="edgeseg-cluster-bench-") as tmp:
        folder = Path(tmp) / "scenes"
        folder.mkdir()
        log(f"generating {scenes} scenes of {size} px" + (f" and one of {large} px" if large else ""))
        paths = generate_scenes(folder, scenes, size, large, channels)
        mpix = sum(_pixels(p) for p in paths) / 1e6
        threads = base.threads or 1
        result = {"scenes": len(paths), "megapixels": round(mpix, 1), "cores": cores,
                  "block": block, "single": [], "cluster": []}
        for label, n_threads in (("single process", threads), ("single process, every core", cores)):
            if result["single"] and n_threads == threads:
                continue
            seg = Segmenter(model, backend, replace(base, threads=n_threads))
            out = Path(tmp) / f"single_{n_threads}"
            out.mkdir()
            start = time.perf_counter()
            for path in paths:
                predict_geotiff(seg, path, out / f"{path.stem}_mask.tif", block=block)
            seconds = time.perf_counter() - start
            result["single"].append({"label": label, "threads": n_threads, "seconds": round(seconds, 2),
                                     "mpix_per_s": round(mpix / seconds, 3)})
            log(f"{label} ({n_threads} thread(s)): {seconds:.1f} s, {mpix / seconds:.2f} MPix/s")
        result["single_peak_rss_mb"] = round(_peak_rss_mb(), 1)
        reference = result["single"][0]["mpix_per_s"]
        one = None
        for n in workers:
            with distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                          dashboard_address=None, silence_logs=40) as cluster, \
                    distributed.Client(cluster) as client:
                report = predict_many(model, [folder], Path(tmp) / f"cluster_{n}", client,
                                      backend=backend, options=replace(base, threads=threads),
                                      block=block, log=log)
                rss = sorted(client.run(_peak_rss_mb).values())
            rate = report.mpix_per_s
            one = one or (rate if n == 1 else None)
            row = {"workers": n, "threads_per_worker": threads, "seconds": round(report.seconds, 2),
                   "mpix_per_s": round(rate, 3),
                   "vs_single": round(rate / reference, 3),
                   "speedup_vs_1": round(rate / one, 3) if one else None,
                   "efficiency": round(rate / (n * one), 3) if one else None,
                   "peak_rss_mb_per_worker": [round(r, 1) for r in rss]}
            result["cluster"].append(row)
            log(f"{n} worker(s) x {threads} thread(s): {report.seconds:.1f} s, {rate:.2f} MPix/s, "
                f"{row['vs_single']:.2f}x the single process, peak RSS "
                f"{', '.join(f'{r:.0f}' for r in rss)} MiB")
    return result


def _pixels(path: Path) -> int:
    import rasterio

    with rasterio.open(path) as ds:
        return ds.height * ds.width


def markdown(result: dict) -> str:
    """The benchmark as a markdown table."""
    lines = ["| path | processes x runtime threads | seconds | MPix/s | vs single process | "
             "speed-up vs 1 worker | parallel efficiency | peak RSS per worker (MiB) |",
             "|---|---|---|---|---|---|---|---|"]
    reference = result["single"][0]["mpix_per_s"]
    for row in result["single"]:
        lines.append(f"| {row['label']} | 1 x {row['threads']} | {row['seconds']} | "
                     f"{row['mpix_per_s']} | {row['mpix_per_s'] / reference:.2f} | | | |")
    for row in result["cluster"]:
        lines.append(f"| Dask LocalCluster | {row['workers']} x {row['threads_per_worker']} | "
                     f"{row['seconds']} | {row['mpix_per_s']} | {row['vs_single']:.2f} | "
                     f"{row['speedup_vs_1'] or ''} | {row['efficiency'] or ''} | "
                     f"{', '.join(str(r) for r in row['peak_rss_mb_per_worker'])} |")
    return "\n".join(lines)
