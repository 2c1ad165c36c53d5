"""The device benchmark of one model: load time, per-tile latency, tiled throughput, memory.

:func:`bench_model` is the engine behind ``edgeseg-run bench MODEL``: it measures a loaded
:class:`~firmware_bridge.runtime.segmenter.Segmenter` on generated tiles and a generated
raster streamed through the tiled path, and relates the streamed rate of new pixels to the
model's own rate (a tile alone) and the runtime's (the backend call alone). The streamed run
is timed per stage (:class:`~firmware_bridge.runtime.stages.StageClock`): read, normalise,
model, scores, blend, argmax and write per tile, and the calling thread's idle time.
:func:`int8_section` says whether int8 beats fp32 on this CPU (:mod:`firmware_bridge.runtime.cpu`).
"""

from __future__ import annotations

import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from firmware_bridge.io.synthetic_raster import synthetic_block, write_synthetic_raster_in_child
from firmware_bridge.runtime.stages import StageClock
from firmware_bridge.runtime.variants import measure_ms


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (``resource``; no psutil)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _throughput(seg, size: int, block: int, bands: list[int] | None = None) -> dict:
    """Time one tiled prediction of a generated ``size`` raster, with the per-stage split.

    With ``bands`` the raster has as many bands as the highest one, and those are read.
    """
    clock = seg.clock = StageClock()
    count = max([seg.channels, *(bands or [])])
    try:
        try:
            import rasterio  # noqa: F401
        except ImportError:
            image = np.stack(synthetic_block(0, 0, size, size, count, np.uint8), axis=-1)
            if bands:
                image = np.ascontiguousarray(image[..., [b - 1 for b in bands]])
            t0 = time.perf_counter()
            seg.predict_tiled(image)
            seconds = time.perf_counter() - t0
            return {"mode": "in-memory (rasterio not installed)", "seconds": seconds,
                    **_stages(clock, seconds, seg.options.pipeline)}
        from firmware_bridge.io.raster import predict_geotiff

        with tempfile.TemporaryDirectory(prefix="edgeseg-bench-") as tmp:
            src = Path(tmp) / "scene.tif"
            # generated in a child, so that this process's peak memory is the prediction's alone
            write_synthetic_raster_in_child(src, size, count)
            rss_before = peak_rss_mb()
            t0 = time.perf_counter()
            predict_geotiff(seg, src, Path(tmp) / "mask.tif", bands, block=block)
            seconds = time.perf_counter() - t0
        return {"mode": "streamed GeoTIFF", "seconds": seconds,
                "peak_rss_before_mb": round(rss_before, 1),
                **_stages(clock, seconds, seg.options.pipeline)}
    finally:
        seg.clock = None


def _stages(clock: StageClock, seconds: float, pipelined: bool) -> dict:
    """The clock's per-tile split (ms) and the tiles it counted."""
    split = clock.per_tile_ms(seconds, pipelined)
    return {"tiles": clock.tiles, "stage_ms_per_tile": {k: round(v, 3) for k, v in split.items()}}


def bench_model(seg, load_s: float, runs: int = 30, size: int = 2048, block: int = 1024,
                threads: int | None = None, delegated: bool = False,
                bands: list[int] | None = None) -> dict:
    """Measure a loaded model.

    Args:
        seg: The Segmenter.
        load_s: Seconds it took to load.
        runs: Single-tile runs for the latencies.
        size: Edge of the generated square raster for the throughput.
        block: GeoTIFF streaming block edge.
        threads: CPU threads it was loaded with (reported).
        delegated: Whether a delegate runs it (no XNNPACK comparison then).
        bands: 1-based bands of the generated raster to feed the model, as ``predict
            --bands`` (``None``: the raster has the model's bands).

    Returns:
        The report (JSON-ready): latencies, throughput, rates of new pixels and their ratios,
        peak memory, and for LiteRT the XNNPACK effect and the compute achieved.
    """
    th, tw = seg.tile
    tile = np.stack(synthetic_block(0, 0, th, tw, seg.channels, np.uint8), axis=-1)[None]
    t0 = time.perf_counter()
    seg.scores(tile)
    first_s = time.perf_counter() - t0
    for _ in range(5):  # untimed: thread pools and caches settle
        seg.scores(tile)
    lat = []
    for _ in range(runs):
        t0 = time.perf_counter()
        seg.scores(tile)
        lat.append((time.perf_counter() - t0) * 1e3)
    prepared = seg.preprocess(tile)
    runtime_ms = []
    for _ in range(runs):
        t0 = time.perf_counter()
        seg.backend.run(prepared)
        runtime_ms.append((time.perf_counter() - t0) * 1e3)
    tp = _throughput(seg, size, block, bands)
    mpix = size * size / 1e6
    report = {
        "model": str(seg.backend.path), "machine": platform.machine(),
        "python": platform.python_version(),
        **seg.backend.describe(), "threads": threads, "tile": [th, tw],
        "overlap": seg.overlap, "batch": seg.options.batch,
        "load_ms": round(load_s * 1e3, 2), "first_inference_ms": round(first_s * 1e3, 2),
        "tile_latency_ms": {"p50": round(float(np.percentile(lat, 50)), 3),
                            "p90": round(float(np.percentile(lat, 90)), 3), "runs": runs},
        "raster": {"size": [size, size], "megapixels": round(mpix, 6), **tp,
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
    if seg.backend.name == "litert" and not delegated:
        from firmware_bridge.runtime.backend_litert import xnnpack_effect
        from firmware_bridge.runtime.compute import matmul_rate, tflite_macs

        report["xnnpack"] = xnnpack_effect(seg.backend.path, threads)
        macs = tflite_macs(seg.backend.path)
        floor = matmul_rate()
        achieved = macs / (report["runtime_latency_ms"]["p50"] / 1e3)
        report["compute"] = {"gmac_per_tile": round(macs / 1e9, 3),
                             "gmac_per_mpix": round(macs / stride_px * 1e6 / 1e9, 2),
                             "runtime_gmac_per_s": round(achieved / 1e9, 1),
                             "numpy_fp32_matmul_gmac_per_s": round(floor / 1e9, 1),
                             "runtime_vs_matmul": round(achieved / floor, 2)}
    return report


def int8_section(path: str | Path, seg, open_model, rounds: int = 10, isa=None) -> dict | None:
    """Whether int8 beats fp32 on this CPU, for an int8 model or one with an int8 twin.

    For an int8 model the fp32 artifact of its export beside it is timed against it (the
    two taking turns, :func:`~firmware_bridge.runtime.variants.measure_ms`); for an fp32 model,
    the int8 artifact beside it. Without a twin, the line gives what the CPU's flags lead to
    expect (:func:`~firmware_bridge.runtime.cpu.int8_line`).

    Args:
        path: The benchmarked model file.
        seg: It, opened.
        open_model: Opens the twin with the same options (``path -> Segmenter``).
        rounds: Timed rounds of each.
        isa: The CPU (``None``: this one's, :func:`~firmware_bridge.runtime.cpu.cpu_isa`).

    Returns:
        ``{"line", "isa", "int8_flags", "int8_model", "fp32_model", "int8_ms", "fp32_ms"}``
        (models and times ``None`` where not measured), or ``None`` for a float model
        without an int8 artifact beside it.
    """
    from firmware_bridge.errors import EdgesegError
    from firmware_bridge.runtime.cpu import cpu_isa, int8_line
    from firmware_bridge.runtime.variants import check_same_model, name_precision, precision_of, siblings

    isa = isa or cpu_isa()
    path = Path(path)
    mine = precision_of(path, seg)
    want = "fp32" if mine == "int8" else "int8" if mine == "fp32" else None
    if want is None:
        return None
    twins = [p for p in siblings(path) if name_precision(p)[1] == want]
    if not twins and mine == "fp32":
        return None
    out = {"isa": isa.describe(), "int8_flags": list(isa.int8_flags), "int8_model": None,
           "fp32_model": None, "int8_ms": None, "fp32_ms": None}
    note = None
    if twins:
        try:
            other = open_model(twins[0])
            check_same_model([path, twins[0]], [seg, other])
            ms = measure_ms([seg, other], rounds=rounds)
        except EdgesegError as exc:
            note = f"{twins[0].name} does not compare ({exc})"
        else:
            pair = {mine: (path.name, ms[0]), want: (twins[0].name, ms[1])}
            out.update(int8_model=pair["int8"][0], fp32_model=pair["fp32"][0],
                       int8_ms=round(pair["int8"][1], 3), fp32_ms=round(pair["fp32"][1], 3))
    if out["int8_ms"] is not None:
        out["line"] = int8_line(isa, out["int8_ms"], out["fp32_ms"], out["int8_model"],
                                out["fp32_model"])
    else:
        out["line"] = int8_line(isa, int8_name=path.name if mine == "int8" else twins[0].name,
                                unmeasured=note)
    return out


def stride_label(th: int, tw: int, overlap: int) -> str:
    """``"224 px"`` for a square tile, ``"224x480 px"`` (rows x columns) for another."""
    sy, sx = th - overlap, tw - overlap
    return f"{sy} px" if sy == sx else f"{sy}x{sx} px"


def report_lines(r: dict) -> list[str]:
    """The report of :func:`bench_model` as lines for a person."""
    th, tw = r["tile"]
    size, raster = r["raster"]["size"][0], r["raster"]
    where = ""  # what runs the model, where it is not the backend's CPU default
    if r.get("kernels") == "reference":
        where = " (reference kernels)"
    elif r.get("providers", ["CPUExecutionProvider"]) != ["CPUExecutionProvider"]:
        where = f" ({', '.join(r['providers'])})"
    elif r.get("device", "CPU") != "CPU":
        where = f" ({r['device']})"
    lines = [
        f"{r['backend']}{where} {r['input']['dtype']} tile {th}x{tw}: load {r['load_ms']} ms, first "
        f"{r['first_inference_ms']} ms, per tile p50 {r['tile_latency_ms']['p50']} ms p90 "
        f"{r['tile_latency_ms']['p90']} ms",
        f"{size}x{size} raster ({raster['mode']}): {raster['seconds']} s, {raster['mpix_per_s']} "
        f"MPix/s, peak RSS {r['peak_rss_mb']} MiB",
        f"new pixels per second ({stride_label(th, tw, r['overlap'])} stride): a tile alone, "
        "normalised and read "
        f"back (p50) {r['model_rate_mpix_per_s']} MPix/s, the runtime alone "
        f"({r['runtime_latency_ms']['p50']} ms) {r['runtime_rate_mpix_per_s']} MPix/s; streamed: "
        f"{r['streamed_vs_model']:.2f} and {r['streamed_vs_runtime']:.2f} of those",
    ]
    if "stage_ms_per_tile" in raster:
        st = raster["stage_ms_per_tile"]
        split = ", ".join(f"{k} {v:.2f}" for k, v in st.items() if k != "idle")
        lines.append(f"per tile, ms ({raster['tiles']} tiles; stages overlap on their threads): "
                     f"{split}; idle {st['idle']:.2f} (the calling thread waiting); streamed / "
                     f"own rate {r['streamed_vs_model']:.2f}")
    if "compute" in r:
        c = r["compute"]
        lines.append(f"the model: {c['gmac_per_tile']} GMAC per tile, {c['gmac_per_mpix']} GMAC per "
                     f"megapixel of new pixels; the runtime alone does {c['runtime_gmac_per_s']} "
                     f"GMAC/s, {c['runtime_vs_matmul']}x this machine's float32 matrix product "
                     f"({c['numpy_fp32_matmul_gmac_per_s']} GMAC/s, numpy BLAS)")
    if r.get("int8"):
        lines.append(r["int8"]["line"])
    if "xnnpack" in r:
        x = r["xnnpack"]
        if x["without_ms"] is None:
            lines.append(f"XNNPACK: {x['with_ms']} ms per inference with it; the model does not run "
                         f"without it ({x['without_error']})")
        else:
            lines.append(f"XNNPACK: {x['with_ms']} ms per inference with it, {x['without_ms']} ms "
                         f"without ({x['speedup']}x)")
    return lines
