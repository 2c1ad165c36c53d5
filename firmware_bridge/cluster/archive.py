"""``predict_many``: an archive of scenes through a Dask cluster, one mask GeoTIFF per scene.

The client (this process) checks every scene, cuts it into units (strips of whole rows of
output blocks, :func:`~firmware_bridge.io.blocks.strips`), and keeps at most a few units per
worker in flight, in scene order, so that few scenes are open at a time and memory stays
bounded whatever the archive's size. Every tile is predicted by one unit only: the band of
rows under the tiles that straddle the border of two strips is finished here, from the sums
the strip above sends and the scores of its own tiles that the strip below sends
(:func:`~firmware_bridge.io.blocks.finish_seam`), so the masks equal those of one process.
Each finished unit's masks are written into the scene's temporary file in whole tiles of the
file (:class:`~firmware_bridge.io.blocks.WholeTiles`); a scene whose last unit arrived is
renamed to its final name.
A scene that fails is reported and removed while the others go on; a worker that dies has its
units run again elsewhere (Dask's scheduler does this). Outputs that exist are skipped unless
``overwrite``. Ctrl-C or SIGTERM cancels the work, removes the temporary files
and stops the cluster that this call started.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from firmware_bridge.cluster.connect import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_WORKER_TIMEOUT,
    check_local_workers,
    connect_client,
    scheduler_address,
    wait_for_workers,
)
from firmware_bridge.cluster.worker import ModelSpec, Unit, UnitResult, open_model, predict_unit
from firmware_bridge.errors import EdgesegError, require
from firmware_bridge.fsutil import atomic_write_bytes, new_part, publish, writing
from firmware_bridge.io.blocks import (
    SceneGrid,
    Seam,
    WholeTiles,
    file_tiles,
    finish_seam,
    open_raster,
    raster_statistics,
    scene_bands,
    strips,
)
from firmware_bridge.io.geotiff import close_mask, create_mask
from firmware_bridge.io.images import GEOTIFF_SUFFIXES, mask_profile
from firmware_bridge.io.inputs import expand_inputs
from firmware_bridge.io.raster import DEFAULT_BLOCK, class_table, output_stems
from firmware_bridge.runtime.segmenter import Band, Segmenter, SegmenterOptions
from firmware_bridge.runtime.standardise import BandStats
from firmware_bridge.runtime.tiling import Box

UNITS_PER_WORKER = 2
"""Units in flight per worker: enough to keep it busy, few enough to bound memory."""
BLOCKS_PER_UNIT = 4
"""Fewest blocks of a scene in one task (whole rows of blocks): the worker reads the next
block while it predicts one, and the fewer strips, the fewer bands cross between tasks."""
SUMMARY = "predict_summary.json"


@dataclass
class ArchiveReport:
    """What :func:`predict_many` did.

    Attributes:
        written: Masks written.
        skipped: Inputs whose mask existed already.
        failed: ``(input, reason)`` for every scene that could not be read or predicted.
        pixels: Pixels predicted (written scenes).
        nodata: Pixels without data among them.
        seconds: Wall time of the prediction (cluster start excluded).
        workers: Workers of the cluster.
    """

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    pixels: int = 0
    nodata: int = 0
    seconds: float = 0.0
    workers: int = 0

    @property
    def mpix_per_s(self) -> float:
        """Megapixels predicted per second."""
        return self.pixels / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        """A JSON-ready summary."""
        return {"written": [str(p) for p in self.written], "skipped": [str(p) for p in self.skipped],
                "failed": [{"input": str(p), "reason": r} for p, r in self.failed],
                "megapixels": round(self.pixels / 1e6, 3), "nodata_pixels": self.nodata,
                "seconds": round(self.seconds, 3), "mpix_per_s": round(self.mpix_per_s, 3),
                "workers": self.workers}


@dataclass
class _Scene:
    index: int
    src: Path
    dst: Path
    grid: SceneGrid
    bands: tuple[int, ...]
    profile: dict
    strips: list[tuple[Box, ...]]
    stats: BandStats | None = None
    done: int = 0
    nodata: int = 0
    tmp: Path | None = None
    out: object = None
    failed: bool = False
    rows: WholeTiles | None = None
    bands_down: dict[int, Band] = field(default_factory=dict)
    """Bands handed down by a strip whose strip below has not come back yet, by first row."""
    seams: dict[int, Seam] = field(default_factory=dict)
    """Seams of strips whose strip above has not come back yet, by first row."""

    @property
    def units(self) -> int:
        return len(self.strips)


class _Writer:
    """Opens, fills, finishes or removes the scenes' temporary mask files."""

    def __init__(self, seg: Segmenter, colours: list[tuple[int, int, int]]) -> None:
        require("rasterio", "geo")
        self.seg = seg
        self.colours = colours

    def write(self, scene: _Scene, result: UnitResult) -> None:
        from rasterio.windows import Window

        g = scene.grid
        if scene.out is None:
            scene.tmp = new_part(scene.dst)
            profile = mask_profile(scene.profile, g.height, g.width)
            with writing(scene.dst):
                scene.out = out = create_mask(scene.tmp, profile, self.colours)

            def write_rows(box: Box, mask: np.ndarray) -> None:
                out.write(mask, 1, window=Window(box.x0, box.y0, box.width, box.height))

            scene.rows = WholeTiles(g.height, g.width, file_tiles(profile, g.height, g.width),
                                    write_rows)
        seam = result.seam
        with writing(scene.dst):
            for region, mask in result.masks:
                cut = seam.rows if seam is not None and region.y0 == seam.y0 else 0
                if cut < region.height:  # a seam's rows are written once finished
                    scene.rows.add(Box(region.y0 + cut, region.x0, region.y1, region.x1),
                                   mask[cut:])
            if seam is not None:
                band = scene.bands_down.pop(seam.y0, None)
                if band is None:
                    scene.seams[seam.y0] = seam
                else:
                    self._finish_seam(scene, seam, band)
            if result.band is not None:
                y0, band = result.band
                waiting = scene.seams.pop(y0, None)
                if waiting is None:
                    scene.bands_down[y0] = band
                else:
                    self._finish_seam(scene, waiting, band)
        scene.nodata += result.nodata
        scene.done += 1
        if scene.done == scene.units and not (scene.rows.complete and not scene.seams
                                               and not scene.bands_down):
            raise EdgesegError(f"{scene.src}: rows of the mask were left unwritten (seams "
                               f"{sorted(scene.seams)}, bands {sorted(scene.bands_down)})")

    def _finish_seam(self, scene: _Scene, seam: Seam, band: Band) -> None:
        mask = finish_seam(self.seg, scene.grid, seam, band)
        scene.rows.add(Box(seam.y0, 0, seam.y0 + seam.rows, seam.width), mask)

    def finish(self, scene: _Scene) -> None:
        out, scene.out = scene.out, None
        with writing(scene.dst):
            close_mask(out)  # GDAL's failures while closing show only when read back
        publish(scene.tmp, scene.dst)

    def abort(self, scene: _Scene) -> None:
        if scene.out is not None:
            try:
                scene.out.close()
            except Exception:  # noqa: BLE001, S110 - the file is removed anyway
                pass
            scene.out = None
        if scene.tmp is not None:
            scene.tmp.unlink(missing_ok=True)


def _plan(seg: Segmenter, inputs: list[Path], out: Path, bands, block: int, overwrite: bool,
          report: ArchiveReport, log: Callable[[str], None]) -> list[_Scene]:
    scenes = []
    for src, stem in zip(inputs, output_stems(inputs), strict=True):
        dst = out / f"{stem}_mask.tif"
        if dst.exists() and not overwrite:
            report.skipped.append(src)
            continue
        try:
            with open_raster(src) as ds:
                chosen = tuple(scene_bands(src, ds, bands, seg))
                grid = SceneGrid(ds.height, ds.width, seg.tile, seg.overlap)
                profile = dict(ds.profile)
                stats = raster_statistics(seg, ds, list(chosen), src) if seg.per_image else None
        except EdgesegError as exc:
            report.failed.append((src, str(exc)))
            log(f"error: {exc}")
            continue
        scenes.append(_Scene(len(scenes), src, dst, grid, chosen, profile,
                             strips(grid, block, BLOCKS_PER_UNIT), stats=stats))
    return scenes


def _units(scenes: list[_Scene]):
    for scene in scenes:
        for strip in scene.strips:
            yield Unit(scene.index, str(scene.src), scene.bands, strip, scene.grid, scene.stats)


def _client(client, workers: int | None, scheduler: str | None, dashboard: bool, stack,
            connect_timeout: float, worker_timeout: float) -> tuple:
    """The client to use, with its workers running, and how many run.

    Args:
        client: The caller's client, or ``None``.
        workers: Local worker processes to start (without ``client`` or ``scheduler``).
        scheduler: A scheduler address checked by ``scheduler_address``, or ``None``.
        dashboard: Serve the local cluster's dashboard.
        stack: Closes what this call opens.
        connect_timeout: Seconds for each connection to the scheduler.
        worker_timeout: Seconds for the first worker to join (``client``, ``scheduler``), or
            for all local workers to start.

    Returns:
        ``(client, workers running)``.

    Raises:
        EdgesegError: When the scheduler does not answer or the workers do not come in time.
    """
    distributed = require("distributed", "cluster")
    dask_config = require("dask", "cluster").config
    stack.enter_context(dask_config.set({"distributed.comm.timeouts.connect": connect_timeout}))
    if client is not None:
        return client, wait_for_workers(client, 1, worker_timeout)
    if scheduler:
        dask = stack.enter_context(connect_client(scheduler, connect_timeout))
        return dask, wait_for_workers(dask, 1, worker_timeout)
    n = workers or 1
    with warnings.catch_warnings():  # the scheduler's HTTP server takes another port quietly
        warnings.filterwarnings("ignore", message="Port .* is already in use")
        cluster = stack.enter_context(distributed.LocalCluster(
            n_workers=0, threads_per_worker=1, processes=True,
            dashboard_address=":0" if dashboard else None, silence_logs=40))
    cluster.scale(n)  # the workers start in the background: the wait below bounds them
    # by address: Client(cluster) would wait, without limit, for every worker to start
    dask = stack.enter_context(distributed.Client(cluster.scheduler_address,
                                                  timeout=connect_timeout))
    return dask, wait_for_workers(dask, n, worker_timeout, local=True)


def predict_many(
    model: str | Path, inputs: Sequence[str | Path], out: str | Path, client=None, *,
    workers: int | None = None, scheduler: str | None = None, backend: str | None = None,
    options: SegmenterOptions | None = None, bands: Sequence[int] | None = None,
    block: int = DEFAULT_BLOCK, overwrite: bool = False, dashboard: bool = False,
    show_progress: bool = False, on_unit: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    worker_timeout: float = DEFAULT_WORKER_TIMEOUT,
) -> ArchiveReport:
    """Predict many (Geo)TIFF scenes on a Dask cluster into ``out/<stem>_mask.tif``.

    Args:
        model: The model file; every worker must be able to read this path.
        inputs: Scenes: files, folders or globs of ``.tif``/``.tiff``.
        out: Output folder (created).
        client: A ``distributed.Client`` to use (its cluster is left running).
        workers: Without ``client`` or ``scheduler``: start a ``LocalCluster`` of this many
            worker processes (default 1) and stop it at the end; more than the cores warns
            through ``log``, more than 4 per core is refused.
        scheduler: Address of a running scheduler, e.g. ``tcp://10.0.0.5:8786``.
        backend: Backend name (default: from the model's suffix).
        options: Runtime options; on a local cluster ``threads`` defaults to the CPU count
            divided by the workers.
        bands: 1-based bands of every scene to feed the model.
        block: Output block edge; a unit of work is a strip of whole rows of blocks, at least
            :data:`BLOCKS_PER_UNIT` blocks (:func:`~firmware_bridge.io.blocks.strips`).
        overwrite: Predict scenes whose mask exists already (default: skip them).
        dashboard: Print the Dask dashboard's address (needs ``bokeh`` on the scheduler).
        show_progress: One progress bar over all blocks of all scenes.
        on_unit: Called with ``(units done, units in all)`` after each unit is written.
        log: Where messages go (default: stderr).
        connect_timeout: Seconds for the scheduler to accept a connection and answer (the
            first check included), and for each later connection to it.
        worker_timeout: Seconds for the first worker to join the scheduler (``client`` or
            ``scheduler``), or for all ``workers`` of a local cluster to start.

    Returns:
        The report, also written to ``out/predict_summary.json``.

    Raises:
        EdgesegError: For a bad model, inputs that are not TIFF scenes, a scheduler
            address that is not one, a scheduler that does not answer within
            ``connect_timeout``, no worker within ``worker_timeout``, more local ``workers``
            than 4 per core, or an unwritable output folder (before any work), or when the
            summary cannot be written. A mask that cannot be written (a full disk) fails
            its scene only: it is reported, named, and no part of it is left.
        MissingDependencyError: Without ``distributed`` (``pip install 'edgeseg[cluster]'``).
    """
    import contextlib

    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    require("distributed", "cluster")
    if block < 1:
        raise EdgesegError(f"block must be a positive number of pixels, got {block}")
    if not (0 < connect_timeout < float("inf") and 0 < worker_timeout < float("inf")):
        raise EdgesegError(f"timeouts must be positive numbers of seconds, got connect "
                           f"{connect_timeout} and workers {worker_timeout}")
    if scheduler is not None and client is None:
        scheduler = scheduler_address(scheduler)
    if client is None and not scheduler:
        check_local_workers(workers or 1, log)
    files = expand_inputs(inputs, GEOTIFF_SUFFIXES)
    others = [p for p in files if p.suffix.lower() not in GEOTIFF_SUFFIXES]
    if others:
        raise EdgesegError(f"{others[0]}: the cluster path takes (Geo)TIFF scenes; predict other "
                           "images without --workers / --scheduler")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EdgesegError(f"{out}: exists and is not a folder: pass a folder to --out")
    local = client is None and not scheduler
    n = workers or 1
    opts = options or SegmenterOptions()
    if local and opts.threads is None:
        opts = SegmenterOptions(**{**opts.__dict__, "threads": max(1, (os.cpu_count() or 1) // n)})
    seg = Segmenter(model, backend, opts)  # a bad model fails here, before a cluster starts
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgesegError(f"{out}: cannot create the output folder ({exc})") from exc
    report = ArchiveReport()
    scenes = _plan(seg, files, out, bands, block, overwrite, report, log)
    writer = _Writer(seg, class_table(seg).palette())
    spec = ModelSpec(str(Path(model).resolve()), backend, opts)
    total = sum(s.units for s in scenes)
    if not scenes:  # everything skipped or failed: no cluster to start
        atomic_write_bytes(out / SUMMARY, (json.dumps(report.to_dict(), indent=2) + "\n").encode())
        return report
    with contextlib.ExitStack() as stack:
        dask, report.workers = _client(client, workers, scheduler, dashboard, stack,
                                       connect_timeout, worker_timeout)
        if dashboard:
            try:
                import bokeh  # noqa: F401 - the dashboard's pages need it
                log(f"Dask dashboard: {dask.dashboard_link}")
            except ImportError:
                log(f"Dask dashboard: {dask.dashboard_link} (its pages need bokeh: pip install "
                    "'bokeh>=3.1')")
        failures = {w: why for w, why in dask.run(open_model, spec).items() if why}
        if failures:
            worker, why = next(iter(failures.items()))
            raise EdgesegError(f"{len(failures)} worker(s) cannot open the model, e.g. {worker}: "
                               f"{why} (every worker must read the model at {spec.path})")
        started = time.perf_counter()
        try:
            _run(dask, spec, scenes, writer, report, total, show_progress, on_unit, log)
        finally:
            for scene in scenes:
                if scene.out is not None or (scene.tmp is not None and scene.tmp.exists()):
                    writer.abort(scene)
        report.seconds = time.perf_counter() - started
    atomic_write_bytes(out / SUMMARY, (json.dumps(report.to_dict(), indent=2) + "\n").encode())
    return report


def _run(dask, spec: ModelSpec, scenes: list[_Scene], writer: _Writer, report: ArchiveReport,
         total: int, show_progress: bool, on_unit, log) -> None:
    from distributed import as_completed

    from firmware_bridge.progress import progress

    pending_units = deque(_units(scenes))
    limit = max(1, report.workers) * UNITS_PER_WORKER
    blocks = sum(len(unit.regions) for unit in pending_units)
    bar = progress(range(blocks), blocks, "predict", show_progress, "block")  # one bar, all scenes
    done = 0
    futures = as_completed()
    in_flight: dict = {}

    def submit() -> None:
        while pending_units and len(in_flight) < limit:
            unit = pending_units.popleft()
            if scenes[unit.scene].failed:
                continue
            future = dask.submit(predict_unit, spec, unit, pure=False)
            in_flight[future.key] = (future, unit)
            futures.add(future)

    submit()
    try:
        for future in futures:
            _, unit = in_flight.pop(future.key)
            scene = scenes[unit.scene]
            done += 1
            if hasattr(bar, "update"):
                bar.update(len(unit.regions))
            if not scene.failed:
                try:
                    writer.write(scene, future.result())
                    if scene.done == scene.units:
                        writer.finish(scene)
                        report.written.append(scene.dst)
                        report.pixels += scene.grid.height * scene.grid.width
                        report.nodata += scene.nodata
                except Exception as exc:  # noqa: BLE001 - one scene fails, the others go on
                    scene.failed = True
                    writer.abort(scene)
                    reason = str(exc) if isinstance(exc, EdgesegError) else f"{type(exc).__name__}: {exc}"
                    report.failed.append((scene.src, reason))
                    log(f"error: {reason}" if str(scene.src) in reason else f"error: {scene.src}: {reason}")
            if on_unit:
                on_unit(done, total)
            submit()
    finally:
        for future, _ in in_flight.values():
            future.cancel()
        close = getattr(bar, "close", None)
        if close:
            close()
