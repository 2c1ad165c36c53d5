"""Speed: per-tile latency at each input size, and tiled throughput on a generated raster.

Every artifact runs through :class:`~firmware_bridge.runtime.segmenter.Segmenter`, the code a device
runs, and the Keras model runs through the same Segmenter with its backend swapped for
TensorFlow (:mod:`export.keras_backend`), so pre- and post-processing, tiles and
GeoTIFF streaming are identical and the speed-up (TensorFlow time / artifact time) isolates
the runtime.

* **Latency**: one tile (batch 1) of pixels to class probabilities (``Segmenter.scores``),
  ``warmup`` untimed calls, then ``tile_runs`` timed calls: p50, p90, mean, min. Load time and
  the first call are reported apart.
* **Throughput**: a generated ``raster_size`` square GeoTIFF predicted window by window into a
  mask GeoTIFF (:func:`firmware_bridge.io.raster.predict_geotiff`), reading and writing
  included; megapixels per second.

Exported models are fixed-size (dilated and transposed convolutions refuse
``resize_tensor_input``), so a size is measured only for the artifacts exported at it (or
dynamic-size ones); missing sizes are reported as notes, never filled in.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgeseg.bench.artifacts import ArtifactInfo
from edgeseg.bench.timing import LatencyStats, time_calls, timed
from firmware_bridge.io.raster import predict_geotiff
from firmware_bridge.io.synthetic_raster import synthetic_block
from firmware_bridge.runtime.segmenter import Segmenter, SegmenterOptions

KerasLoader = Callable[[int], object]
"""Square input size -> the run's Keras model rebuilt at that size."""

TF_LABEL = "keras (TensorFlow)"


@dataclass
class LatencyRow:
    """Per-tile latency of one model at one input size.

    Attributes:
        label: Artifact label (format name) or :data:`TF_LABEL`.
        format: Export format (``"keras"`` for TensorFlow).
        backend: ``litert``, ``openvino``, ``onnxruntime`` or ``tensorflow``.
        resolution: Tile edge in pixels.
        precision: ``fp32``, ``int8``...
        load_ms: Opening the model.
        first_ms: The first call (allocation, compilation, tracing).
        latency: Timed calls.
        speedup: TensorFlow's p50 over this p50 (``None`` without a TensorFlow row).
    """

    label: str
    format: str
    backend: str
    resolution: int
    precision: str
    load_ms: float
    first_ms: float
    latency: LatencyStats
    speedup: float | None = None


@dataclass
class ThroughputRow:
    """Tiled prediction of one generated raster by one model.

    Attributes:
        label: Artifact label or :data:`TF_LABEL`.
        format: Export format (``"keras"`` for TensorFlow).
        backend: Runtime.
        tile: Tile edge.
        overlap: Tile overlap in pixels.
        batch: Tiles per call.
        raster: Raster edge in pixels.
        seconds: Wall time of the whole prediction.
        mpix_per_s: Megapixels of the raster per second.
        speedup: TensorFlow's seconds over these (``None`` without a TensorFlow row).
    """

    label: str
    format: str
    backend: str
    tile: int
    overlap: int
    batch: int
    raster: int
    seconds: float
    mpix_per_s: float
    speedup: float | None = None


def rows_to_dicts(rows) -> list[dict]:
    """Dataclass rows as JSON-ready dicts."""
    return [asdict(r) for r in rows]


def bench_tile(resolution: int, channels: int = 3) -> np.ndarray:
    """A deterministic ``(1, R, R, C)`` uint8 tile (the generator of the scenes)."""
    return np.stack(synthetic_block(0, 0, resolution, resolution, channels, np.uint8), -1)[None]


def segmenter_options(threads: int, tile: int | None = None, batch: int = 1):
    """:class:`SegmenterOptions` with the benchmark's threads."""
    return SegmenterOptions(threads=threads, tile=tile, batch=batch)


def open_artifact(artifact: ArtifactInfo, threads: int, tile: int, batch: int = 1):
    """Open an artifact on its runtime; returns ``(segmenter, load seconds)``."""
    opts = segmenter_options(threads, None if artifact.resolution else tile, batch)
    return timed(lambda: Segmenter(artifact.path, options=opts))


def latency_of(seg, label: str, fmt: str, precision: str, load_s: float, runs: int,
               warmup: int) -> LatencyRow:
    """Time ``seg.scores`` on one tile of the segmenter's size (see the module docstring)."""
    tile = bench_tile(seg.tile[0], seg.channels)
    _, first_s = timed(lambda: seg.scores(tile))
    stats = time_calls(lambda: seg.scores(tile), runs, warmup)
    return LatencyRow(label, fmt, seg.backend.name, seg.tile[0], precision,
                      round(load_s * 1e3, 2), round(first_s * 1e3, 2), stats)


def _at(artifacts: list[ArtifactInfo], resolution: int) -> list[ArtifactInfo]:
    return [a for a in artifacts if a.runnable and a.resolution in (resolution, None)]


def template_for(artifacts: list[ArtifactInfo], resolution: int) -> ArtifactInfo | None:
    """An artifact at ``resolution`` whose metadata the TensorFlow baseline borrows (float first)."""
    at = _at(artifacts, resolution)
    floats = [a for a in at if a.precision in ("fp32", "fp16")]
    return (floats or at or [None])[0]


def latency_section(artifacts: list[ArtifactInfo], resolutions: tuple[int, ...], threads: int,
                    runs: int, warmup: int, keras: KerasLoader | None = None,
                    log: Callable[[str], None] = print) -> tuple[list[LatencyRow], list[str]]:
    """Per-tile latency of every runnable artifact at every size it takes, and of TensorFlow.

    Args:
        artifacts: Artifacts found (fixed-size ones run only at their size).
        resolutions: Tile edges to measure.
        threads: CPU threads of every runtime.
        runs: Timed calls per model.
        warmup: Untimed calls first.
        keras: Loader of the Keras model at a size; ``None`` skips TensorFlow.
        log: Progress lines.

    Returns:
        ``(rows, notes)``; notes say which sizes or baselines could not be measured.
    """
    rows: list[LatencyRow] = []
    notes: list[str] = []
    for res in resolutions:
        at = _at(artifacts, res)
        if not at:
            notes.append(f"latency at {res}: no artifact exported at {res}x{res} (exports are "
                         "fixed-size); not measured")
            log(f"[latency] {res}: no artifact at this size, skipped")
            continue
        mine: list[LatencyRow] = []
        for a in at:
            seg, load_s = open_artifact(a, threads, res)
            row = latency_of(seg, a.label, a.format, a.precision, load_s, runs, warmup)
            mine.append(row)
            log(f"[latency] {res} {a.label:<16} {row.backend:<12} p50 {row.latency.p50:8.2f} ms  "
                f"p90 {row.latency.p90:8.2f} ms")
            del seg
        if keras is not None:
            from edgeseg.bench.keras_backend import keras_segmenter_like

            template = template_for(artifacts, res)
            model, load_s = timed(lambda res=res: keras(res))
            seg = keras_segmenter_like(model, template.path, segmenter_options(threads, res))
            tf_row = latency_of(seg, TF_LABEL, "keras", "fp32", load_s, runs, warmup)
            log(f"[latency] {res} {TF_LABEL:<16} {'tensorflow':<12} p50 {tf_row.latency.p50:8.2f} ms  "
                f"p90 {tf_row.latency.p90:8.2f} ms")
            for row in mine:
                row.speedup = round(tf_row.latency.p50 / row.latency.p50, 2)
            tf_row.speedup = 1.0
            mine.append(tf_row)
            del seg, model
        rows += mine
    if keras is None:
        notes.append("no TensorFlow baseline (needs --run, and --no-tf not given): no speed-ups")
    return rows, notes


def throughput_of(seg, scene: Path, raster: int, label: str, fmt: str, block: int) -> ThroughputRow:
    """Predict ``scene`` into a temporary mask GeoTIFF and time it."""
    with tempfile.TemporaryDirectory(prefix="edgeseg-bench-") as tmp:
        _, seconds = timed(lambda: predict_geotiff(seg, scene, Path(tmp) / "mask.tif", block=block))
    return ThroughputRow(label, fmt, seg.backend.name, seg.tile[0], seg.overlap, seg.options.batch,
                         raster, round(seconds, 3), round(raster * raster / 1e6 / seconds, 3))


def throughput_section(artifacts: list[ArtifactInfo], tile: int, scene: Path, raster: int,
                       threads: int, batch: int, block: int, keras: KerasLoader | None = None,
                       log: Callable[[str], None] = print) -> tuple[list[ThroughputRow], list[str]]:
    """Tiled throughput of every runnable artifact at ``tile``, and of TensorFlow.

    Args:
        artifacts: Artifacts found.
        tile: Tile edge; artifacts of another fixed size are left out.
        scene: The generated raster (``raster x raster``).
        raster: Its edge.
        threads: CPU threads.
        batch: Tiles per call.
        block: GeoTIFF streaming block edge.
        keras: Loader of the Keras model at a size; ``None`` skips TensorFlow.
        log: Progress lines.

    Returns:
        ``(rows, notes)``.
    """
    rows: list[ThroughputRow] = []
    at = _at(artifacts, tile)
    if not at:
        return rows, [f"throughput: no artifact at tile {tile}; not measured"]
    for a in at:
        seg, _ = open_artifact(a, threads, tile, batch)
        row = throughput_of(seg, scene, raster, a.label, a.format, block)
        rows.append(row)
        log(f"[throughput] {raster}px tile {tile} {a.label:<16} {row.seconds:8.1f} s  "
            f"{row.mpix_per_s:7.2f} MPix/s")
        del seg
    notes = []
    if keras is not None:
        from edgeseg.bench.keras_backend import keras_segmenter_like

        template = template_for(artifacts, tile)
        seg = keras_segmenter_like(keras(tile), template.path, segmenter_options(threads, tile, batch))
        tf_row = throughput_of(seg, scene, raster, TF_LABEL, "keras", block)
        log(f"[throughput] {raster}px tile {tile} {TF_LABEL:<16} {tf_row.seconds:8.1f} s  "
            f"{tf_row.mpix_per_s:7.2f} MPix/s")
        for row in rows:
            row.speedup = round(tf_row.seconds / row.seconds, 2)
        tf_row.speedup = 1.0
        rows.append(tf_row)
    else:
        notes.append("throughput: no TensorFlow baseline (needs --run): no speed-ups")
    return rows, notes
