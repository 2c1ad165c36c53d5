"""Calibration images for int8 conversion: normalised crops of the training images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeseg.data.pipeline import normalise_with, standardising
from firmware_bridge.errors import EdgesegError
from firmware_bridge.io.images import read_image
from firmware_bridge.io.pairs import find_pairs, split_by_pattern
from firmware_bridge.runtime.tiling import pad_to_tile

CALIBRATION_IMAGES = 64


def calibration_crops(data: Path, val_pattern: str, size: int,
                      count: int = CALIBRATION_IMAGES, seed: int = 0,
                      standardise: bool = False) -> np.ndarray:
    """Normalised ``size x size`` crops of the training images (not the validation ones).

    Args:
        data: Dataset folder.
        val_pattern: Stems left out (validation); empty: use every image.
        size: Crop edge; smaller images are reflect-padded.
        count: Crops, spread evenly over the training images.
        seed: Crop positions.
        standardise: Normalise each crop by its whole image's band statistics (a model
            standardised per image).

    Returns:
        ``(count, size, size, C)`` float32, normalised as in training.
    """
    pairs = find_pairs(data).pairs
    train = split_by_pattern(pairs, val_pattern)[0] if val_pattern else pairs
    if not train:
        raise EdgesegError(f"{data}: no training images outside {val_pattern!r} to calibrate on")
    rng = np.random.default_rng(seed)
    per = [count // len(train) + (i < count % len(train)) for i in range(len(train))]
    crops = []
    for pair, n in zip(train, per, strict=True):
        if n == 0:
            continue
        pixels = read_image(pair.image)
        norm = standardising(pixels) if standardise else None
        image = pad_to_tile(pixels, size)
        h, w = image.shape[:2]
        for _ in range(n):
            y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
            crops.append(normalise_with(image[y : y + size, x : x + size], norm))
    return np.stack(crops).astype(np.float32)
