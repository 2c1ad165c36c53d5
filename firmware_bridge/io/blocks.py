"""A scene's output blocks, each predicted from its own window: the unit of streamed work.

A raster is cut into output blocks; a block's mask depends only on the pixels under the model
tiles of the *whole scene's* tile grid that touch it (its context window). Predicting a block
from that window alone therefore gives exactly the pixels that tiling the whole scene gives
there, whichever process does it and in whatever order: the streamed single-process path
(:func:`firmware_bridge.io.raster.predict_geotiff`) and the cluster path
(:mod:`firmware_bridge.cluster`) both go through :func:`read_block` and :func:`predict_block`.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from firmware_bridge import IGNORE_INDEX
from firmware_bridge.errors import EdgesegError, require
from firmware_bridge.runtime import tiling
from firmware_bridge.runtime.segmenter import Band, TileBand
from firmware_bridge.runtime.standardise import BandStats

GDAL_CACHE_MB = 64
"""GDAL's block cache per process: memory must not grow with the scene."""


@dataclass(frozen=True)
class SceneGrid:
    """The tile grid of one scene, as the model sees it.

    Attributes:
        height: Scene rows.
        width: Scene columns.
        tile: ``(tile_height, tile_width)``.
        overlap: Tile overlap in pixels.
    """

    height: int
    width: int
    tile: tuple[int, int]
    overlap: int

    @property
    def padded(self) -> tuple[int, int]:
        """The scene's size once padded up to at least one tile."""
        return max(self.height, self.tile[0]), max(self.width, self.tile[1])

    def boxes(self) -> list[tiling.Box]:
        """Every tile of the (padded) scene."""
        return tiling.tile_boxes(*self.padded, self.tile, self.overlap)

    def context(self, region: tiling.Box, boxes: list[tiling.Box] | None = None,
                carried: bool = False) -> tiling.Box:
        """The window of pixels that the tiles touching ``region`` cover.

        Args:
            region: The block.
            boxes: The scene's tiles (``None``: :meth:`boxes`).
            carried: Leave out the tiles starting above the block (their sums come in a
                :class:`~firmware_bridge.runtime.segmenter.Band` from the block above).
        """
        touching = tiling.boxes_touching(boxes or self.boxes(), region)
        if carried:
            touching = [b for b in touching if b.y0 >= region.y0] or touching
        return tiling.bounding_box(touching)

    def regions(self, block: int) -> list[tiling.Box]:
        """The scene's output blocks, row-major."""
        return tiling.block_regions(self.height, self.width, block)

    def stream_regions(self, block: int) -> list[tiling.Box]:
        """Output blocks, rows cut on tile starts (:func:`~firmware_bridge.runtime.tiling.stream_regions`)."""
        return tiling.stream_regions(self.height, self.width, self.tile, self.overlap, block)


@dataclass
class BlockInput:
    """What :func:`read_block` read for one block: its context window, ready for the model."""

    context: tiling.Box
    pixels: np.ndarray
    invalid: np.ndarray | None
    carried: bool = False
    buffer: np.ndarray | None = None
    """The memory the window was read into, when it came from :class:`WindowBuffers`."""


class WindowBuffers:
    """Memory recycled between the pixel windows of a stream of blocks (thread-safe).

    A window read into fresh memory costs the page faults of mapping it (a 1024 px block of
    three bands is about 4 MB, more than glibc serves from its heap) or, when the heap serves
    it, leaves the heap fragmented by windows of varying size. Blocks in flight take a buffer
    here and give it back once predicted, so a stream holds as many as it has blocks in flight
    and maps each once.
    """

    def __init__(self) -> None:
        self._free: list[np.ndarray] = []
        self._lock = threading.Lock()

    def take(self, shape: tuple[int, ...], dtype: np.dtype | type) -> tuple[np.ndarray, np.ndarray]:
        """A C-contiguous array of ``shape`` and ``dtype``, and the buffer it lies in."""
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        with self._lock:
            fits = [i for i, b in enumerate(self._free) if b.size >= n]
            flat = self._free.pop(fits[0] if fits else -1) if self._free else None
        if flat is None or flat.size < n:  # one too small is let go: no more than in flight
            flat = np.empty(n, np.uint8)
        return flat[:n].view(dtype).reshape(shape), flat

    def give(self, buffer: np.ndarray | None) -> None:
        """Return a buffer from :meth:`take` (``None`` is ignored)."""
        if buffer is not None:
            with self._lock:
                self._free.append(buffer)
                self._free.sort(key=lambda b: b.size)


@contextlib.contextmanager
def open_raster(src: Path) -> Iterator:
    """Open a raster for reading under a bounded GDAL cache, with errors that name it.

    Raises:
        EdgesegError: For a missing or unreadable file.
    """
    rasterio = require("rasterio", "geo")
    if not src.is_file():
        raise EdgesegError(f"{src}: no such file")
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), warnings.catch_warnings():
        # a plain TIFF has no georeference; its mask then has none either, which is right
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        try:
            ds = rasterio.open(src)
        except rasterio.errors.RasterioIOError as exc:
            raise EdgesegError(f"{src}: unreadable raster ({exc})") from exc
        with ds:
            yield ds


def scene_bands(src: Path, ds, bands: Sequence[int] | None, seg) -> list[int]:
    """The bands to read, after checking them and the scene's size against the model.

    Raises:
        EdgesegError: For bands out of range, a band count the model does not take, or a scene
            smaller than the model's minimum.
    """
    count = ds.count
    chosen = list(bands) if bands else list(range(1, count + 1))
    bad = [b for b in chosen if not 1 <= b <= count]
    if bad:
        raise EdgesegError(f"{src}: has {count} bands, cannot select band(s) {bad} (1-based)")
    if len(chosen) != seg.channels:
        raise EdgesegError(f"{src}: {len(chosen)} band(s) selected but the model takes "
                           f"{seg.channels}: pass --bands with {seg.channels} band numbers")
    if min(ds.height, ds.width) < seg.options.min_size:
        raise EdgesegError(f"{src}: {ds.width}x{ds.height} is smaller than "
                           f"{seg.options.min_size} px, too little for the model")
    return chosen


STATS_EDGE = 1024
"""Longest side of the decimated read that a streamed scene's band statistics come from."""


def raster_statistics(seg, ds, bands: list[int], src: Path) -> BandStats | None:
    """The band statistics of a whole raster, from one decimated read (its overviews if any).

    For a model standardised per image (:mod:`firmware_bridge.runtime.standardise`): every
    block of a streamed scene is normalised with the statistics of the whole scene.

    Args:
        seg: The model (its ``scale`` and nodata handling).
        ds: The open raster.
        bands: 1-based bands the model reads.
        src: The raster's path (for messages).

    Returns:
        The statistics of the pixels that hold data (``None``: none do).

    Raises:
        EdgesegError: When the raster cannot be read (names the file).
    """
    rasterio = require("rasterio", "geo")
    from rasterio.enums import Resampling

    step = max(1, -(-max(ds.height, ds.width) // STATS_EDGE))
    shape = (len(bands), max(1, ds.height // step), max(1, ds.width // step))
    try:
        data = ds.read(bands, out_shape=shape, resampling=Resampling.nearest)
    except rasterio.errors.RasterioError as exc:
        raise EdgesegError(f"{src}: reading the scene's statistics failed ({exc})") from exc
    return seg.image_statistics(np.moveaxis(data, 0, -1), ds.nodata)


def read_block(seg, ds, bands: list[int], grid: SceneGrid, region: tiling.Box, src: Path,
               boxes: list[tiling.Box] | None = None, carried: bool = False,
               buffers: WindowBuffers | None = None) -> BlockInput:
    """Read a block's context window, fill pixels without data and pad it to whole tiles.

    Args:
        seg: The model.
        ds: The open raster.
        bands: 1-based bands to read.
        grid: The scene's tile grid.
        region: The block.
        src: The raster's path (for messages).
        boxes: The scene's tiles (``None``: computed).
        carried: The block above hands its band down (:class:`BandCarry`): the tiles starting
            above the block are not read.
        buffers: Read into memory from here (give :attr:`BlockInput.buffer` back once the
            block is predicted); ``None``: fresh memory.

    Returns:
        The window, its pixels and where they had no data.

    Raises:
        EdgesegError: When the window cannot be read (names the file).
    """
    rasterio = require("rasterio", "geo")
    from rasterio.windows import Window

    bb = grid.context(region, boxes, carried)
    window = Window(bb.x0, bb.y0, min(bb.x1, grid.width) - bb.x0, min(bb.y1, grid.height) - bb.y0)
    out = buffer = None
    kinds = {ds.dtypes[b - 1] for b in bands}
    if buffers is not None and len(kinds) == 1:
        shape = (len(bands), int(window.height), int(window.width))
        out, buffer = buffers.take(shape, np.dtype(kinds.pop()))
    try:
        data = ds.read(bands, window=window, out=out)
    except rasterio.errors.RasterioError as exc:
        if buffers is not None:
            buffers.give(buffer)
        raise EdgesegError(f"{src}: reading window {window} failed ({exc})") from exc
    data, invalid = seg.clean(np.moveaxis(data, 0, -1), ds.nodata)
    return BlockInput(bb, tiling.pad_to_tile(data, (bb.height, bb.width)), invalid, carried,
                      buffer)


class RowShare:
    """Tile scores shared between neighbouring blocks of one row (one per stream of blocks).

    A tile that straddles the border of two blocks of a row is predicted once: the block on
    the left keeps its scores for the block on the right (memory: one column of tiles). Blocks
    must come in row-major order; a new row starts afresh.
    """

    def __init__(self) -> None:
        self.row: int | None = None
        self.tiles: dict[tiling.Box, np.ndarray] = {}

    def for_region(self, region: tiling.Box) -> dict[tiling.Box, np.ndarray]:
        """The shared scores for ``region`` (emptied when it starts a new row)."""
        if region.y0 != self.row:
            self.row = region.y0
            self.tiles = {}
        return self.tiles


class BandCarry:
    """Tile scores handed from each row of blocks to the row beneath (one per stream of blocks).

    The tiles that straddle the border between two rows of blocks are predicted once, with
    the upper row: each block hands down those tiles' scores over the rows below it that they
    reach, ``overlap`` rows when the rows of blocks are cut on tile starts
    (:meth:`SceneGrid.stream_regions`), and each block beneath adds the ones over its columns
    before its own (a :class:`~firmware_bridge.runtime.segmenter.TileBand`). Memory: those
    rows of one row of tiles across the scene's width, at the model's 8 bits for integer
    blending (half of what the blended 16-bit sums and their weights would take). Blocks must
    come in row-major order.

    Args:
        boxes: The scene's tiles.
    """

    def __init__(self, boxes: list[tiling.Box]) -> None:
        self.boxes = boxes
        self.row: tuple[int, int] | None = None
        self.above: dict[tiling.Box, np.ndarray] = {}
        self.below: dict[tiling.Box, np.ndarray] = {}

    def _enter(self, region: tiling.Box) -> None:
        if self.row is not None and region.y0 == self.row[0]:
            return
        moved = self.row is not None and region.y0 == self.row[1]
        self.above = self.below if moved else {}
        self.below = {}
        self.row = (region.y0, region.y1)

    def take(self, region: tiling.Box) -> TileBand | None:
        """The tiles handed down over ``region``'s columns (``None`` in the first row).

        A tile that reaches past the region's right edge is kept for the next block.
        """
        self._enter(region)
        tiles = {b: s for b, s in self.above.items() if b.x0 < region.x1 and b.x1 > region.x0}
        for b in tiles:
            if b.x1 <= region.x1:
                del self.above[b]
        return TileBand(region.y0, tiles) if tiles else None

    def rows(self, region: tiling.Box, height: int) -> int:
        """Rows ``region`` hands down (0 in the last row of a scene of ``height``)."""
        return 0 if region.y1 >= height else tiling.rows_below(self.boxes, region.y1)

    def put(self, region: tiling.Box, band: TileBand | None) -> None:
        """Keep the tiles ``region`` hands down for the blocks beneath."""
        if band is not None:
            self.below.update(band.tiles)


def file_tiles(profile: dict[str, Any], height: int, width: int) -> tuple[int, int]:
    """The blocks a mask file is stored in: its tiles, or the whole image when untiled.

    Args:
        profile: The mask's rasterio profile (:func:`~firmware_bridge.io.images.mask_profile`).
        height: Scene rows.
        width: Scene columns.

    Returns:
        ``(rows, columns)`` of one stored block.
    """
    if profile.get("tiled"):
        return int(profile.get("blockysize", 256)), int(profile.get("blockxsize", 256))
    return height, width


class WholeTiles:
    """Masks of boxes that come in any order, written in whole tiles of the output file.

    Each window written covers whole tiles of the file (a run of them along one tile row), and
    each tile is written once: a compressed tile written in parts is stored more than once,
    and GDAL, when it reads such a tile back to complete it, has been seen to lose the part
    written first. Blocks end on tile starts of the model, not of the file, so the parts of a
    file tile that two blocks share are kept until every pixel of it has come. Tiles a box
    covers whole are written at once, so memory holds only the parts of the tiles that the
    boxes in flight leave incomplete (for row-major blocks, under one tile row across the
    width).

    Args:
        height: Scene rows.
        width: Scene columns.
        tile: ``(rows, columns)`` of the file's tiles (:func:`file_tiles`).
        write: Called with a box of whole tiles and its ``uint8`` mask.
    """

    def __init__(self, height: int, width: int, tile: tuple[int, int],
                 write: Callable[[tiling.Box, np.ndarray], None]) -> None:
        self.height, self.width, self._write = height, width, write
        self.tile = (max(1, int(tile[0])), max(1, int(tile[1])))
        self.partial: dict[tuple[int, int], tuple[list[tuple[int, int, np.ndarray]], int]] = {}
        """``(row, column)`` of each tile started -> its parts so far and their pixel count."""

    def add(self, box: tiling.Box, mask: np.ndarray) -> None:
        """Take the mask of ``box``; write the tiles it completes.

        Raises:
            ValueError: When ``mask`` is not ``box``'s shape, or more pixels come for a tile
                than it holds (some came twice).
        """
        if mask.shape != (box.height, box.width):
            raise ValueError(f"mask of {mask.shape} for box {box}")
        th, tw = self.tile
        for r0 in range(box.y0 - box.y0 % th, box.y1, th):
            r1 = min(r0 + th, self.height)
            a, b = max(r0, box.y0), min(r1, box.y1)
            done: list[tuple[int, int, np.ndarray]] = []  # (c0, c1, mask) of finished tiles
            for c0 in range(box.x0 - box.x0 % tw, box.x1, tw):
                c1 = min(c0 + tw, self.width)
                left, right = max(c0, box.x0), min(c1, box.x1)
                part = mask[a - box.y0 : b - box.y0, left - box.x0 : right - box.x0]
                if (a, b, left, right) == (r0, r1, c0, c1):
                    done.append((c0, c1, part))
                    continue
                parts, filled = self.partial.pop((r0, c0), ([], 0))
                parts.append((a - r0, left - c0, part))
                filled += part.size
                size = (r1 - r0) * (c1 - c0)
                if filled > size:
                    raise ValueError(f"box {box} writes pixels of the tile at row {r0}, "
                                     f"column {c0} a second time")
                if filled == size:
                    buf = np.empty((r1 - r0, c1 - c0), np.uint8)
                    for y, x, p in parts:
                        buf[y : y + p.shape[0], x : x + p.shape[1]] = p
                    done.append((c0, c1, buf))
                else:  # only the pixels that came are kept (a copy: the box's mask is let go)
                    parts[-1] = (a - r0, left - c0, part.copy())
                    self.partial[(r0, c0)] = (parts, filled)
            self._flush(r0, r1, done)

    def _flush(self, r0: int, r1: int, done: list[tuple[int, int, np.ndarray]]) -> None:
        """Write finished tiles of one tile row, each run of neighbours as one window."""
        i = 0
        while i < len(done):
            j = i + 1
            while j < len(done) and done[j][0] == done[j - 1][1]:
                j += 1
            run = done[i:j]
            rows = run[0][2] if len(run) == 1 else np.concatenate([m for _, _, m in run], axis=1)
            self._write(tiling.Box(r0, run[0][0], r1, run[-1][1]), rows)
            i = j

    @property
    def complete(self) -> bool:
        """Whether every tile that was started has been written."""
        return not self.partial

    @property
    def held(self) -> int:
        """Bytes of mask held for tiles not yet complete."""
        return sum(p.nbytes for parts, _ in self.partial.values() for _, _, p in parts)


@dataclass
class Seam:
    """The top rows of a strip of blocks whose blend waits for the band of the strip above.

    When two processes predict the strips above and below row ``y0``, the tiles that straddle
    ``y0`` are predicted once, by the strip above, which hands down the partial sums of the
    ``rows`` rows they reach past ``y0`` (a :class:`~firmware_bridge.runtime.segmenter.Band`).
    The strip below predicts only its own tiles; it keeps the scores of those that reach
    into the band, here, and its mask of those rows is provisional. Whoever holds both adds
    them up with :meth:`~firmware_bridge.runtime.segmenter.Segmenter.finish_band`, in the
    order one process would (:func:`finish_seam`).

    Attributes:
        y0: The strip's first row.
        rows: Rows of the band (:func:`~firmware_bridge.runtime.tiling.rows_below` at ``y0``).
        width: Scene columns.
        tiles: ``(box, scores over the band's rows)`` of the strip's tiles that reach into it.
        invalid: ``rows x width`` bool, True for pixels without data (``None``: none).
    """

    y0: int
    rows: int
    width: int
    tiles: list[tuple[tiling.Box, np.ndarray]] = field(default_factory=list)
    invalid: np.ndarray | None = None


def finish_seam(seg, grid: SceneGrid, seam: Seam, above: Band) -> np.ndarray:
    """The final mask of a seam's rows, from its tiles and the band the strip above handed down.

    Args:
        seg: The model (the one both strips ran).
        grid: The scene's tile grid.
        seam: The strip below's part (:class:`Seam`).
        above: The strip above's band of the same rows, across the scene's width.

    Returns:
        ``seam.rows x width`` ``uint8`` mask, 255 where there is no data: the pixels that
        predicting the scene in one process gives there.

    Raises:
        ValueError: When the band does not cover the seam's rows and columns.
    """
    if above.acc.shape[:2] != (seam.rows, seam.width):
        raise ValueError(f"band of {above.acc.shape[:2]} for a seam of {seam.rows} x {seam.width}")
    mask = seg.finish_band(grid.padded, seam.y0, above, seam.tiles)
    if seam.invalid is not None:
        mask[seam.invalid] = IGNORE_INDEX
    return mask


def strips(grid: SceneGrid, block: int, blocks: int) -> list[tuple[tiling.Box, ...]]:
    """The scene's output blocks as strips of whole rows of blocks, for tasks that run apart.

    Blocks are those of :meth:`SceneGrid.stream_regions` (rows cut on tile starts). A strip
    takes rows of blocks until it holds at least ``blocks`` blocks, and ends only where the
    band that the tiles straddling its end reach into fits in the next row of blocks (so the
    band is finished in that row alone: :class:`Seam`).

    Args:
        grid: The scene's tile grid.
        block: Block edge in pixels.
        blocks: Fewest blocks per strip.

    Returns:
        The strips, top to bottom; each a row-major tuple of blocks across the whole width.
    """
    boxes = grid.boxes()
    rows: list[list[tiling.Box]] = []
    for region in grid.stream_regions(block):
        if rows and rows[-1][0].y0 == region.y0:
            rows[-1].append(region)
        else:
            rows.append([region])
    out: list[tuple[tiling.Box, ...]] = []
    current: list[tiling.Box] = []
    for row in rows:
        y0, height = row[0].y0, row[0].height
        if len(current) >= blocks and tiling.rows_below(boxes, y0) <= height:
            out.append(tuple(current))
            current = []
        current.extend(row)
    if current:
        out.append(tuple(current))
    return out


def predict_block(seg, grid: SceneGrid, region: tiling.Box, block: BlockInput,
                  share: RowShare | None = None, carry: BandCarry | None = None,
                  seam: Seam | None = None) -> tuple[np.ndarray, int]:
    """The mask of one block, and how many of its pixels have no data (255 in the mask).

    Args:
        seg: The model.
        grid: The scene's tile grid.
        region: The block.
        block: Its context window, from :func:`read_block`.
        share: Tiles shared with the previous block of the row (see :class:`RowShare`).
        carry: Sums handed down between rows of blocks (see :class:`BandCarry`); the block
            must have been read with ``carried`` set exactly when it is not in the first row.
        seam: For a block of the first row of a strip whose band comes from another process
            (``region.y0 == seam.y0``): its tiles' scores over the band are added to it, and
            the mask's rows in the band are provisional (:class:`Seam`).

    Returns:
        The mask and the count of pixels without data.

    Raises:
        EdgesegError: When the block was read without the rows its missing band would hold.
    """
    bb = block.context
    shared = share.for_region(region) if share is not None else None
    above = carry.take(region) if carry is not None else None
    waits = seam is not None and region.y0 == seam.y0
    if block.carried and above is None and not waits and tiling.rows_below(
            carry.boxes if carry is not None else grid.boxes(), region.y0) > 0:
        raise EdgesegError(f"block {region} was read for a band from the block above, "
                           "which was not handed down")
    below = carry.rows(region, grid.height) if carry is not None else 0
    mask, band = seg.blend_region(block.pixels, (bb.y0, bb.x0), grid.padded, region, shared,
                                  above, below, mask=True, seam=seam.tiles if waits else None,
                                  tiles_down=True)
    if carry is not None:
        carry.put(region, band)
    if block.invalid is None:
        return mask, 0
    part = block.invalid[region.y0 - bb.y0 : region.y1 - bb.y0, region.x0 - bb.x0 : region.x1 - bb.x0]
    mask[part] = IGNORE_INDEX
    n = min(seam.rows, region.height) if waits else 0
    if n and part[:n].any():
        if seam.invalid is None:
            seam.invalid = np.zeros((seam.rows, seam.width), bool)
        seam.invalid[:n, region.x0 : region.x1] |= part[:n]
    return mask, int(np.count_nonzero(part))
