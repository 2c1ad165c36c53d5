"""What a Dask worker runs: the masks of some blocks of one scene.

A unit names the model by path (every worker must be able to read it) and the scene by path;
the worker opens the model once per task thread (once per process with ``--nthreads 1``),
keyed by path, backend and options, and keeps it for the next units: an interpreter is never
called from two threads. Only the small ``uint8`` masks travel back.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firmware_bridge.errors import EdgesegError
from firmware_bridge.heap import fix_worker_heap
from firmware_bridge.io.blocks import RowShare, SceneGrid, open_raster, predict_block, read_block
from firmware_bridge.runtime.pipeline import stream
from firmware_bridge.runtime.segmenter import Segmenter, SegmenterOptions
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
        regions: The output blocks, in scene coordinates.
        grid: The scene's tile grid.
    """

    scene: int
    src: str
    bands: tuple[int, ...]
    regions: tuple[Box, ...]
    grid: SceneGrid


@dataclass
class UnitResult:
    """The masks of a unit's blocks, in the unit's order, and its pixels without data."""

    scene: int
    masks: list[tuple[Box, np.ndarray]]
    nodata: int


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

    Raises:
        EdgesegError: When the scene cannot be read (names the file) or the model fails.
    """
    seg = segmenter(model)
    src = Path(unit.src)
    boxes = unit.grid.boxes()
    masks: list[tuple[Box, np.ndarray]] = []
    nodata = 0

    share = RowShare()

    def compute(region: Box, block) -> np.ndarray:
        nonlocal nodata
        mask, missing = predict_block(seg, unit.grid, region, block, share)
        nodata += missing
        return mask

    with open_raster(src) as ds:
        stream(unit.regions,
               lambda region: read_block(seg, ds, list(unit.bands), unit.grid, region, src, boxes),
               compute, lambda region, mask: masks.append((region, mask)),
               pipelined=seg.options.pipeline and len(unit.regions) > 1)
    return UnitResult(unit.scene, masks, nodata)
