"""What a Dask worker runs: the masks of a strip of blocks of one scene.

A unit names the model by path (every worker must be able to read it) and the scene by path;
the worker opens the model once per task thread (once per process with ``--nthreads 1``),
keyed by path, backend and options, and keeps it for the next units: an interpreter is never
called from two threads.

A unit is a strip of whole rows of blocks (:func:`firmware_bridge.io.blocks.strips`), and
every tile of the scene is predicted by exactly one unit: inside a strip as in one process
(a tile on the border of two blocks is shared, sums are handed down between rows of blocks);
a tile that straddles the border of two strips by the strip above, which sends back the
partial sums of the band of rows it reaches below (``overlap`` rows across the width). The
strip below leaves those tiles out and sends back its own tiles' scores over that band
(:class:`~firmware_bridge.io.blocks.Seam`); the client adds the two up. What travels back:
the ``uint8`` masks, and per border a band of scores a few tiles tall.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firmware_bridge.errors import EdgesegError
from firmware_bridge.heap import fix_worker_heap
from firmware_bridge.io.blocks import (
    BandCarry,
    RowShare,
    SceneGrid,
    Seam,
    WindowBuffers,
    open_raster,
    predict_block,
    read_block,
)
from firmware_bridge.runtime import tiling
from firmware_bridge.runtime.pipeline import stream
from firmware_bridge.runtime.segmenter import Band, Segmenter, SegmenterOptions, TileBand
from firmware_bridge.runtime.standardise import BandStats
from firmware_bridge.runtime.tiling import Box


@dataclass(frozen=True)
class ModelSpec:
    """How to open the model on a worker."""

    path: str
    backend: str | None
    options: SegmenterOptions


@dataclass(frozen=True)
class Unit:
    """Blocks of one scene, predicted by one task.

    Attributes:
        scene: Index of the scene in the run (for the writer).
        src: The scene's path, readable by every worker.
        bands: 1-based bands to read (checked by the client).
        regions: The output blocks, in scene coordinates: whole rows of the scene's stream
            regions (:func:`~firmware_bridge.io.blocks.strips`), row-major.
        grid: The scene's tile grid.
        stats: The whole scene's band statistics, for a model standardised per image
            (computed once by the client, so every unit normalises alike).
    """

    scene: int
    src: str
    bands: tuple[int, ...]
    regions: tuple[Box, ...]
    grid: SceneGrid
    stats: BandStats | None = None


@dataclass
class UnitResult:
    """What a unit sends back.

    Attributes:
        scene: Index of the scene.
        masks: ``(block, mask)`` in the unit's order; the rows of ``seam`` are provisional.
        nodata: Pixels without data among the unit's.
        seam: Its top rows, to finish with the band of the unit above (``None`` for the
            scene's first strip, or where no tile straddles its top).
        band: ``(first row, sums)`` of the rows below the unit that its tiles reach, across
            the scene's width, for the unit below (``None`` for the last strip).
    """

    scene: int
    masks: list[tuple[Box, np.ndarray]]
    nodata: int
    seam: Seam | None = None
    band: tuple[int, Band] | None = None


_IDLE: dict[str, list[Segmenter]] = {}
"""Opened Segmenters that no thread has taken yet, by spec."""
_OPENED: set[str] = set()
_LOCK = threading.Lock()
_THREAD = threading.local()
"""Each thread's own Segmenters: one interpreter is never called from two threads."""


def _key(spec: ModelSpec) -> str:
    return repr(spec)  # the options hold lists: their text is the key


def _open(spec: ModelSpec) -> Segmenter:
    fix_worker_heap()  # Dask's 64 KiB trim threshold halves the speed of the blocks
    seg = Segmenter(spec.path, spec.backend, spec.options)
    with _LOCK:
        _OPENED.add(_key(spec))
    return seg


def segmenter(spec: ModelSpec) -> Segmenter:
    """The calling thread's Segmenter for ``spec``, opened on its first use and kept.

    A worker started with ``--nthreads 2`` runs two units at once; a Segmenter (its
    interpreter, its reused buffers) serves one thread only, so each thread gets its own,
    taking first the one :func:`open_model` opened.

    Returns:
        The Segmenter, for this thread only.
    """
    key = _key(spec)
    mine: dict[str, Segmenter] | None = getattr(_THREAD, "models", None)
    if mine is None:
        mine = _THREAD.models = {}
    if key not in mine:
        with _LOCK:
            idle = _IDLE.get(key)
            seg = idle.pop() if idle else None
        mine[key] = seg if seg is not None else _open(spec)
    return mine[key]


def open_model(spec: ModelSpec) -> str:
    """Open the model on this worker before any unit arrives (run on every worker).

    Dask runs this outside the threads that run tasks: the Segmenter waits for the first
    task thread to take it. A process that opened ``spec`` once opens it no more here.

    Returns:
        ``""`` when it opened, else the reason (a path this worker cannot read, a missing
        runtime), for the client to report.
    """
    with _LOCK:
        if _key(spec) in _OPENED:
            return ""
    try:
        seg = _open(spec)
    except Exception as exc:  # noqa: BLE001 - reported to the client
        return f"{type(exc).__name__}: {exc}" if not isinstance(exc, EdgesegError) else str(exc)
    with _LOCK:
        _IDLE.setdefault(_key(spec), []).append(seg)
    return ""


def predict_unit(model: ModelSpec, unit: Unit) -> UnitResult:
    """Predict the blocks of ``unit`` (runs on a worker); the next block is read ahead.

    Each of the unit's tiles is predicted once; the tiles starting above it are left to the
    unit above (see the module docstring).

    Raises:
        EdgesegError: When the scene cannot be read (names the file) or the model fails.
    """
    seg = segmenter(model)
    if seg.per_image:
        seg = seg.for_scene(unit.stats)
    src = Path(unit.src)
    grid = unit.grid
    boxes = grid.boxes()
    masks: list[tuple[Box, np.ndarray]] = []
    nodata = 0
    top = unit.regions[0].y0
    reach = tiling.rows_below(boxes, top) if top > 0 else 0
    seam = Seam(top, reach, grid.width) if reach > 0 else None
    share = RowShare()
    carry = BandCarry(boxes)

    buffers = WindowBuffers()

    def compute(region: Box, block) -> np.ndarray:
        nonlocal nodata
        mask, missing = predict_block(seg, grid, region, block, share, carry, seam)
        buffers.give(block.buffer)
        nodata += missing
        return mask

    with open_raster(src) as ds:
        stream(unit.regions,
               lambda region: read_block(seg, ds, list(unit.bands), grid, region, src, boxes,
                                         carried=region.y0 > 0, buffers=buffers),
               compute, lambda region, mask: masks.append((region, mask)),
               pipelined=seg.options.pipeline and len(unit.regions) > 1)
    band = None
    if carry.below:  # the last row of blocks handed its tiles down: their sums go below
        y1 = unit.regions[-1].y1
        band = (y1, seg.band_sums(grid.padded, TileBand(y1, dict(sorted(carry.below.items()))),
                                  grid.width))
    return UnitResult(unit.scene, masks, nodata, seam, band)
