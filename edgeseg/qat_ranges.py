"""Start QAT from measured activation ranges, not tfmot's ``[-6, 6]``.

tfmot's activation quantizers (``MovingAverageQuantizer``) start every range at ``[-6, 6]``
and move it by an exponential moving average with decay 0.999 per training step: after the
few hundred steps of a short fine-tuning the ranges are still mostly their initial value. The
normalised input (``[-1, 1]``) is then quantized with a step 6x too coarse, and tensors that
exceed 6 (logits, residual sums) are clipped: the QAT model scores worse than the float one.

:func:`calibrate_ranges` measures each range instead. One training-mode forward pass moves
every range variable ``v`` to ``v' = v + (1 - decay) * (r - v)`` where ``r`` is the batch's
range, so ``r = v + (v' - v) / (1 - decay)`` is recovered exactly from the variable before
and after the pass; the variable is then set to the mean of ``r`` over the batches. Later
layers see the quantized output of earlier ones, so a few rounds are made (each round's
ranges feed the next). Weight ranges (``kernel_min`` ...) are set by the same passes (their
quantizers take the current weights' range at every training step).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from firmware_bridge.errors import EdgesegError

EMA_DECAY = 0.999
"""tfmot's ``MovingAvgQuantize`` decay (``quant_ops.py``, tensorflow-model-optimization 0.8)."""
ACTIVATION_RANGES = ("output", "post_activation", "pre_activation")
"""Name stems of the moving-average activation ranges (``<stem>_min`` / ``<stem>_max``). The
input's ``quantize_layer`` range is an all-values quantizer (running min / max, starting at
``[0, 0]``: a fresh QAT model in inference mode zeroes its input); the calibration passes set
it as they go."""
MIN_WIDTH = 1e-3
"""Narrowest range set. A tensor that was always 0 in the calibration batches (a dead ReLU in
a barely trained model) would get ``[0, 0]``; the next round's training-mode pass then turned
108 ranges of such a test model into NaN, and the converter failed ("same scale constraint"
at a concatenation)."""


def activation_range_variables(qat) -> list:
    """The activation range variables of a QAT model, in pairs: ``[min0, max0, min1, ...]``.

    Raises:
        EdgesegError: When a ``*_min`` is not followed by its ``*_max`` (another tfmot layout).
    """
    found = []
    for v in qat.non_trainable_weights:
        leaf = v.name.split("/")[-1].split(":")[0]
        stem, _, end = leaf.rpartition("_")
        if end in ("min", "max") and stem in ACTIVATION_RANGES:
            found.append(v)
    for lo, hi in zip(found[::2], found[1::2], strict=True):
        if not (lo.name.endswith("_min:0") and hi.name == lo.name.replace("_min:0", "_max:0")):
            raise EdgesegError(f"unexpected tfmot range variables {lo.name}, {hi.name}")
    return found


def calibrate_ranges(qat, batches: Iterable, rounds: int = 3) -> int:
    """Set the activation ranges of a fresh QAT model from calibration batches.

    Args:
        qat: A model from :func:`edgeseg.qat.quantize` (batch-norm frozen, so a training-mode
            pass changes nothing but the ranges; dropout is active, as in fine-tuning).
        batches: Normalised image batches (``NxHxWxC`` float32); kept in memory for the rounds.
        rounds: Passes over the batches.

    Returns:
        The number of range variables set.
    """
    images = [np.asarray(b, np.float32) for b in batches]
    variables = activation_range_variables(qat)
    if not images or not variables:
        return 0
    for _ in range(rounds):
        start = [v.numpy() for v in variables]
        measured = [np.zeros_like(s) for s in start]
        for batch in images:
            qat(batch, training=True)
            for i, v in enumerate(variables):
                measured[i] += start[i] + (v.numpy() - start[i]) / (1.0 - EMA_DECAY)
                v.assign(start[i])
        means = [m / len(images) for m in measured]
        for i in range(0, len(variables), 2):
            lo, hi = np.minimum(means[i], 0.0), np.maximum(means[i + 1], 0.0)
            variables[i].assign(lo)
            variables[i + 1].assign(np.maximum(hi, lo + MIN_WIDTH))
    return len(variables)
