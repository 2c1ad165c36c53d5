"""Where the time of tiled inference goes: per-stage wall-time accumulators, off by default.

A :class:`StageClock` set on a Segmenter (``seg.clock = StageClock()``) adds up, with one
``time.perf_counter`` pair per stage and batch (or block), the seconds spent reading pixels,
normalising tiles, in the model, turning its output into scores, blending, taking the argmax
and writing the mask. Stages run on different threads at the same time (the reader, the
model thread, the writer), so their sum is not the wall time; the calling thread's idle time
(waiting for the model, the reader or the writer) is the wall time less its own stages. With
no clock set nothing is measured.
"""

from __future__ import annotations

import time

STAGES = ("read", "normalise", "model", "scores", "blend", "argmax", "write")
"""Stages in the order of one tile's path."""
CALLER_STAGES = ("normalise", "scores", "blend", "argmax")
"""The stages that run on the calling thread when the stages are pipelined."""


class StageClock:
    """Seconds per stage and tiles predicted, added up across calls (see the module docstring)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self.tiles = 0

    def add(self, stage: str, since: float) -> float:
        """Add the time from ``since`` to now to ``stage``.

        Args:
            stage: One of :data:`STAGES`.
            since: A ``time.perf_counter()`` reading.

        Returns:
            Now (``time.perf_counter()``), to time the next stage from.
        """
        now = time.perf_counter()
        self.seconds[stage] += now - since
        return now

    def per_tile_ms(self, wall: float, pipelined: bool = True) -> dict[str, float]:
        """Milliseconds per tile of each stage, and the calling thread's idle time.

        Args:
            wall: Wall-clock seconds of the whole run.
            pipelined: Whether reading, the model and writing ran on their own threads (else
                every stage ran on the calling thread).

        Returns:
            ``{stage: ms per tile}`` for :data:`STAGES` and ``"idle"`` (0 without tiles).
        """
        n = max(self.tiles, 1)
        caller = CALLER_STAGES if pipelined else STAGES
        idle = max(0.0, wall - sum(self.seconds[s] for s in caller))
        out = {s: self.seconds[s] / n * 1e3 for s in STAGES}
        out["idle"] = idle / n * 1e3
        return out
