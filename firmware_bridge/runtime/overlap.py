"""Sums of window-weighted tile scores over a region's overlap bands only.

Where one tile alone covers a pixel its window is 1 and the blended score is the tile's own,
so a region needs sums only where tiles overlap: the rows that more than one row of tiles
covers (kept across the region's width, like the rows handed to the region beneath), and, in
the other rows, the columns that more than one column of tiles covers. :class:`OverlapSums`
holds just those, in two arrays, so a 1024 px block of 256 px tiles at 32 px overlap sums
a quarter to a third of its pixels instead of all of them (the memory of a full-size accumulator,
and the page faults of touching it afresh for every block, grow with the block's area).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from firmware_bridge.runtime import tiling


def _positions(flags: np.ndarray) -> np.ndarray:
    """Index of each True entry among the True entries (-1 elsewhere)."""
    pos = np.full(len(flags), -1, np.int64)
    pos[flags] = np.arange(int(flags.sum()))
    return pos


class OverlapSums:
    """Accumulators for the pixels of a region that more than one tile covers.

    Args:
        rows_once: ``bool`` per accumulator row (the region's rows, then the rows below it
            that are handed down), True where one row of tiles alone covers it.
        cols_once: ``bool`` per region column, True where one column of tiles alone covers it.
        classes: Scores per pixel.
        dtype: ``float32``, or ``uint16`` for integer blending.
        origin: Full-image ``(row, col)`` of the region's first pixel.

    Attributes:
        band_rows: Accumulator rows summed across the width.
        cross_cols: Columns summed in the other rows.
    """

    def __init__(self, rows_once: np.ndarray, cols_once: np.ndarray, classes: int,
                 dtype: type | np.dtype, origin: tuple[int, int]) -> None:
        self.rows_once = np.asarray(rows_once, bool)
        self.cols_once = np.asarray(cols_once, bool)
        self.origin = origin
        self.width = len(self.cols_once)
        self.band_rows = np.flatnonzero(~self.rows_once)
        self.cross_cols = np.flatnonzero(~self.cols_once)
        self._band_pos = _positions(~self.rows_once)
        self._once_pos = _positions(self.rows_once)
        self._col_pos = _positions(~self.cols_once)
        self._runs = sorted([(a, b, True) for a, b in tiling.runs(~self.rows_once)]
                            + [(a, b, False) for a, b in tiling.runs(self.rows_once)])
        n_once = len(self.rows_once) - len(self.band_rows)
        self.band_acc = np.zeros((len(self.band_rows), self.width, classes), dtype)
        self.band_wsum = np.zeros((len(self.band_rows), self.width), dtype)
        self.cross_acc = np.zeros((n_once, len(self.cross_cols), classes), dtype)
        self.cross_wsum = np.zeros((n_once, len(self.cross_cols)), dtype)

    @property
    def dtype(self) -> np.dtype:
        """The sums' type."""
        return self.band_acc.dtype

    def load(self, acc: np.ndarray, wsum: np.ndarray) -> None:
        """Start the first ``len(acc)`` rows from sums handed down by the region above.

        Args:
            acc: ``rows x width x K`` sums (a :class:`~firmware_bridge.runtime.segmenter.Band`'s).
            wsum: ``rows x width`` window sums.
        """
        for a, b, banded in self._row_runs(0, len(acc)):
            if banded:
                p = self._band_pos[a]
                self.band_acc[p : p + b - a] = acc[a:b]
                self.band_wsum[p : p + b - a] = wsum[a:b]
            else:
                p = self._once_pos[a]
                self.cross_acc[p : p + b - a] = acc[a:b][:, self.cross_cols]
                self.cross_wsum[p : p + b - a] = wsum[a:b][:, self.cross_cols]

    def _row_runs(self, a: int, b: int) -> Iterator[tuple[int, int, bool]]:
        """``(start, end, summed across the width)`` runs of accumulator rows in ``[a, b)``."""
        for lo, hi, banded in self._runs:
            if lo < b and hi > a:
                yield max(lo, a), min(hi, b), banded

    def add(self, scores: np.ndarray, window: np.ndarray, box: tiling.Box,
            scratch: bool = False) -> None:
        """Add one tile part's weighted scores (:func:`~firmware_bridge.runtime.tiling.accumulate`).

        Args:
            scores: ``box.height x box.width x K`` scores.
            window: ``box.height x box.width`` weights.
            box: The part, in full-image coordinates; only what lies in the region and the
                rows below it counts.
            scratch: ``scores`` may be overwritten.

        Raises:
            ValueError: When the part covers a pixel that one tile alone covers (those are
                never summed: the caller takes them from the tile).
        """
        oy, ox = self.origin
        y0, y1 = max(box.y0, oy), min(box.y1, oy + len(self.rows_once))
        x0, x1 = max(box.x0, ox), min(box.x1, ox + self.width)
        if y0 >= y1 or x0 >= x1:
            return
        for a, b, banded in self._row_runs(y0 - oy, y1 - oy):
            part = tiling.Box(oy + a, x0, oy + b, x1)
            sl = (slice(part.y0 - box.y0, part.y1 - box.y0),
                  slice(part.x0 - box.x0, part.x1 - box.x0))
            if banded:
                tiling.accumulate(self.band_acc, self.band_wsum, scores[sl], window[sl], part,
                                  (oy + a - int(self._band_pos[a]), ox), scratch=scratch)
                continue
            c0, c1 = x0 - ox, x1 - ox
            pos = self._col_pos[c0:c1]
            if pos[0] < 0 or pos[-1] - pos[0] != c1 - c0 - 1:
                raise ValueError(f"tile part {part} covers pixels that one tile alone covers")
            tiling.accumulate(self.cross_acc, self.cross_wsum, scores[sl], window[sl], part,
                              (oy + a - int(self._once_pos[a]), ox + c0 - int(pos[0])),
                              scratch=scratch)

    def spans(self, height: int) -> Iterator[tuple[tuple[slice, slice], np.ndarray, np.ndarray]]:
        """The summed pixels of the region's first ``height`` rows, one rectangle at a time.

        Yields:
            ``((rows, columns) of the region, sums, window sums)``: the summed rows across the
            width first, then each run of the other rows by each run of summed columns. The
            arrays are views: :func:`~firmware_bridge.runtime.tiling.normalise` may work in
            place.
        """
        for a, b, banded in self._row_runs(0, min(height, len(self.rows_once))):
            if banded:
                p = int(self._band_pos[a])
                yield ((slice(a, b), slice(None)), self.band_acc[p : p + b - a],
                       self.band_wsum[p : p + b - a])
                continue
            p = int(self._once_pos[a])
            for c0, c1 in tiling.runs(~self.cols_once):
                q = int(self._col_pos[c0])
                yield ((slice(a, b), slice(c0, c1)), self.cross_acc[p : p + b - a, q : q + c1 - c0],
                       self.cross_wsum[p : p + b - a, q : q + c1 - c0])

    def rows_from(self, start: int) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the sums of accumulator rows ``start`` onwards (all summed across the width).

        Raises:
            ValueError: When one of those rows is covered by one row of tiles alone.
        """
        if self.rows_once[start:].any():
            raise ValueError(f"rows from {start} on are not all summed across the width")
        p = int(self._band_pos[start]) if start < len(self.rows_once) else len(self.band_rows)
        return self.band_acc[p:].copy(), self.band_wsum[p:].copy()
