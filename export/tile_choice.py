"""The tile size and overlap an exported model recommends, measured for throughput and accuracy.

A fully convolutional model runs at any input size, so the tile is a choice: larger tiles
spend less of every tile on overlap and on the per-call cost, smaller ones need less memory;
more overlap blends away more of the tile-border error. :func:`sweep_tiles` runs the float
model at every candidate (tile, overlap) over the validation images, through the same tiled
``Segmenter`` and scoring loop as the device, and measures both mIoU and megapixels per second;
:func:`choose_tile` takes the fastest candidate whose mIoU is within a tolerance of the best.
``edgeseg export --tile auto`` exports at the chosen tile and writes the overlap into the
artifacts' metadata, which ``edgeseg-run predict`` uses by default.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from firmware_bridge.errors import EdgesegError


@dataclass(frozen=True)
class TileTrial:
    """One measured candidate.

    Attributes:
        tile: Tile edge (the model's input edge).
        overlap: Overlap between neighbouring tiles, in pixels.
        miou: Mean IoU on the validation images.
        mpix_s: Validation image pixels per second through the whole tiled path.
    """

    tile: int
    overlap: int
    miou: float
    mpix_s: float

    def to_dict(self) -> dict:
        """The trial as a JSON-ready dict."""
        return asdict(self)


def candidates(edge: int, multiple: int = 32) -> list[tuple[int, int]]:
    """Candidate ``(tile, overlap)`` pairs around a model trained at ``edge``.

    Tiles: ``edge``, 1.5x and 2x it (rounded to ``multiple``); overlaps: an eighth and a quarter of
    the training edge (at least 8 px).

    Raises:
        EdgesegError: For an edge below ``multiple``.
    """
    if edge < multiple:
        raise EdgesegError(f"tile edge {edge} is below {multiple}")
    tiles = sorted({max(multiple, round(edge * f / multiple) * multiple) for f in (1.0, 1.5, 2.0)})
    overlaps = sorted({max(8, edge // 8), max(8, edge // 4)})
    return [(t, o) for t in tiles for o in overlaps if o < t // 2]


def choose_tile(trials: Sequence[TileTrial], tolerance: float = 0.003) -> TileTrial:
    """The fastest trial whose mIoU is at most ``tolerance`` below the best one's.

    Args:
        trials: Measured candidates.
        tolerance: mIoU (0..1) that may be given up for speed (0.003: 0.3 points).

    Returns:
        The chosen trial.

    Raises:
        EdgesegError: With no trials.
    """
    if not trials:
        raise EdgesegError("no tile candidates were measured")
    best = max(t.miou for t in trials)
    good = [t for t in trials if t.miou >= best - tolerance]
    return max(good, key=lambda t: (t.mpix_s, t.miou))


def sweep_tiles(model_at: Callable[[int], object], meta, images: Sequence[np.ndarray],
                truths: Sequence[np.ndarray], pairs: Sequence[tuple[int, int]],
                log: Callable[[str], None] = lambda _: None) -> list[TileTrial]:
    """Measure every ``(tile, overlap)`` pair with the float Keras model.

    Args:
        model_at: ``model_at(edge)``: the Keras model with a fixed ``edge x edge`` input.
        meta: The run's :class:`~firmware_bridge.runtime.metadata.ModelMetadata`.
        images: Validation images (HxWx3 uint8).
        truths: Their masks (class indices, 255 = ignore).
        pairs: Candidates from :func:`candidates`.
        log: Receives one line per trial.

    Returns:
        One trial per pair, in order.

    Raises:
        EdgesegError: With no validation images.
    """
    from export.keras_backend import keras_segmenter
    from firmware_bridge.evaluate import score

    if not images:
        raise EdgesegError("choosing the tile needs validation images")
    pixels = sum(int(m.size) for m in truths)
    trials = []
    for tile in sorted({t for t, _ in pairs}):
        model = model_at(tile)
        warm = keras_segmenter(model, meta, overlap=0)
        warm.backend.run(np.zeros((1, tile, tile, 3), np.float32))  # build the graph once
        for t, overlap in pairs:
            if t != tile:
                continue
            segmenter = keras_segmenter(model, meta, overlap=overlap)
            t0 = time.perf_counter()
            scores = score(segmenter, zip(images, truths, strict=True), meta.classes).scores
            seconds = time.perf_counter() - t0
            trial = TileTrial(tile, overlap, round(float(scores.miou), 4), round(pixels / seconds / 1e6, 3))
            log(f"tile {tile:>4} overlap {overlap:>3}: mIoU {trial.miou:.4f}, {trial.mpix_s:.2f} MPix/s")
            trials.append(trial)
    return trials
