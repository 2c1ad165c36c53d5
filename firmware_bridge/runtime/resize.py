"""Whole images through a model of one input size: resize in, predict once, map back.

Three ways for an image of another size to meet a model of input ``th x tw`` (``--resize``):

* ``tile`` (the default): blended, overlapping tiles at the image's own resolution
  (:mod:`firmware_bridge.runtime.tiling`); the way for rasters, whose pixels have a ground size
  the model was trained at. A fixed-size model tiles with its input size.
* ``stretch``: the image is resized to ``th x tw`` (aspect ratio not kept), predicted once, and
  the scores are resized back to the image's size.
* ``fit``: the image is resized by one factor ``s = min(th / H, tw / W)`` to
  ``round(H * s) x round(W * s)`` (aspect ratio kept), centred in a ``th x tw`` frame padded
  with the value the model sees as 0 (letterbox), predicted once; the scores of the image's
  part of the frame are resized back to ``H x W``.

Pixels are resized bilinearly with antialiasing (Pillow's ``BILINEAR`` per band in float32,
whose filter widens with the reduction, so a 4x smaller frame averages every pixel instead of
sampling one in four). Scores are resized back bilinearly (half-pixel centres, as
:func:`~firmware_bridge.runtime.postprocess.resize_bilinear`) *before* the argmax or the
thresholds, never the mask. For an argmax mask only the pixels between source pixels of
different classes are interpolated: where the four source pixels around an output pixel have
the same class, every convex combination of their scores has that class too, so the mask is
the one of interpolating every pixel (:func:`upsample_mask`).

A model whose output is smaller than its input (an output stride) has its scores resized to
the input first, as for tiles.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from firmware_bridge.errors import EdgesegError
from firmware_bridge.runtime.metadata import RESIZE_MODES
from firmware_bridge.runtime.postprocess import axis_weights
from firmware_bridge.runtime.tiling import Box

ROWS = 256
"""Output rows interpolated at a time (memory: ``ROWS x width x K`` floats)."""


def check_mode(mode: str) -> str:
    """``mode`` when it is a resize mode.

    Raises:
        EdgesegError: For another value.
    """
    if mode not in RESIZE_MODES:
        raise EdgesegError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {mode!r}")
    return mode


def placement(height: int, width: int, size: tuple[int, int], mode: str) -> Box:
    """Where an ``height x width`` image lies in the model's ``size`` frame.

    Args:
        height: Image rows.
        width: Image columns.
        size: The model's ``(rows, columns)``.
        mode: ``"stretch"`` (the whole frame) or ``"fit"`` (aspect ratio kept, centred).

    Returns:
        The image's box in the frame.

    Raises:
        EdgesegError: For another mode or an empty image.
    """
    if height < 1 or width < 1:
        raise EdgesegError(f"image {width}x{height} is empty")
    th, tw = size
    if check_mode(mode) == "stretch":
        return Box(0, 0, th, tw)
    if mode != "fit":
        raise EdgesegError(f"placement is for resize fit or stretch, not {mode!r}")
    s = min(th / height, tw / width)
    ch = min(th, max(1, round(height * s)))
    cw = min(tw, max(1, round(width * s)))
    y0, x0 = (th - ch) // 2, (tw - cw) // 2
    return Box(y0, x0, y0 + ch, x0 + cw)


def resize_pixels(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize ``HxWxC`` pixels of any dtype to ``height x width x C`` float32 (antialiased bilinear).

    Returns:
        ``float32`` pixels in the image's own units (no rounding back to its dtype).
    """
    src = image.astype(np.float32, copy=False)
    if src.shape[:2] == (height, width):
        return np.array(src, dtype=np.float32)
    bands = [np.asarray(Image.fromarray(np.ascontiguousarray(src[..., c]), mode="F")
                        .resize((width, height), Image.BILINEAR))
             for c in range(src.shape[2])]
    return np.stack(bands, axis=-1)


def to_frame(image: np.ndarray, size: tuple[int, int], mode: str, fill: np.ndarray
             ) -> tuple[np.ndarray, Box]:
    """The model's input frame for an image: resized (and padded for ``fit``).

    Args:
        image: ``HxWxC`` pixels (without data already filled in).
        size: The model's ``(rows, columns)``.
        mode: ``"fit"`` or ``"stretch"``.
        fill: Per-band pixel value of the padding (the value the model sees as 0).

    Returns:
        ``(frame, box)``: the ``rows x columns x C`` float32 frame and where the image lies.
    """
    box = placement(image.shape[0], image.shape[1], size, mode)
    frame = np.empty((*size, image.shape[2]), np.float32)
    frame[...] = np.broadcast_to(np.asarray(fill, np.float32), image.shape[2:])
    frame[box.y0 : box.y1, box.x0 : box.x1] = resize_pixels(image, box.height, box.width)
    return frame, box


def upsample_scores(scores: np.ndarray, height: int, width: int, start: int = 0,
                    stop: int | None = None) -> np.ndarray:
    """Rows ``start:stop`` of ``h x w x K`` scores resized bilinearly to ``height x width``.

    The same values as :func:`~firmware_bridge.runtime.postprocess.resize_bilinear` (same
    operations in the same order), for a band of rows at a time.

    Returns:
        ``(stop - start) x width x K`` scores, of the scores' dtype.
    """
    stop = height if stop is None else stop
    h, w = scores.shape[:2]
    y0, y1, fy = axis_weights(h, height)
    x0, x1, fx = axis_weights(w, width)
    sl = slice(start, stop)
    rows = (scores[y0[sl]] * (1 - fy[sl])[:, None, None]
            + scores[y1[sl]] * fy[sl][:, None, None])
    return (rows[:, x0] * (1 - fx)[None, :, None]
            + rows[:, x1] * fx[None, :, None]).astype(scores.dtype, copy=False)


def upsample_mask(scores: np.ndarray, height: int, width: int,
                  to_mask: Callable[[np.ndarray], np.ndarray], argmax: bool,
                  rows: int = ROWS) -> np.ndarray:
    """The mask of ``h x w x K`` scores resized bilinearly to ``height x width``.

    Args:
        scores: Scores at the model's resolution.
        height: Rows of the mask.
        width: Columns of the mask.
        to_mask: ``...xK`` scores to ``uint8`` labels.
        argmax: ``to_mask`` is an argmax: then only pixels whose four source pixels differ in
            class are interpolated (the others keep that class, exactly as interpolating
            them would give); otherwise every pixel is, ``rows`` rows at a time.
        rows: Output rows handled at a time.

    Returns:
        ``height x width`` ``uint8`` labels.
    """
    out = np.empty((height, width), np.uint8)
    if not argmax:
        for r in range(0, height, rows):
            out[r : r + rows] = to_mask(upsample_scores(scores, height, width, r, r + rows))
        return out
    h, w = scores.shape[:2]
    y0, y1, fy = axis_weights(h, height)
    x0, x1, fx = axis_weights(w, width)
    labels = to_mask(scores)
    for r in range(0, height, rows):
        sl = slice(r, r + rows)
        top, bottom = labels[y0[sl]], labels[y1[sl]]
        a = top[:, x0]
        mixed = (a != top[:, x1]) | (a != bottom[:, x0]) | (a != bottom[:, x1])
        ii, jj = np.nonzero(mixed)
        if len(ii):
            gy0, gy1, v = y0[sl][ii], y1[sl][ii], fy[sl][ii][:, None]
            gx0, gx1, u = x0[jj], x1[jj], fx[jj][:, None]
            left = scores[gy0, gx0] * (1 - v) + scores[gy1, gx0] * v
            right = scores[gy0, gx1] * (1 - v) + scores[gy1, gx1] * v
            a[ii, jj] = to_mask(left * (1 - u) + right * u)
        out[sl] = a
    return out
