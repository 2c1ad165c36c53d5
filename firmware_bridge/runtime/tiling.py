"""Tiled inference as pure functions: tile boxes, blending windows, score accumulation.

The math, for one axis of length ``L`` with tile edge ``T`` and overlap ``O`` (``0 <= O < T``):

* stride ``S = T - O``; tile starts are ``0, S, 2S, ...`` while ``start + T < L``, then one
  last tile at ``L - T``: edge tiles are shifted inward, never padded, so every tile lies
  inside the image and the last overlap may be larger than ``O``. ``L <= T`` gives one tile
  at 0 (the image is padded to ``T`` first, by reflection, and cropped back afterwards).
* boxes are the product of the row and column starts, row-major, half-open
  ``[y0, y1) x [x0, x1)``.
* blending: tile ``t`` carries a window ``w_t(y, x) = f + (1 - f) * h(y) * h(x)`` with the Hann
  profile ``h(i) = sin^2(pi * (i + 0.5) / n)`` on sides that face another tile, ``h = 1`` on
  the half of a side that lies on the image edge (nothing to blend with there), and the floor
  ``f`` so that every covered pixel keeps a positive weight. The blended score is
  ``p(y, x) = sum_t w_t * s_t / sum_t w_t``, computed before the argmax. Tile borders, where a
  convolution saw zero padding instead of the real neighbours, thus get almost no weight where
  a neighbouring tile sees them from its inside.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np

DEFAULT_FLOOR = 1e-3


class Box(NamedTuple):
    """Half-open pixel box ``[y0, y1) x [x0, x1)`` in full-image coordinates."""

    y0: int
    x0: int
    y1: int
    x1: int

    @property
    def height(self) -> int:
        """Rows covered."""
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        """Columns covered."""
        return self.x1 - self.x0


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of the tiles along one axis (see the module docstring).

    Args:
        length: Image length along the axis (pixels, ``>= 1``).
        tile: Tile edge (``>= 1``).
        overlap: Pixels shared by neighbouring tiles, ``0 <= overlap < tile``.

    Returns:
        Increasing start offsets; the last tile ends at ``max(length, tile)``.

    Raises:
        ValueError: For a non-positive length or tile, or an overlap outside ``[0, tile)``.
    """
    if length < 1 or tile < 1:
        raise ValueError(f"length and tile must be positive, got {length} and {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile={tile}), got {overlap}")
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def tile_boxes(height: int, width: int, tile: int | tuple[int, int], overlap: int) -> list[Box]:
    """Tile boxes covering a ``height x width`` image, row-major.

    Args:
        height: Image rows.
        width: Image columns.
        tile: Tile edge, or ``(tile_height, tile_width)``.
        overlap: Overlap in pixels on both axes.

    Returns:
        Boxes; a box may extend past the image only where the image is smaller than the tile
        (pad it with :func:`pad_to_tile` first).

    Raises:
        ValueError: As :func:`tile_starts`.
    """
    th, tw = (tile, tile) if isinstance(tile, int) else tile
    ys, xs = tile_starts(height, th, overlap), tile_starts(width, tw, overlap)
    return [Box(y, x, y + th, x + tw) for y in ys for x in xs]


def block_regions(height: int, width: int, block: int) -> list[Box]:
    """Non-overlapping ``block x block`` regions covering the image, row-major.

    The last row and column of regions are cut at the image edge (they are output windows,
    not model inputs, so they need not be full).

    Raises:
        ValueError: For a non-positive size or block.
    """
    if height < 1 or width < 1 or block < 1:
        raise ValueError(f"height, width and block must be positive, got {height, width, block}")
    return [Box(y, x, min(y + block, height), min(x + block, width))
            for y in range(0, height, block) for x in range(0, width, block)]


def boxes_touching(boxes: list[Box], region: Box) -> list[Box]:
    """The boxes that share at least one pixel with ``region``."""
    return [
        b for b in boxes
        if b.y0 < region.y1 and b.y1 > region.y0 and b.x0 < region.x1 and b.x1 > region.x0
    ]


def bounding_box(boxes: list[Box]) -> Box:
    """The smallest box holding every box in ``boxes`` (which must not be empty)."""
    return Box(min(b.y0 for b in boxes), min(b.x0 for b in boxes),
               max(b.y1 for b in boxes), max(b.x1 for b in boxes))


def pad_to_tile(image: np.ndarray, tile: int | tuple[int, int]) -> np.ndarray:
    """Pad an ``HxW[xC]`` image at the bottom and right by reflection up to the tile size.

    Args:
        image: The image; returned unchanged when it is at least one tile in both axes.
        tile: Tile edge, or ``(tile_height, tile_width)``.

    Returns:
        An array of at least ``tile`` rows and columns whose top-left part is ``image``; crop
        results back with ``[:H, :W]``. One-pixel axes are padded by repetition.
    """
    th, tw = (tile, tile) if isinstance(tile, int) else tile
    ph, pw = max(0, th - image.shape[0]), max(0, tw - image.shape[1])
    if ph == 0 and pw == 0:
        return image
    pads = [(0, ph), (0, pw)] + [(0, 0)] * (image.ndim - 2)
    mode = "reflect" if min(image.shape[:2]) > 1 else "edge"
    return np.pad(image, pads, mode=mode)


@lru_cache(maxsize=64)
def _profile(n: int, taper_start: bool, taper_end: bool) -> np.ndarray:
    """1-D Hann profile of length ``n``, flat (1) on an untapered half."""
    i = np.arange(n, dtype=np.float64)
    prof = np.sin(np.pi * (i + 0.5) / n) ** 2
    half = i < n / 2
    if not taper_start:
        prof[half] = 1.0
    if not taper_end:
        prof[~half] = 1.0
    prof.setflags(write=False)
    return prof


def tile_window(box: Box, height: int, width: int, floor: float = DEFAULT_FLOOR) -> np.ndarray:
    """Blending weights of one tile (see the module docstring).

    Args:
        box: The tile.
        height: Image rows (sides on the image edge are not tapered).
        width: Image columns.
        floor: Smallest weight, ``0 < floor <= 1``; ``1`` gives plain averaging.

    Returns:
        ``float32`` array of the box's shape, values in ``[floor, 1]``.

    Raises:
        ValueError: For a floor outside ``(0, 1]``.
    """
    if not 0 < floor <= 1:
        raise ValueError(f"floor must be in (0, 1], got {floor}")
    return _window(box.height, box.width, box.y0 > 0, box.y1 < height, box.x0 > 0,
                   box.x1 < width, floor)


@lru_cache(maxsize=64)
def _window(h: int, w: int, top: bool, bottom: bool, left: bool, right: bool,
            floor: float) -> np.ndarray:
    """One window per tile shape and set of tapered sides (at most 9 per scene), read-only."""
    window = (floor + (1.0 - floor) * np.outer(_profile(h, top, bottom), _profile(w, left, right))
              ).astype(np.float32)
    window.setflags(write=False)
    return window


def accumulate(
    acc: np.ndarray, wsum: np.ndarray, scores: np.ndarray, window: np.ndarray, box: Box,
    origin: tuple[int, int] = (0, 0), scratch: bool = False,
) -> None:
    """Add one tile's weighted scores into accumulators, in place (the one impure helper).

    Args:
        acc: ``HxWxK`` float sum of ``window * scores``; covers ``origin`` onwards.
        wsum: ``HxW`` float sum of windows.
        scores: ``box.height x box.width x K`` tile scores.
        window: ``box.height x box.width`` weights (:func:`tile_window`).
        box: The tile in full-image coordinates; only its part inside the accumulators counts.
        origin: Full-image ``(row, col)`` of ``acc[0, 0]``.
        scratch: ``scores`` may be overwritten (saves a tile-sized temporary; same sums).
    """
    oy, ox = origin
    y0, x0 = max(box.y0, oy), max(box.x0, ox)
    y1, x1 = min(box.y1, oy + acc.shape[0]), min(box.x1, ox + acc.shape[1])
    if y0 >= y1 or x0 >= x1:
        return
    tile_part = (slice(y0 - box.y0, y1 - box.y0), slice(x0 - box.x0, x1 - box.x0))
    acc_part = (slice(y0 - oy, y1 - oy), slice(x0 - ox, x1 - ox))
    w = window[tile_part]
    part = scores[tile_part]
    if scratch and part.flags.writeable:
        acc[acc_part] += np.multiply(part, w[..., None], out=part)
    else:
        acc[acc_part] += part * w[..., None]
    wsum[acc_part] += w


def normalise(acc: np.ndarray, wsum: np.ndarray) -> np.ndarray:
    """Blended scores ``acc / wsum``, in place (``wsum`` is clamped above 0 in place too).

    Returns:
        ``acc``, now holding the blended scores.
    """
    np.maximum(wsum, np.finfo(np.float32).tiny, out=wsum)
    acc /= wsum[..., None]
    return acc


def merge_tiles(
    height: int, width: int, boxes: list[Box], tile_scores: list[np.ndarray],
    floor: float = DEFAULT_FLOOR,
) -> np.ndarray:
    """Blend per-tile scores into one ``HxWxK`` score map (pure).

    Args:
        height: Image rows.
        width: Image columns.
        boxes: Tiles, as from :func:`tile_boxes`.
        tile_scores: ``tile x tile x K`` scores, one per box.
        floor: Window floor (:func:`tile_window`).

    Returns:
        ``float32`` blended scores.

    Raises:
        ValueError: When boxes and scores differ in number.
    """
    if len(boxes) != len(tile_scores):
        raise ValueError(f"{len(boxes)} boxes but {len(tile_scores)} score tiles")
    k = tile_scores[0].shape[-1] if tile_scores else 1
    acc = np.zeros((height, width, k), dtype=np.float32)
    wsum = np.zeros((height, width), dtype=np.float32)
    for box, scores in zip(boxes, tile_scores, strict=True):
        accumulate(acc, wsum, scores, tile_window(box, height, width, floor), box)
    return normalise(acc, wsum)
