"""Per-image standardisation: every image normalised by its own band statistics.

Scenes from different passes differ in illumination, haze and sensor gain, and a model that
learnt one scene's colours meets another's shifted. A model trained with per-image
standardisation sees every image with each band at mean 0 and standard deviation
:data:`TARGET_STD` (about what the ImageNet encoders saw): its input is
``(pixel * scale - m_c) / (s_c / TARGET_STD)`` with ``m_c`` and ``s_c`` the mean and standard
deviation of band ``c`` over the image's pixels that hold data. That is the metadata's
``(pixel * scale - mean) / std`` with a ``mean`` and ``std`` per image, so every runtime and
every int8 input table take it unchanged. A scene streamed in blocks is standardised by the
statistics of the whole scene (:func:`firmware_bridge.io.blocks.raster_statistics`), not of
each block, so that tiles agree across block borders.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TARGET_STD = 0.5
"""Standard deviation of each band after standardisation, in the model's input units."""

MODES = ("none", "image")
"""``none``: the metadata's fixed ``mean`` and ``std``; ``image``: each image's own statistics."""

SAMPLE_PIXELS = 1 << 20
"""At most this many pixels (a regular grid over the image) estimate its statistics."""


@dataclass(frozen=True)
class BandStats:
    """Mean and standard deviation of each band, in scaled pixel units (``pixel * scale``).

    Attributes:
        mean: One per band.
        std: One per band (above 0).
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def normalisation(self, target_std: float = TARGET_STD) -> tuple[np.ndarray, np.ndarray]:
        """The ``(mean, std)`` per band that standardises an image with these statistics.

        Returns:
            ``float32`` arrays for ``(pixel * scale - mean) / std``.
        """
        mean = np.asarray(self.mean, np.float32)
        return mean, np.asarray(self.std, np.float32) / np.float32(target_std)


def band_statistics(pixels: np.ndarray, invalid: np.ndarray | None = None,
                    scale: float = 1.0) -> BandStats | None:
    """Per-band mean and standard deviation of an image's pixels that hold data.

    Args:
        pixels: ``HxWxC`` image (any dtype).
        invalid: ``HxW`` bool, True where a pixel holds no data (``None``: every pixel does).
        scale: The metadata's pixel multiplier.

    Returns:
        The statistics, or ``None`` when no pixel holds data. A band without spread gets a
        standard deviation of 1 (scaled units), so it maps to a constant.
    """
    h, w = pixels.shape[:2]
    step = max(1, int(np.ceil(np.sqrt(h * w / SAMPLE_PIXELS))))
    x = pixels[::step, ::step].reshape(-1, pixels.shape[-1] if pixels.ndim == 3 else 1)
    if invalid is not None:
        x = x[~invalid[::step, ::step].reshape(-1)]
    if not len(x):
        return None
    x = x.astype(np.float64) * scale
    std = x.std(axis=0)
    std = np.where(np.isfinite(std) & (std > 1e-6 * max(1.0, abs(scale))), std, 1.0)
    return BandStats(tuple(float(v) for v in x.mean(axis=0)), tuple(float(v) for v in std))

