"""Prediction over files: GeoTIFFs streamed window by window, ordinary images to PNG.

A GeoTIFF is cut into output blocks (``block`` columns, aligned to the 256-pixel tiles of the
output file; rows cut on tile starts about ``block`` apart); the next block is read and the
previous one written while one is predicted (:func:`firmware_bridge.runtime.pipeline.stream`).
For each block, the model tiles of the *whole scene's* tile grid that touch it are read in one
window (the block plus its overlap context), predicted and blended, and only the block is
written. Every tile is predicted once: a tile on the border of two blocks of a row is kept for
the block on the right (:class:`~firmware_bridge.io.blocks.RowShare`), and the scores of the
tiles reaching the ``overlap`` rows below a row of blocks are handed to the row beneath
(:class:`~firmware_bridge.io.blocks.BandCarry`), which adds them first. The result therefore
equals tiling the whole scene in memory, while memory holds one block, its context and that
band regardless of the scene's height; GDAL's block cache is capped for the same reason. The mask is a tiled,
deflate-compressed GeoTIFF with the source's CRS and transform, written through
:func:`firmware_bridge.fsutil.atomic_path` and read back once closed
(:mod:`firmware_bridge.io.geotiff`), so a failure (a full disk included) leaves no partial
file and ends in one line naming the mask.

Pixels without data (NaN, infinite, or the raster's nodata value in every band) are 255 in
the mask, which is also the mask file's nodata value; :class:`Prediction` counts them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from firmware_bridge.errors import EdgesegError, require
from firmware_bridge.fsutil import atomic_path
from firmware_bridge.io.blocks import (
    BandCarry,
    BlockInput,
    RowShare,
    SceneGrid,
    WholeTiles,
    WindowBuffers,
    file_tiles,
    open_raster,
    predict_block,
    raster_statistics,
    read_block,
    scene_bands,
)
from firmware_bridge.io.classes import ClassTable, parse_colour
from firmware_bridge.io.geotiff import mask_writer
from firmware_bridge.io.images import (
    GEOTIFF_SUFFIXES,
    mask_profile,
    model_bands,
    overlay,
    read_raster,
    write_mask_png,
    write_png,
)
from firmware_bridge.progress import progress
from firmware_bridge.runtime import tiling
from firmware_bridge.runtime.pipeline import stream
from firmware_bridge.runtime.segmenter import Segmenter

DEFAULT_BLOCK = 1024


@dataclass
class Prediction:
    """What predicting one input wrote.

    Attributes:
        files: The files written (mask first, then the overlay when asked for).
        pixels: Pixels of the input.
        nodata: Pixels without data (255 in the mask, in no class).
        notes: One-line notes for the user (an alpha band dropped, ...).
    """

    files: list[Path] = field(default_factory=list)
    pixels: int = 0
    nodata: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def mask(self) -> Path:
        """The mask file."""
        return self.files[0]


def output_stems(inputs: Sequence[str | Path]) -> list[str]:
    """Output name stems for inputs predicted into one folder, never two the same.

    ``a.png`` gives ``a``; when two inputs share a stem (``a.png`` and ``a.jpg``) both keep
    their suffix (``a_png``, ``a_jpg``).

    Args:
        inputs: Input paths, in order.

    Returns:
        One stem per input.

    Raises:
        EdgesegError: When two inputs would still write the same file (the same file name
            from two folders, or an input given twice).
    """
    paths = [Path(p) for p in inputs]
    stems = [p.stem for p in paths]
    out = [f"{p.stem}_{p.suffix.lstrip('.').lower()}" if stems.count(p.stem) > 1 and p.suffix
           else p.stem for p in paths]
    seen: dict[str, Path] = {}
    for path, stem in zip(paths, out, strict=True):
        if stem in seen:
            raise EdgesegError(f"{path} and {seen[stem]} would write the same mask "
                               f"({stem}_mask): predict them into different --out folders")
        seen[stem] = path
    return out


def class_table(seg: Segmenter) -> ClassTable:
    """The model's class table from its metadata: classes, colours and ignore rows.

    Classes without colours in the metadata get made-up ones; the ignore rows are those of
    the class table the model was trained with, so its masks validate without the CSV.
    """
    names = seg.class_names
    colours = [parse_colour(c) for c in seg.meta.colours]
    if len(colours) == len(names) - 1 and (seg.single_channel or seg.multilabel):
        colours = [(0, 0, 0), *colours]
    ignore = [parse_colour(c) for c in seg.meta.ignore_colours]
    ignore_names = list(seg.meta.ignore_names)[: len(ignore)]
    ignore_names += [f"ignore_{i}" for i in range(len(ignore_names), len(ignore))]
    return ClassTable(names, colours if len(colours) == len(names) else [], ignore, ignore_names)


def clear_background(seg: Segmenter) -> bool:
    """Whether overlays leave class 0 untinted: the model carries no colour for it.

    That is a model without colours (a foreign model, whose classes get made-up colours: a
    tint over the whole photo would hide it), and the background or ``none`` label that a
    one-channel sigmoid or a multilabel model adds to the classes it colours.
    """
    return len(seg.meta.colours) != seg.num_classes


def overlay_image(seg: Segmenter, image: np.ndarray, mask: np.ndarray,
                  table: ClassTable | None = None) -> np.ndarray:
    """The class colours over an image, class 0 left clear where the model gives it no colour.

    Args:
        seg: The model.
        image: ``HxWxC`` pixels in the image's own band order.
        mask: Its ``HxW`` mask.
        table: The model's class table (``None``: :func:`class_table`).

    Returns:
        ``HxWx3`` uint8 overlay.
    """
    table = table or class_table(seg)
    clear = mask == 0 if clear_background(seg) else None
    return overlay(image, table.colourise(mask), clear=clear)


def predict_geotiff(
    seg: Segmenter, src: str | Path, dst: str | Path, bands: Sequence[int] | None = None,
    block: int = DEFAULT_BLOCK, show_progress: bool = False,
) -> Prediction:
    """Predict a (Geo)TIFF of any size into a georeferenced uint8 mask GeoTIFF, streamed.

    Args:
        seg: The model.
        src: Input raster.
        dst: Output ``.tif``; its folder must exist.
        bands: 1-based bands to feed the model, in order (``None``: all).
        block: Output block edge in pixels: columns are cut every ``block`` (a multiple of 256
            keeps writes tile-aligned), rows every whole number of tile strides, at most ``block``
            (one stride if less).
        show_progress: Show a progress bar over blocks.

    Returns:
        ``dst`` and the pixel counts.

    Raises:
        EdgesegError: For an unreadable raster, wrong bands, a too-small scene or an
            unwritable destination; no output file is left behind.
        MissingDependencyError: Without rasterio (``pip install 'edgeseg[geo]'``).
    """
    require("rasterio", "geo")
    from rasterio.windows import Window

    src, dst = Path(src), Path(dst)
    if block < 1:
        raise EdgesegError(f"block must be a positive number of pixels, got {block}")
    with open_raster(src) as ds:
        height, width = ds.height, ds.width
        chosen = scene_bands(src, ds, bands, seg)
        if seg.per_image:
            seg = seg.for_scene(raster_statistics(seg, ds, chosen, src))
        grid = SceneGrid(height, width, seg.tile, seg.overlap)
        boxes = grid.boxes()
        regions = grid.stream_regions(block)
        colours = class_table(seg).palette()
        nodata = 0

        share = RowShare()
        carry = BandCarry(boxes)
        buffers = WindowBuffers()

        def compute(region: tiling.Box, data: BlockInput) -> np.ndarray:
            nonlocal nodata
            mask, missing = predict_block(seg, grid, region, data, share, carry)
            buffers.give(data.buffer)
            nodata += missing
            return mask

        out_profile = mask_profile(ds.profile, height, width)
        with atomic_path(dst) as tmp, mask_writer(tmp, out_profile, colours) as out:

            clock = seg.clock

            def read(region: tiling.Box) -> BlockInput:
                t0 = time.perf_counter() if clock else 0.0
                data = read_block(seg, ds, chosen, grid, region, src, boxes,
                                  carried=region.y0 > 0, buffers=buffers)
                if clock:
                    clock.add("read", t0)
                return data

            def write_rows(box: tiling.Box, mask: np.ndarray) -> None:
                out.write(mask, 1, window=Window(box.x0, box.y0, box.width, box.height))

            rows = WholeTiles(height, width, file_tiles(out_profile, height, width),
                              write_rows)

            def write(region: tiling.Box, mask: np.ndarray) -> None:
                t0 = time.perf_counter() if clock else 0.0
                rows.add(region, mask)
                if clock:
                    clock.add("write", t0)

            stream(progress(regions, len(regions), src.name, show_progress, "block"),
                   read, compute, write, pipelined=seg.options.pipeline)
            if not rows.complete:
                left = sorted(rows.partial)
                raise EdgesegError(f"{src}: {len(left)} tiles of the mask were left unwritten "
                                   f"(first at row, column {left[0]})")
    return Prediction([dst], height * width, nodata)


def predict_image(
    seg: Segmenter, src: str | Path, out_dir: str | Path, bands: Sequence[int] | None = None,
    with_overlay: bool = False, stem: str | None = None,
) -> Prediction:
    """Predict an ordinary image (PNG, JPEG, ...) into ``<stem>_mask.png`` (palette PNG).

    Args:
        seg: The model.
        src: Input image.
        out_dir: Existing output folder.
        bands: 1-based bands to feed the model (``None``: all; an alpha band one past the
            model's bands is dropped, with a note).
        with_overlay: Also write ``<stem>_overlay.png``, the class colours over the image in
            its own band order whatever ``bands`` feeds the model; class 0 is left clear when
            the model gives it no colour (:func:`clear_background`).
        stem: Output name stem (default: the input's).

    Returns:
        The files written and the pixel counts.

    Raises:
        EdgesegError: For unreadable input, wrong bands, or an unwritable folder; the message
            names the file.
    """
    src, out_dir = Path(src), Path(out_dir)
    stem = stem or src.stem
    raster = read_raster(src)
    pixels, note = model_bands(src, raster, bands, seg.channels)
    nodata = raster.profile.get("nodata")
    try:
        result = seg.predict_tiled(pixels, nodata=nodata)
    except EdgesegError as exc:
        raise EdgesegError(f"{src}: {exc}") from None
    table = class_table(seg)
    written = [out_dir / f"{stem}_mask.png"]
    write_mask_png(written[0], result.mask, table.palette())
    if with_overlay:
        written.append(out_dir / f"{stem}_overlay.png")
        write_png(written[1], overlay_image(seg, raster.array, result.mask, table))
    return Prediction(written, int(result.mask.size), result.nodata, [note] if note else [])


def predict_file(
    seg: Segmenter, src: str | Path, out_dir: str | Path, bands: Sequence[int] | None = None,
    with_overlay: bool = False, block: int = DEFAULT_BLOCK, show_progress: bool = False,
    stem: str | None = None,
) -> Prediction:
    """Predict one input file into ``out_dir``: GeoTIFF -> ``<stem>_mask.tif``, else PNG.

    Args:
        seg: The model.
        src: Input file.
        out_dir: Existing output folder.
        bands: 1-based bands to feed the model.
        with_overlay: Also write an overlay (ordinary images only).
        block: GeoTIFF streaming block edge.
        show_progress: Progress bar over a GeoTIFF's blocks.
        stem: Output name stem (default: the input's; see :func:`output_stems`).

    Returns:
        The files written and the pixel counts.
    """
    src = Path(src)
    stem = stem or src.stem
    if src.suffix.lower() in GEOTIFF_SUFFIXES:
        dst = Path(out_dir) / f"{stem}_mask.tif"
        return predict_geotiff(seg, src, dst, bands, block, show_progress)
    return predict_image(seg, src, out_dir, bands, with_overlay, stem)
