"""Class statistics and class weights for the losses."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from firmware_bridge import IGNORE_INDEX


def class_pixel_counts(masks: Iterable[np.ndarray], num_classes: int) -> tuple[np.ndarray, int]:
    """Count pixels per class and ignore pixels over decoded masks.

    Args:
        masks: ``HxW`` uint8 class-index masks (255 = ignore).
        num_classes: ``K``.

    Returns:
        ``(counts, ignored)``: int64 array of length ``K`` and the number of ignore pixels.

    """
    counts = np.zeros(num_classes, dtype=np.int64)
    ignored = 0
    for mask in masks:
        hist = np.bincount(mask.ravel(), minlength=256)
        counts += hist[:num_classes]
        ignored += int(hist[IGNORE_INDEX])
    return counts, ignored


def inverse_frequency_weights(counts: np.ndarray) -> np.ndarray:
    """Weights ``w_c = total / (K * n_c)``: 1 for every class when classes are balanced.

    Classes with no pixels get weight 0 (nothing to weigh).
    """
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


def median_frequency_weights(counts: np.ndarray) -> np.ndarray:
    """Median-frequency balancing (Eigen & Fergus): ``w_c = median(f) / f_c``, ``f_c = n_c / N``.

    Classes with no pixels get weight 0.
    """
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    if present.any():
        freq = counts[present] / counts.sum()
        weights[present] = np.median(freq) / freq
    return weights
