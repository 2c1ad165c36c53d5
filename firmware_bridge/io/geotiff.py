"""Mask GeoTIFFs that are never taken for finished when GDAL failed to write them.

GDAL writes the blocks still in its cache and the TIFF directory when the dataset is closed.
A failure there (a full disk, a quota) reaches neither rasterio's ``close`` nor any return
value: libtiff only prints it, and the truncated file would be renamed into place. So a mask
is read back after it is closed: every block must be present in the file and decode. Reading
the deflate-compressed ``uint8`` blocks costs a small fraction of predicting them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from firmware_bridge.errors import require
from firmware_bridge.fsutil import root_cause


def create_mask(path: str | Path, profile: dict[str, Any],
                colours: Sequence[tuple[int, int, int]] | None = None) -> Any:
    """Open a new mask GeoTIFF for writing; finish it with :func:`close_mask`.

    Args:
        path: The file to create (a temporary name from :func:`firmware_bridge.fsutil.new_part`).
        profile: rasterio profile (:func:`firmware_bridge.io.images.mask_profile`).
        colours: RGB per class, stored as the band's colour map (before any pixels: GDAL
            cannot change the colour interpretation after them).

    Returns:
        The open ``rasterio`` dataset.

    Raises:
        OSError: When GDAL cannot create the file (rasterio's errors are ``OSError``).
        MissingDependencyError: Without rasterio (``pip install 'edgeseg[geo]'``).
    """
    rasterio = require("rasterio", "geo")
    out = rasterio.open(path, "w", **profile)
    if colours is not None:
        out.write_colormap(1, {i: (*c, 255) for i, c in enumerate(colours)})
    return out


def close_mask(out: Any) -> None:
    """Close a mask opened by :func:`create_mask` and check that it reads back whole.

    Args:
        out: The dataset; closed whatever happens.

    Raises:
        OSError: When a block is missing from the file or does not decode (GDAL failed to
            write it while closing).
    """
    path = out.name
    out.close()
    check_readable(path)


def check_readable(path: str | Path) -> None:
    """Read every block of a GeoTIFF's first band; each must be stored and decode.

    Args:
        path: The file.

    Raises:
        OSError: For a file that does not open, a block that was never stored (GDAL would
            read it as empty) or one that does not decode.
    """
    rasterio = require("rasterio", "geo")
    try:
        with rasterio.open(path) as ds:
            for (row, col), window in ds.block_windows(1):
                if ds.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=1) is None:
                    raise OSError(f"block {row},{col} is missing from the written file")
                ds.read(1, window=window)
    except rasterio.errors.RasterioError as exc:
        raise OSError(f"the written file does not read back ({root_cause(exc)})") from None


@contextlib.contextmanager
def mask_writer(path: str | Path, profile: dict[str, Any],
                colours: Sequence[tuple[int, int, int]] | None = None) -> Iterator[Any]:
    """:func:`create_mask`, then :func:`close_mask` when the block ends without an error.

    Args:
        path: The file to create.
        profile: rasterio profile of the mask.
        colours: RGB per class for the colour map (``None``: none).

    Yields:
        The open dataset.

    Raises:
        OSError: When writing, closing or reading back fails (inside
            :func:`firmware_bridge.fsutil.atomic_path` this becomes the one-line error
            naming the final file).
    """
    out = create_mask(path, profile, colours)
    try:
        yield out
    except BaseException:
        out.close()
        raise
    close_mask(out)
