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

Pixels are resized (``--resize-filter``) either

* ``antialias`` (the default): bilinearly with antialiasing (Pillow's ``BILINEAR`` per band in
  float32, whose filter widens with the reduction, so a 4x smaller frame averages every pixel
  instead of sampling one in four), or
* ``bilinear``: as OpenCV's ``cv2.resize`` with ``INTER_LINEAR`` (:func:`resize_linear`): plain
  bilinear interpolation between the two nearest pixels of each axis, half-pixel centres, no
  antialiasing, 8-bit pixels in OpenCV's fixed-point arithmetic and rounded back to 8 bits. Many
  publishers' demos resize so; for 8-bit images this gives their model inputs exactly.

The result is mapped back to the image (``--resize-back``) either

* ``scores`` (the default): the scores are resized back bilinearly (half-pixel centres, as
  :func:`~firmware_bridge.runtime.postprocess.resize_bilinear`) *before* the argmax or the
  thresholds. For an argmax mask only the pixels between source pixels of different classes
  are interpolated: where the four source pixels around an output pixel have the same class,
  every convex combination of their scores has that class too, so the mask is the one of
  interpolating every pixel (:func:`upsample_mask`); or
* ``mask``: the finished mask at the model's resolution is resized to the image by nearest
  neighbour as ``cv2.resize`` with ``INTER_NEAREST`` does (:func:`nearest_index`), the way
  demos that resize their mask for display map it back.

A model whose output is smaller than its input (an output stride) has its scores resized to
the input first, as for tiles.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from firmware_bridge.errors import EdgesegError
from firmware_bridge.runtime.metadata import RESIZE_BACKS, RESIZE_FILTERS, RESIZE_MODES
from firmware_bridge.runtime.postprocess import axis_weights
from firmware_bridge.runtime.tiling import Box

ROWS = 256
"""Output rows interpolated at a time (memory: ``ROWS x width x K`` floats)."""
FILTERS = RESIZE_FILTERS
"""How pixels are resized to the model's input (``--resize-filter``), the default first."""
BACKS = RESIZE_BACKS
"""What is resized back to the image (``--resize-back``), the default first."""
COEF_BITS = 11
"""Fraction bits of OpenCV's fixed-point bilinear weights (``INTER_RESIZE_COEF_BITS``)."""


def check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    """``value`` when it is one of ``choices``.

    Raises:
        EdgesegError: For another value, naming ``what``.
    """
    if value not in choices:
        raise EdgesegError(f"{what} must be one of {', '.join(choices)}, got {value!r}")
    return value


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


def resize_pixels(image: np.ndarray, height: int, width: int, resize_filter: str = "antialias"
                  ) -> np.ndarray:
    """Resize ``HxWxC`` pixels of any dtype to ``height x width x C`` float32.

    Args:
        image: The pixels.
        height: Rows wanted.
        width: Columns wanted.
        resize_filter: ``"antialias"`` (Pillow's antialiased bilinear filter, computed in float32, no
            rounding back to the image's dtype) or ``"bilinear"`` (:func:`resize_linear`:
            OpenCV's ``INTER_LINEAR``, rounded to the dtype of integer images as OpenCV does).

    Returns:
        ``float32`` pixels in the image's own units.
    """
    check_choice(resize_filter, FILTERS, "resize filter")
    if image.shape[:2] == (height, width):
        return np.array(image, dtype=np.float32)
    if resize_filter == "bilinear":
        return resize_linear(image, height, width).astype(np.float32, copy=False)
    src = image.astype(np.float32, copy=False)
    bands = [np.asarray(Image.fromarray(np.ascontiguousarray(src[..., c]), mode="F")
                        .resize((width, height), Image.BILINEAR))
             for c in range(src.shape[2])]
    return np.stack(bands, axis=-1)


def linear_taps(size: int, out: int, clamp: bool = True
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The two source indices and the weight of the second for each of ``out`` positions.

    As OpenCV's ``INTER_LINEAR`` along one axis of ``size`` pixels: output pixel ``d`` samples
    the source at ``(d + 0.5) * size / out - 0.5`` (half-pixel centres), computed in double and
    rounded to float32. Indices outside the source are clipped to its first or last pixel.

    Args:
        size: Source pixels.
        out: Output pixels.
        clamp: Give positions before the first pixel or from the last on the weight 0 (as
            OpenCV does along columns); ``False`` keeps their fractional weight between the two
            (clipped, so equal) indices, as OpenCV does along rows, where it shows in the
            rounding of 8-bit pixels.

    Returns:
        ``(first, second, weight)``: int64 indices and the float32 weight of ``second``.
    """
    scale = 1.0 / (out / size)  # OpenCV's scale: the inverse of its inverse scale
    pos = ((np.arange(out, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    first = np.floor(pos)
    weight = (pos - first).astype(np.float32)
    first = first.astype(np.int64)
    if clamp:
        weight[(first < 0) | (first >= size - 1)] = 0
    return np.clip(first, 0, size - 1), np.clip(first + 1, 0, size - 1), weight


def resize_linear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``HxWxC`` pixels resized as ``cv2.resize(image, (width, height))`` (``INTER_LINEAR``).

    Plain bilinear interpolation, half-pixel centres, no antialiasing: each output pixel mixes
    the 2x2 source pixels around its position (:func:`linear_taps`), columns first. 8-bit
    images follow OpenCV's fixed-point arithmetic bit for bit: weights rounded to 11 fraction
    bits, each row mixed in integers, the two rows mixed as OpenCV's ``VResizeLinear`` does for
    8 bits (``(((b0 * (r0 >> 4)) >> 16) + ((b1 * (r1 >> 4)) >> 16) + 2) >> 2``); OpenCV's
    halving of both axes by exactly 2 (a rounded average of 2x2 pixels) gives the same values.
    Other images are mixed in float32 (float64 for float64 images), integers rounded to the
    nearest value of their dtype: OpenCV's own code gives the same values, the Intel IPP code
    that OpenCV's builds use for these types by default differs slightly (by about 1e-4 of the
    values' spread).

    Returns:
        ``height x width x C`` pixels of the image's dtype.
    """
    h, w = image.shape[:2]
    y0, y1, fy = linear_taps(h, height, clamp=False)
    x0, x1, fx = linear_taps(w, width)
    rows, at = np.unique(np.concatenate([y0, y1]), return_inverse=True)  # only rows sampled
    top, bottom = at[:height], at[height:]
    if image.dtype == np.uint8:
        one = np.float32(1 << COEF_BITS)
        ax0 = np.rint((np.float32(1) - fx) * one).astype(np.int32)  # OpenCV: cvRound, to even
        ax1 = np.rint(fx * one).astype(np.int32)
        by0 = np.rint((np.float32(1) - fy) * one).astype(np.int32)[:, None, None]
        by1 = np.rint(fy * one).astype(np.int32)[:, None, None]
        src = image[rows].astype(np.int32)
        mixed = (src[:, x0] * ax0[:, None] + src[:, x1] * ax1[:, None]) >> 4
        out = ((by0 * mixed[top]) >> 16) + ((by1 * mixed[bottom]) >> 16)
        return np.clip((out + 2) >> 2, 0, 255).astype(np.uint8)
    work = np.float64 if image.dtype == np.float64 else np.float32
    src = image[rows].astype(work)
    fx, fy = fx.astype(work), fy.astype(work)
    mixed = src[:, x0] * (1 - fx)[:, None] + src[:, x1] * fx[:, None]
    out = (mixed[top] * (1 - fy)[:, None, None] + mixed[bottom] * fy[:, None, None]).astype(work)
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(image.dtype)
    return out


def nearest_index(size: int, out: int) -> np.ndarray:
    """Source index of each of ``out`` positions as OpenCV's ``INTER_NEAREST`` picks it.

    ``floor(d * size / out)`` (computed as OpenCV does: ``d`` times the inverse of
    ``out / size``, in double), at most ``size - 1``; not half-pixel centres.
    """
    inverse = 1.0 / (out / size)
    picked = np.floor(np.arange(out, dtype=np.float64) * inverse).astype(np.int64)
    return np.minimum(picked, size - 1)


def resize_nearest(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """``HxW...`` values (a mask, or scores) resized to ``height x width`` by nearest neighbour.

    As ``cv2.resize(values, (width, height), interpolation=cv2.INTER_NEAREST)``
    (:func:`nearest_index`).
    """
    rows = nearest_index(values.shape[0], height)
    cols = nearest_index(values.shape[1], width)
    return values[rows[:, None], cols[None, :]]


def to_frame(image: np.ndarray, size: tuple[int, int], mode: str, fill: np.ndarray,
             resize_filter: str = "antialias") -> tuple[np.ndarray, Box]:
    """The model's input frame for an image: resized (and padded for ``fit``).

    Args:
        image: ``HxWxC`` pixels (without data already filled in).
        size: The model's ``(rows, columns)``.
        mode: ``"fit"`` or ``"stretch"``.
        fill: Per-band pixel value of the padding (the value the model sees as 0).
        resize_filter: ``"antialias"`` or ``"bilinear"`` (:func:`resize_pixels`).

    Returns:
        ``(frame, box)``: the ``rows x columns x C`` float32 frame and where the image lies.
    """
    box = placement(image.shape[0], image.shape[1], size, mode)
    frame = np.empty((*size, image.shape[2]), np.float32)
    frame[...] = np.broadcast_to(np.asarray(fill, np.float32), image.shape[2:])
    frame[box.y0 : box.y1, box.x0 : box.x1] = resize_pixels(image, box.height, box.width,
                                                             resize_filter)
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
