"""Prediction over files: GeoTIFFs streamed window by window, ordinary images to PNG.

A GeoTIFF is cut into output blocks (``block x block``, aligned to the 256-pixel tiles of the
output file). For each block, the model tiles of the *whole scene's* tile grid that touch it
are read in one window (the block plus its overlap context), predicted and blended, and only
the block is written. The result therefore equals tiling the whole scene in memory, while
memory holds one block and its context regardless of the scene's size; GDAL's block cache is
capped for the same reason. The mask is a tiled, deflate-compressed GeoTIFF with the source's
CRS and transform, written through :func:`firmware_bridge.fsutil.atomic_path`, so a failure
leaves no partial file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from firmware_bridge import IGNORE_INDEX
from firmware_bridge.errors import EdgesegError, require
from firmware_bridge.fsutil import atomic_path
from firmware_bridge.io.classes import ClassTable, parse_colour
from firmware_bridge.io.images import (
    GEOTIFF_SUFFIXES,
    mask_profile,
    overlay,
    read_raster,
    write_mask_png,
    write_png,
)
from firmware_bridge.progress import progress
from firmware_bridge.runtime import tiling
from firmware_bridge.runtime.segmenter import Segmenter

DEFAULT_BLOCK = 1024
GDAL_CACHE_MB = 64


def class_table(seg: Segmenter) -> ClassTable:
    """The model's classes with the metadata's colours (made-up ones where it has none)."""
    names = seg.class_names
    colours = [parse_colour(c) for c in seg.meta.colours]
    if len(colours) == len(names) - 1 and seg.single_channel:
        colours = [(0, 0, 0), *colours]
    return ClassTable(names, colours if len(colours) == len(names) else [])


def _bands(path: Path, count: int, bands: Sequence[int] | None, channels: int) -> list[int]:
    chosen = list(bands) if bands else list(range(1, count + 1))
    bad = [b for b in chosen if not 1 <= b <= count]
    if bad:
        raise EdgesegError(f"{path}: has {count} bands, cannot select band(s) {bad} (1-based)")
    if len(chosen) != channels:
        raise EdgesegError(f"{path}: {len(chosen)} band(s) selected but the model takes "
                           f"{channels}: pass --bands with {channels} band numbers")
    return chosen


def _read(ds, bands: list[int], window, src: Path) -> np.ndarray:
    rasterio = require("rasterio", "geo")
    try:
        return ds.read(bands, window=window)
    except rasterio.errors.RasterioError as exc:
        raise EdgesegError(f"{src}: reading window {window} failed ({exc})") from exc


def predict_geotiff(
    seg: Segmenter, src: str | Path, dst: str | Path, bands: Sequence[int] | None = None,
    block: int = DEFAULT_BLOCK, show_progress: bool = False,
) -> Path:
    """Predict a (Geo)TIFF of any size into a georeferenced uint8 mask GeoTIFF, streamed.

    Args:
        seg: The model.
        src: Input raster.
        dst: Output ``.tif``; its folder must exist.
        bands: 1-based bands to feed the model, in order (``None``: all).
        block: Output block edge in pixels (a multiple of 256 keeps writes tile-aligned).
        show_progress: Show a progress bar over blocks.

    Returns:
        ``dst``.

    Raises:
        EdgesegError: For an unreadable raster, wrong bands, a too-small scene or an
            unwritable destination; no output file is left behind.
        MissingDependencyError: Without rasterio (``pip install 'edgeseg[geo]'``).
    """
    rasterio = require("rasterio", "geo")
    from rasterio.windows import Window

    src, dst = Path(src), Path(dst)
    if block < 1:
        raise EdgesegError(f"block must be a positive number of pixels, got {block}")
    if not src.is_file():
        raise EdgesegError(f"{src}: no such file")
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        try:
            ds = rasterio.open(src)
        except rasterio.errors.RasterioIOError as exc:
            raise EdgesegError(f"{src}: unreadable raster ({exc})") from exc
        with ds:
            height, width = ds.height, ds.width
            chosen = _bands(src, ds.count, bands, seg.channels)
            if min(height, width) < seg.options.min_size:
                raise EdgesegError(f"{src}: {width}x{height} is smaller than "
                                   f"{seg.options.min_size} px, too little for the model")
            scene = tiling.Box(0, 0, max(height, seg.tile[0]), max(width, seg.tile[1]))
            boxes = tiling.tile_boxes(scene.y1, scene.x1, seg.tile, seg.overlap)
            regions = tiling.block_regions(height, width, block)
            colours = class_table(seg).palette()
            with atomic_path(dst) as tmp, \
                    rasterio.open(tmp, "w", **mask_profile(ds.profile, height, width)) as out:
                for region in progress(regions, len(regions), src.name, show_progress, "block"):
                    bb = tiling.bounding_box(tiling.boxes_touching(boxes, region))
                    window = Window(bb.x0, bb.y0, min(bb.x1, width) - bb.x0,
                                    min(bb.y1, height) - bb.y0)
                    data = np.moveaxis(_read(ds, chosen, window, src), 0, -1)
                    pixels = tiling.pad_to_tile(data, (bb.height, bb.width))
                    probs = seg.predict_region(pixels, (bb.y0, bb.x0), scene[2:], region)
                    mask = seg.to_mask(probs)
                    if ds.nodata is not None:
                        part = data[region.y0 - bb.y0 : region.y1 - bb.y0,
                                    region.x0 - bb.x0 : region.x1 - bb.x0]
                        mask[np.all(part == ds.nodata, axis=-1)] = IGNORE_INDEX
                    out.write(mask, 1, window=Window(region.x0, region.y0, region.width,
                                                     region.height))
                out.write_colormap(1, {i: (*c, 255) for i, c in enumerate(colours)})
    return dst


def predict_image(
    seg: Segmenter, src: str | Path, out_dir: str | Path, bands: Sequence[int] | None = None,
    with_overlay: bool = False,
) -> list[Path]:
    """Predict an ordinary image (PNG, JPEG, ...) into ``<stem>_mask.png`` (palette PNG).

    Args:
        seg: The model.
        src: Input image.
        out_dir: Existing output folder.
        bands: 1-based bands to feed the model.
        with_overlay: Also write ``<stem>_overlay.png``, the class colours over the image.

    Returns:
        The files written.

    Raises:
        EdgesegError: For unreadable input, wrong bands, or an unwritable folder.
    """
    src, out_dir = Path(src), Path(out_dir)
    image = read_raster(src, bands).array
    mask = seg.predict_tiled(image).mask
    table = class_table(seg)
    written = [out_dir / f"{src.stem}_mask.png"]
    write_mask_png(written[0], mask, table.palette())
    if with_overlay:
        written.append(out_dir / f"{src.stem}_overlay.png")
        write_png(written[1], overlay(image, table.colourise(mask)))
    return written


def predict_file(
    seg: Segmenter, src: str | Path, out_dir: str | Path, bands: Sequence[int] | None = None,
    with_overlay: bool = False, block: int = DEFAULT_BLOCK, show_progress: bool = False,
) -> list[Path]:
    """Predict one input file into ``out_dir``: GeoTIFF -> ``<stem>_mask.tif``, else PNG.

    Returns:
        The files written (an overlay is made for ordinary images only).
    """
    src = Path(src)
    if src.suffix.lower() in GEOTIFF_SUFFIXES:
        dst = Path(out_dir) / f"{src.stem}_mask.tif"
        return [predict_geotiff(seg, src, dst, bands, block, show_progress)]
    return predict_image(seg, src, out_dir, bands, with_overlay)
