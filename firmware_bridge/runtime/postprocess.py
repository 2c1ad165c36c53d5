"""Model output to probabilities: softmax / sigmoid, and bilinear resizing of score maps."""

from __future__ import annotations

import numpy as np

from firmware_bridge.errors import EdgesegError


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax."""
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Logistic function, stable for large magnitudes."""
    return (0.5 * (1.0 + np.tanh(0.5 * logits))).astype(logits.dtype, copy=False)


def to_probabilities(y: np.ndarray, kind: str) -> np.ndarray:
    """Turn a ``...xK`` model output into probabilities.

    Args:
        y: Dequantised float output, channels last.
        kind: ``"softmax"`` / ``"sigmoid"`` (already probabilities, returned as they are) or
            ``"logits"`` (softmax over ``K > 1`` channels, sigmoid of a single channel).

    Returns:
        Probabilities, same shape.

    Raises:
        EdgesegError: For an unknown kind.
    """
    if kind in ("softmax", "sigmoid"):
        return y
    if kind == "logits":
        return sigmoid(y) if y.shape[-1] == 1 else softmax(y)
    raise EdgesegError(f"unknown output kind {kind!r}; use softmax, logits or sigmoid")


def _axis_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights for half-pixel-centre bilinear resampling along one axis."""
    pos = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    pos = np.clip(pos, 0, n_in - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (pos - lo).astype(np.float32)


def resize_bilinear(scores: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize ``(N, h, w, K)`` score maps to ``(N, height, width, K)`` (half-pixel centres).

    Models with an output stride (a score map smaller than the input) are brought back to the
    input size before blending. Returns the input unchanged when the size already matches.
    """
    n, h, w, k = scores.shape
    if (h, w) == (height, width):
        return scores
    y0, y1, fy = _axis_weights(h, height)
    x0, x1, fx = _axis_weights(w, width)
    rows = scores[:, y0] * (1 - fy)[None, :, None, None] + scores[:, y1] * fy[None, :, None, None]
    return (rows[:, :, x0] * (1 - fx)[None, None, :, None]
            + rows[:, :, x1] * fx[None, None, :, None]).astype(scores.dtype, copy=False)
