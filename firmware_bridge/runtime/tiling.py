"""Tiled inference as pure functions: tile boxes, blending windows, score accumulation.

The math, for one axis of length ``L`` with tile edge ``T`` and overlap ``O`` (``0 <= O < T``):

* stride ``S = T - O``; tile starts are ``0, S, 2S, ...`` while ``start + T < L``, then one
  last tile at ``L - T``: edge tiles are shifted inward, never padded, so every tile lies
  inside the image and the last overlap may be larger than ``O``. ``L <= T`` gives one tile
  at 0 (the image is padded to ``T`` first, by reflection, and cropped back afterwards).
* boxes are the product of the row and column starts, row-major, half-open
  ``[y0, y1) x [x0, x1)``.
* blending: tile ``t`` carries a window ``w_t(y, x) = 1 - (1 - f) * (1 - h(y) * h(x))``. The
  profile ``h`` is 1 inside and tapers over the ``r`` pixels (the ramp) at each end that faces
  another tile: ``h(i) = sin^2(pi * (i + 0.5) / (2 r))`` for ``i < r`` (mirrored at the far
  end), 1 on a side that lies on the image edge (nothing to blend with there). The runtime's
  ramp is the overlap, so the window is exactly 1 wherever one tile alone covers a pixel; a
  ramp of half the tile (:func:`tile_window` without one) is the Hann window over the whole
  tile. The floor ``f`` keeps every covered pixel's weight positive. The blended score is
  ``p(y, x) = sum_t w_t * s_t / sum_t w_t``, computed before the argmax. Tile borders, where a
  convolution saw zero padding instead of the real neighbours, thus get almost no weight where
  a neighbouring tile sees them from its inside; and where one tile alone covers a pixel,
  ``p`` is that tile's score exactly, so only the overlap bands need summing
  (:func:`covered_once`).
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


def stream_regions(height: int, width: int, tile: int | tuple[int, int], overlap: int,
                   block: int) -> list[Box]:
    """Output regions for streaming a scene row of regions by row, their rows cut on tile starts.

    Columns are cut every ``block`` pixels (as :func:`block_regions`). Rows are cut at tile
    starts on the stride grid, about ``block`` rows apart (a whole number of strides, at least
    one): the tiles that straddle a cut then reach exactly ``overlap`` rows past it, so only
    that band of blended sums (:func:`rows_below`) passes from one row of regions to the next.

    Args:
        height: Scene rows.
        width: Scene columns.
        tile: Tile edge, or ``(tile_height, tile_width)``.
        overlap: Overlap in pixels.
        block: Wanted region edge in pixels.

    Returns:
        Regions covering the scene, row-major, cut at the scene's edge.

    Raises:
        ValueError: For a non-positive size or block, or a bad tile or overlap.
    """
    if height < 1 or width < 1 or block < 1:
        raise ValueError(f"height, width and block must be positive, got {height, width, block}")
    th = tile if isinstance(tile, int) else tile[0]
    stride = th - overlap
    starts = tile_starts(max(height, th), th, overlap)
    on_grid = [s for s in starts[1:] if s % stride == 0 and s < height]
    step = max(1, block // stride)
    cuts = [0, *on_grid[step - 1 :: step], height]
    rows = [(a, b) for a, b in zip(cuts, cuts[1:], strict=False) if a < b]
    return [Box(y0, x, y1, min(x + block, width))
            for y0, y1 in rows for x in range(0, width, block)]


def rows_below(boxes: list[Box], y: int) -> int:
    """Rows past row ``y`` that the tiles starting above ``y`` still cover (0 if none).

    These rows' blended sums are partly known once every tile starting above ``y`` is added:
    the band that one row of regions hands to the next.
    """
    return max([b.y1 - y for b in boxes if b.y0 < y < b.y1], default=0)


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
def _profile(n: int, taper_start: bool, taper_end: bool, ramp: float | None) -> np.ndarray:
    """1-D profile of length ``n``: 1, tapered over ``ramp`` pixels at the tapered ends.

    ``ramp`` is capped at ``n / 2``; ``None`` means ``n / 2`` (the Hann window).
    """
    i = np.arange(n, dtype=np.float64)
    r = n / 2 if ramp is None else min(float(ramp), n / 2)
    prof = np.ones(n)
    if r > 0:
        if taper_start:
            rise = i < r
            prof[rise] = np.sin(np.pi * (i[rise] + 0.5) / (2 * r)) ** 2
        if taper_end:
            back = n - 1 - i
            fall = back < r
            prof[fall] = np.minimum(prof[fall], np.sin(np.pi * (back[fall] + 0.5) / (2 * r)) ** 2)
    prof.setflags(write=False)
    return prof


def tile_window(box: Box, height: int, width: int, floor: float = DEFAULT_FLOOR,
                ramp: int | None = None) -> np.ndarray:
    """Blending weights of one tile (see the module docstring).

    Args:
        box: The tile.
        height: Image rows (sides on the image edge are not tapered).
        width: Image columns.
        floor: Smallest weight, ``0 < floor <= 1``; ``1`` gives plain averaging.
        ramp: Pixels over which a side facing another tile tapers (the tile overlap); the
            rest is exactly 1. ``None``: half the tile (the Hann window over the whole tile).

    Returns:
        ``float32`` array of the box's shape, values in ``[floor, 1]``.

    Raises:
        ValueError: For a floor outside ``(0, 1]`` or a negative ramp.
    """
    if not 0 < floor <= 1:
        raise ValueError(f"floor must be in (0, 1], got {floor}")
    if ramp is not None and ramp < 0:
        raise ValueError(f"ramp must be 0 or more pixels, got {ramp}")
    return _window(box.height, box.width, box.y0 > 0, box.y1 < height, box.x0 > 0,
                   box.x1 < width, floor, ramp)


@lru_cache(maxsize=64)
def _window(h: int, w: int, top: bool, bottom: bool, left: bool, right: bool,
            floor: float, ramp: int | None) -> np.ndarray:
    """One window per tile shape and set of tapered sides (at most 9 per scene), read-only."""
    outer = np.outer(_profile(h, top, bottom, ramp), _profile(w, left, right, ramp))
    window = (1.0 - (1.0 - floor) * (1.0 - outer)).astype(np.float32)  # exactly 1 where flat
    window.setflags(write=False)
    return window


@lru_cache(maxsize=16)
def cover_count(length: int, tile: int, overlap: int) -> np.ndarray:
    """How many tiles cover each position along one axis (read-only, cached).

    Args:
        length: Axis length (``max(length, tile)`` positions are returned).
        tile: Tile edge.
        overlap: Overlap in pixels.

    Returns:
        ``int32`` counts, one per position.

    Raises:
        ValueError: As :func:`tile_starts`.
    """
    count = np.zeros(max(length, tile) + 1, np.int32)
    for s in tile_starts(length, tile, overlap):
        count[s] += 1
        count[s + tile] -= 1
    count = np.cumsum(count)[:-1].astype(np.int32)
    count.setflags(write=False)
    return count


@lru_cache(maxsize=16)
def _covered_once(length: int, tile: int, overlap: int) -> np.ndarray:
    once = cover_count(length, tile, overlap) == 1
    once.setflags(write=False)
    return once


def covered_once(length: int, tile: int, overlap: int) -> np.ndarray:
    """Which positions along one axis lie in exactly one tile (read-only, cached).

    Inside one tile these positions form one run; a pixel whose row and column are both
    covered once lies in one tile only, where the window is 1 (ramp = overlap) and the
    blended score is that tile's score.

    Args:
        length: Axis length (``max(length, tile)`` positions are returned).
        tile: Tile edge.
        overlap: Overlap in pixels.

    Returns:
        Bool array, one per position.

    Raises:
        ValueError: As :func:`tile_starts`.
    """
    return _covered_once(length, tile, overlap)


INT_WEIGHT_MAX = 64
"""Largest integer window weight (6 bits): 255 x 64 x 4 tiles still fits in 16 bits."""
INT_WEIGHT_MIN = 8
"""Below this, integer weights are too coarse (very many tiles over a pixel): blend in float."""


def integer_weight_top(height: int, width: int, tile: tuple[int, int], overlap: int) -> int:
    """The integer weight that stands for 1 when 8-bit scores are blended in ``uint16``.

    At most :data:`INT_WEIGHT_MAX`, and small enough that the sum over the tiles that cover
    any one pixel of ``255 x weight`` stays within 16 bits.

    Args:
        height: Image rows.
        width: Image columns.
        tile: ``(tile_height, tile_width)``.
        overlap: Overlap in pixels.

    Returns:
        The weight of a window value of 1 (under :data:`INT_WEIGHT_MIN`: blend in float).
    """
    most = int(cover_count(height, tile[0], overlap).max()) * int(
        cover_count(width, tile[1], overlap).max())
    return min(INT_WEIGHT_MAX, np.iinfo(np.uint16).max // (255 * most))


def integer_window(box: Box, height: int, width: int, ramp: int | None, top: int) -> np.ndarray:
    """:func:`tile_window` (default floor) as ``uint16`` weights ``1..top`` (rounded, read-only).

    Args:
        box: The tile.
        height: Image rows.
        width: Image columns.
        ramp: As :func:`tile_window`.
        top: The weight of a window value of 1 (:func:`integer_weight_top`).

    Returns:
        ``uint16`` array of the box's shape; ``top`` exactly where the window is 1.
    """
    return _integer_window(box.height, box.width, box.y0 > 0, box.y1 < height, box.x0 > 0,
                           box.x1 < width, ramp, top)


@lru_cache(maxsize=64)
def _integer_window(h: int, w: int, top_side: bool, bottom: bool, left: bool, right: bool,
                    ramp: int | None, top: int) -> np.ndarray:
    window = _window(h, w, top_side, bottom, left, right, DEFAULT_FLOOR, ramp)
    weights = np.maximum(np.rint(window * np.float32(top)), 1).astype(np.uint16)
    weights.setflags(write=False)
    return weights


def runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """Half-open ``[start, end)`` runs of True in a 1-D bool array, in order."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], flags.astype(np.int8), [0]))))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def grid_overlap(boxes: list[Box]) -> int | None:
    """The overlap of a tile grid from its boxes (first two starts on an axis with two or more).

    Returns:
        The overlap in pixels, or ``None`` for a single tile.
    """
    for starts, edge in (({b.x0 for b in boxes}, "w"), ({b.y0 for b in boxes}, "h")):
        if len(starts) > 1:
            first, second = sorted(starts)[:2]
            size = boxes[0].width if edge == "w" else boxes[0].height
            return size - (second - first)
    return None


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
    floor: float = DEFAULT_FLOOR, ramp: int | None = -1,
) -> np.ndarray:
    """Blend per-tile scores into one ``HxWxK`` score map (pure).

    Args:
        height: Image rows.
        width: Image columns.
        boxes: Tiles, as from :func:`tile_boxes`.
        tile_scores: ``tile x tile x K`` scores, one per box.
        floor: Window floor (:func:`tile_window`).
        ramp: Window ramp (:func:`tile_window`); ``-1``: the grid's overlap
            (:func:`grid_overlap`), as the runtime blends.

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
    if ramp == -1:
        ramp = grid_overlap(boxes)
    for box, scores in zip(boxes, tile_scores, strict=True):
        accumulate(acc, wsum, scores, tile_window(box, height, width, floor, ramp), box)
    return normalise(acc, wsum)
