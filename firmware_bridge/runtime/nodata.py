"""Pixels without data: NaN or infinite values, and a raster's nodata value.

Such pixels are never given a class. Before the model sees them they are filled with the
normalisation mean (an input of 0, the least informative value), so they neither poison the
tile's numbers (a NaN spreads through every convolution it touches) nor warn; after the
model, their mask value is the ignore value 255. Fractions and metrics leave them out and
count them apart.
"""

from __future__ import annotations

import numpy as np


def invalid_pixels(image: np.ndarray, nodata: float | None = None) -> np.ndarray | None:
    """Where an ``HxWxC`` image has no data.

    Args:
        image: Pixels, channels last, any dtype.
        nodata: The raster's nodata value: a pixel whose every band equals it has no data.

    Returns:
        ``HxW`` bool, True where any band is NaN or infinite or every band equals ``nodata``;
        ``None`` when every pixel holds data (the common case, without an allocation kept).
    """
    bad = None
    if np.issubdtype(image.dtype, np.floating):
        finite = np.isfinite(image).all(axis=-1)
        if not finite.all():
            bad = ~finite
    if nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata)):
        equal = (image == nodata).all(axis=-1)
        if equal.any():
            bad = equal if bad is None else bad | equal
    return bad


def fill_invalid(image: np.ndarray, invalid: np.ndarray | None, value: np.ndarray) -> np.ndarray:
    """A copy of ``image`` with the ``invalid`` pixels set to ``value`` (``image`` when none).

    Args:
        image: ``HxWxC`` pixels.
        invalid: ``HxW`` bool from :func:`invalid_pixels`, or ``None``.
        value: One value per band (or one for all), in the image's units.

    Returns:
        The filled pixels, same dtype (the value is cast and clipped to it).
    """
    if invalid is None:
        return image
    out = image.copy()
    fill = np.broadcast_to(np.asarray(value, dtype=np.float64), (image.shape[-1],))
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        fill = np.clip(np.round(fill), info.min, info.max)
    out[invalid] = fill.astype(image.dtype)
    return out
