"""Datasets: image/mask pairs from folders, class tables, statistics and checks."""

from edgeseg.data.dataset import Sample, load_sample, load_split
from edgeseg.data.stats import (
    class_pixel_counts,
    inverse_frequency_weights,
    median_frequency_weights,
)

__all__ = [
    "Sample", "load_sample", "load_split", "class_pixel_counts",
    "inverse_frequency_weights", "median_frequency_weights",
]
