"""Image and mask I/O shared by training and the device: numpy + pillow, rasterio for GeoTIFF.

Arrays are always ``HxWxC`` (images) or ``HxW`` (masks). Band numbers are 1-based, as in
GDAL and rasterio. Rasters above ``MAX_PIXELS`` are refused here: stream them window by
window instead (``firmware_bridge.io.raster``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from firmware_bridge.errors import EdgesegError, require
from firmware_bridge.fsutil import atomic_path
from firmware_bridge.io.geotiff import mask_writer

MAX_PIXELS = 64_000_000
"""Largest image decoded whole (about 8k x 8k); larger ones are read windowed."""
GEOTIFF_SUFFIXES = (".tif", ".tiff")
CONVERT_MODES = {"P": "RGB", "PA": "RGBA", "CMYK": "RGB", "YCbCr": "RGB", "1": "L"}
"""Pillow modes decoded to plain bands (greyscale with alpha stays two bands)."""


@dataclass
class Raster:
    """An image with what is needed to write a result back in place.

    Attributes:
        array: ``HxWxC`` pixels in their native dtype (uint8, uint16, float32...).
        profile: rasterio profile (CRS, transform, ...) or empty for plain images.
        valid: ``HxW`` bool, False where every selected band equals nodata; ``None`` if no nodata.
        alpha: The last band read is the alpha (transparency) band of an ordinary image
            (PNG, WebP, ...); never set for TIFFs, whose fourth band of four is as often a
            near-infrared band.

    """

    array: np.ndarray
    profile: dict[str, Any] = field(default_factory=dict)
    valid: np.ndarray | None = None
    alpha: bool = False


def _check_size(path: Path, height: int, width: int) -> None:
    if height * width > MAX_PIXELS:
        raise EdgesegError(
            f"{path}: {width}x{height} is too large to decode at once; predict it windowed "
            "(edgeseg-run predict streams GeoTIFFs) or split it"
        )


ALPHA_MODES = ("RGBA", "LA", "La", "RGBa")
"""Pillow modes whose last band is alpha."""


def _select_bands(path: Path, count: int, bands: Sequence[int] | None) -> list[int]:
    chosen = list(bands) if bands else list(range(1, count + 1))
    bad = [b for b in chosen if not 1 <= b <= count]
    if bad:
        raise EdgesegError(f"{path}: has {count} bands, cannot select band(s) {bad} (1-based)")
    return chosen


def select_bands(path: str | Path, array: np.ndarray, bands: Sequence[int] | None) -> np.ndarray:
    """Bands of an ``HxWxC`` image, 1-based and in the order given (``None``: all).

    Raises:
        EdgesegError: For a band out of range (the message names ``path``).
    """
    chosen = _select_bands(Path(path), array.shape[2], bands)
    if chosen == list(range(1, array.shape[2] + 1)):
        return array
    return np.ascontiguousarray(array[..., [b - 1 for b in chosen]])


def model_bands(path: str | Path, raster: Raster, bands: Sequence[int] | None,
                channels: int) -> tuple[np.ndarray, str]:
    """The bands of an image to feed a model of ``channels`` bands, and a note when alpha went.

    Without ``bands``, an image whose last band is alpha and that has one band more than
    the model takes loses its alpha band (RGBA into an RGB model); any other choice is the
    caller's (``bands``).

    Args:
        path: The image file (for messages).
        raster: The image, every band read.
        bands: 1-based bands to keep, in order (``None``: all, less a surplus alpha band).
        channels: Bands the model takes.

    Returns:
        ``(pixels, note)``; ``note`` is ``""`` unless the alpha band was dropped.

    Raises:
        EdgesegError: For a band out of range.
    """
    array = raster.array
    if bands is None and raster.alpha and array.shape[2] == channels + 1:
        note = (f"note: {path}: alpha band dropped (the model takes {channels} band(s); "
                "--bands chooses others)")
        return np.ascontiguousarray(array[..., :channels]), note
    return select_bands(path, array, bands), ""


def _read_pil(path: Path, bands: Sequence[int] | None) -> Raster:
    try:
        with Image.open(path) as im:
            _check_size(path, im.height, im.width)
            if im.mode in CONVERT_MODES:  # greyscale(+alpha) stays 1 (2) bands
                im = im.convert(CONVERT_MODES[im.mode])
            # a TIFF's fourth band is often another band (near infrared), whatever its tag says
            alpha = im.mode in ALPHA_MODES and path.suffix.lower() not in GEOTIFF_SUFFIXES
            arr = np.asarray(im)
    except Image.DecompressionBombError as exc:
        raise EdgesegError(f"{path}: too large to decode at once ({exc})") from exc
    except (OSError, SyntaxError) as exc:
        raise EdgesegError(f"{path}: unreadable image ({exc})") from exc
    if arr.ndim == 2:
        arr = arr[..., None]
    chosen = _select_bands(path, arr.shape[2], bands)
    return Raster(np.ascontiguousarray(arr[..., [b - 1 for b in chosen]]),
                  alpha=alpha and chosen[-1] == arr.shape[2])


def _read_rasterio(path: Path, bands: Sequence[int] | None) -> Raster:
    rasterio = require("rasterio", "geo")
    try:
        with rasterio.open(path) as src:
            _check_size(path, src.height, src.width)
            chosen = _select_bands(path, src.count, bands)
            data = src.read(chosen)
            profile = dict(src.profile)
            nodata = src.nodata
    except rasterio.errors.RasterioIOError as exc:
        raise EdgesegError(f"{path}: unreadable raster ({exc})") from exc
    valid = None if nodata is None else ~np.all(data == nodata, axis=0)
    return Raster(np.ascontiguousarray(np.moveaxis(data, 0, -1)), profile, valid)


def read_raster(path: str | Path, bands: Sequence[int] | None = None) -> Raster:
    """Read an image with its georeferencing (GeoTIFF through rasterio when installed).

    Args:
        path: JPEG, PNG, BMP or (Geo)TIFF file.
        bands: 1-based band numbers to keep, in order; ``None`` keeps all.

    Returns:
        The pixels, profile and nodata validity.

    Raises:
        EdgesegError: For a missing, unreadable or too large file, or bands out of range.

    """
    path = Path(path)
    if not path.is_file():
        raise EdgesegError(f"{path}: no such file")
    if path.suffix.lower() in GEOTIFF_SUFFIXES:
        try:
            return _read_rasterio(path, bands)
        except ImportError:
            pass
    return _read_pil(path, bands)


def read_image(path: str | Path, bands: Sequence[int] | None = None) -> np.ndarray:
    """Read an image as ``HxWxC`` in its native dtype (see :func:`read_raster`)."""
    return read_raster(path, bands).array


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask file: ``HxW`` indices, or ``HxWx3`` RGB colours (palettes decoded to RGB).

    Palette PNGs are always converted to RGB, because the same palette index can stand for
    different colours in different files.

    Raises:
        EdgesegError: For a missing or unreadable file.

    """
    arr = read_image(path)
    if arr.shape[2] == 1:
        return arr[..., 0]
    return arr[..., :3]


def write_png(path: str | Path, array: np.ndarray) -> None:
    """Write an ``HxW`` or ``HxWx3`` uint8 array as PNG, atomically.

    Raises:
        EdgesegError: For data that is not uint8, or a file that cannot be written (disk
            full, read-only...; the message names it and nothing is left).
    """
    if array.dtype != np.uint8:
        raise EdgesegError(f"PNG output needs uint8 data, got {array.dtype}")
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def write_mask_png(path: str | Path, mask: np.ndarray, colours: Sequence[tuple] | None = None) -> None:
    """Write a class-index mask as PNG: greyscale indices, or a palette PNG when colours given.

    Args:
        path: Output ``.png``.
        mask: ``HxW`` uint8 class indices (255 = ignore).
        colours: RGB per class; the palette keeps the index values, so the file still reads
            back as indices with ``Image.open(...)`` in mode ``P``.

    Raises:
        EdgesegError: When the file cannot be written (the message names it; nothing is left).

    """
    if colours is None:
        write_png(path, mask.astype(np.uint8))
        return
    im = mask_image(mask, colours)
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


def mask_image(mask: np.ndarray, colours: Sequence[tuple]) -> Image.Image:
    """A class-index mask as a palette image whose pixel values stay the class indices.

    Args:
        mask: ``HxW`` class indices (255 = ignore).
        colours: RGB per class.

    Returns:
        The Pillow image in mode ``P``.
    """
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: len(colours)] = np.asarray(colours, dtype=np.uint8)
    im = Image.fromarray(mask.astype(np.uint8), mode="P")
    im.putpalette(palette.ravel().tolist())
    return im


def write_mask_geotiff(path: str | Path, mask: np.ndarray, profile: dict[str, Any]) -> None:
    """Write a class-index mask as a tiled, compressed GeoTIFF with the source's georeferencing.

    Args:
        path: Output ``.tif``.
        mask: ``HxW`` uint8 class indices.
        profile: rasterio profile of the source raster (CRS and transform are kept).

    Raises:
        EdgesegError: When the file cannot be written (the message names it).
        MissingDependencyError: Without rasterio (``pip install 'edgeseg[geo]'``).

    """
    out = mask_profile(profile, mask.shape[0], mask.shape[1])
    with atomic_path(path) as tmp, mask_writer(tmp, out) as dst:
        dst.write(mask.astype(np.uint8), 1)


def mask_profile(profile: dict[str, Any], height: int, width: int) -> dict[str, Any]:
    """Rasterio profile for a single-band uint8 mask matching a source raster."""
    keep = {k: profile[k] for k in ("crs", "transform") if profile.get(k) is not None}
    out = {
        "driver": "GTiff", "height": height, "width": width, "count": 1, "dtype": "uint8",
        "nodata": 255, "compress": "deflate", "tiled": True,
    }
    if height >= 256 and width >= 256:
        out.update(blockxsize=256, blockysize=256)
    else:
        out["tiled"] = False
    out.update(keep)
    return out


def overlay(image: np.ndarray, colour_mask: np.ndarray, alpha: float = 0.45,
            clear: np.ndarray | None = None) -> np.ndarray:
    """Blend an RGB colour mask over an image (first three bands, scaled to uint8).

    Args:
        image: ``HxWxC`` image (any dtype; scaled by its max for non-uint8), in its own band
            order (bands 1, 2, 3 shown as red, green, blue; one band as grey).
        colour_mask: ``HxWx3`` uint8 colours.
        alpha: Weight of the mask.
        clear: ``HxW`` bool, True where the image is shown as it is (no colour over it).

    Returns:
        ``HxWx3`` uint8 overlay.

    """
    rgb = image[..., :3] if image.shape[2] >= 3 else np.repeat(image[..., :1], 3, axis=2)
    if rgb.dtype != np.uint8:
        rgb = np.nan_to_num(rgb.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        top = float(rgb.max()) or 1.0
        rgb = (rgb.clip(0, None) * (255.0 / top)).astype(np.uint8)
    blend = (1 - alpha) * rgb.astype(np.float32) + alpha * colour_mask.astype(np.float32)
    out = blend.clip(0, 255).astype(np.uint8)
    if clear is not None:
        out[clear] = rgb[clear]
    return out
