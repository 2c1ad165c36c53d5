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
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firmware_bridge import IGNORE_INDEX
from firmware_bridge.errors import EdgesegError, require
from firmware_bridge.runtime import tiling

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

    def context(self, region: tiling.Box, boxes: list[tiling.Box] | None = None) -> tiling.Box:
        """The window of pixels that the tiles touching ``region`` cover."""
        return tiling.bounding_box(tiling.boxes_touching(boxes or self.boxes(), region))

    def regions(self, block: int) -> list[tiling.Box]:
        """The scene's output blocks, row-major."""
        return tiling.block_regions(self.height, self.width, block)


@dataclass
class BlockInput:
    """What :func:`read_block` read for one block: its context window, ready for the model."""

    context: tiling.Box
    pixels: np.ndarray
    invalid: np.ndarray | None


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


def read_block(seg, ds, bands: list[int], grid: SceneGrid, region: tiling.Box, src: Path,
               boxes: list[tiling.Box] | None = None) -> BlockInput:
    """Read a block's context window, fill pixels without data and pad it to whole tiles.

    Raises:
        EdgesegError: When the window cannot be read (names the file).
    """
    rasterio = require("rasterio", "geo")
    from rasterio.windows import Window

    bb = grid.context(region, boxes)
    window = Window(bb.x0, bb.y0, min(bb.x1, grid.width) - bb.x0, min(bb.y1, grid.height) - bb.y0)
    try:
        data = ds.read(bands, window=window)
    except rasterio.errors.RasterioError as exc:
        raise EdgesegError(f"{src}: reading window {window} failed ({exc})") from exc
    data, invalid = seg.clean(np.moveaxis(data, 0, -1), ds.nodata)
    return BlockInput(bb, tiling.pad_to_tile(data, (bb.height, bb.width)), invalid)


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


def predict_block(seg, grid: SceneGrid, region: tiling.Box, block: BlockInput,
                  share: RowShare | None = None) -> tuple[np.ndarray, int]:
    """The mask of one block, and how many of its pixels have no data (255 in the mask).

    Args:
        seg: The model.
        grid: The scene's tile grid.
        region: The block.
        block: Its context window, from :func:`read_block`.
        share: Tiles shared with the previous block of the row (see :class:`RowShare`).
    """
    bb = block.context
    shared = share.for_region(region) if share is not None else None
    mask = seg.to_mask(seg.predict_region(block.pixels, (bb.y0, bb.x0), grid.padded, region,
                                          shared))
    if block.invalid is None:
        return mask, 0
    part = block.invalid[region.y0 - bb.y0 : region.y1 - bb.y0, region.x0 - bb.x0 : region.x1 - bb.x0]
    mask[part] = IGNORE_INDEX
    return mask, int(np.count_nonzero(part))
