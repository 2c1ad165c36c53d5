"""Pixels to the model's input tensor and its output back to floats, by formula or by table.

The formulas (float32 throughout):

* input: ``x = (pixel * scale - mean) / std``; a quantized input then takes
  ``clip(round(x / s) + z)`` in its integer type (``s``, ``z``: the tensor's scale and zero point);
* output: a quantized output gives ``(q - z) * s``, computed in place (two passes).

An 8-bit image has only 256 values per band: the input formula applied once to every possible
value makes a lookup table, and one gather replaces its eight passes over every pixel (batch
of four 256 px tiles: 0.6 against 4.1 ms). The table holds exactly what the formula gives for
each value (the same float32 operations), so both routes give the same bits. The output is
not worth a table: numpy's gather is slower than two vectorised passes.
"""

from __future__ import annotations

import numpy as np


def normalise(images: np.ndarray, scale: np.float32, mean: np.ndarray, std: np.ndarray,
              spec) -> np.ndarray:
    """Pixels ``(..., C)`` to the input tensor's values and type, by the formula.

    Args:
        images: Pixels, channels last, any dtype.
        scale: Multiplier of the pixels.
        mean: Per-channel (or one) mean, float32.
        std: Per-channel (or one) divisor, float32.
        spec: The input's :class:`~firmware_bridge.runtime.backends.TensorSpec`.

    Returns:
        An array of ``spec.dtype``, same shape.
    """
    x = (images.astype(np.float32) * scale - mean) / std
    if spec.quantized:
        info = np.iinfo(spec.dtype)
        x = np.clip(np.round(x / spec.scale) + spec.zero_point, info.min, info.max)
    elif np.issubdtype(spec.dtype, np.integer):
        x = images  # an integer input without scale takes the raw pixels
    return x.astype(spec.dtype, copy=False)


def input_table(scale: np.float32, mean: np.ndarray, std: np.ndarray, spec,
                channels: int) -> np.ndarray:
    """:func:`normalise` of every 8-bit value, per channel: ``(channels, 256)`` of ``spec.dtype``."""
    values = np.repeat(np.arange(256, dtype=np.uint8)[:, None], channels, axis=1)
    return np.ascontiguousarray(normalise(values, scale, mean, std, spec).T)


def apply_input_table(table: np.ndarray, images: np.ndarray) -> np.ndarray:
    """The input tensor of uint8 ``images (..., C)`` through a table from :func:`input_table`."""
    if np.all(table == table[:1]):  # the same normalisation for every band: one gather
        return np.take(table[0], images)
    out = np.empty(images.shape, table.dtype)
    for c in range(table.shape[0]):
        out[..., c] = np.take(table[c], images[..., c])
    return out


def dequantize(raw: np.ndarray, spec, out: np.ndarray | None = None) -> np.ndarray:
    """A quantized output's values as float32: ``(q - z) * s``.

    Args:
        raw: The output, any integer type.
        spec: The output's :class:`~firmware_bridge.runtime.backends.TensorSpec`.
        out: A float32 array of ``raw``'s shape to fill, reused between batches so that a
            multi-MiB result does not fault its pages in at every call; ``None``: a new one.
    """
    y = np.subtract(raw, np.float32(spec.zero_point), out=out, dtype=np.float32)
    return np.multiply(y, np.float32(spec.scale), out=y)
