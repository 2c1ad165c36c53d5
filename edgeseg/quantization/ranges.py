"""Start QAT from measured activation ranges, not tfmot's ``[-6, 6]``.

tfmot's activation quantizers (``MovingAverageQuantizer``) start every range at ``[-6, 6]``
and move it by an exponential moving average with decay 0.999 per training step: after the
few hundred steps of a short fine-tuning the ranges are still mostly their initial value. The
normalised input (``[-1, 1]``) is then quantized with a step 6x too coarse, and tensors that
exceed 6 (logits, residual sums) are clipped: the QAT model scores worse than the float one.

:func:`calibrate_ranges` measures each range on the **float** model, as a post-training int8
converter calibrates: every range variable belongs to a layer ``quant_<name>`` whose quantized
tensor is the output of the float layer ``<name>`` (the input quantizer's is the model input,
a ``pre_activation`` range the input of an ``Activation`` layer), and it is set to the minimum
and maximum of that tensor over the calibration batches (widened to include 0). Measuring
through the QAT model instead (a training-mode pass moves each range towards what its layer
sees) fails on models whose activations are small: a tensor of +-0.01 quantized on tfmot's
initial ``[-6, 6]`` is all zeros, so every later layer sees zeros and its range is measured on
them (a denoising-pretrained encoder with stale batch-norm statistics started QAT 36 mIoU
points below its float model that way, while post-training int8 lost 0.15).

One training-mode pass then sets the weight ranges (tfmot's weight quantizers take the current
weights' range at every training step), and the activation ranges are put back.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from edgeseg.tf_env import tf_keras
from firmware_bridge.errors import EdgesegError

ACTIVATION_RANGES = ("output", "post_activation", "pre_activation")
"""Name stems of the moving-average activation ranges (``<stem>_min`` / ``<stem>_max``)."""
INPUT_QUANTIZER = "QuantizeLayer"
"""tfmot's layer that quantizes the model input (its range: ``<its name>_min`` / ``_max``)."""
MIN_WIDTH = 1e-3
"""Narrowest range set. A tensor that was always 0 in the calibration batches (a dead ReLU in
a barely trained model) would get ``[0, 0]``; the next training-mode pass then turned 108
ranges of such a test model into NaN, and the converter failed ("same scale constraint" at a
concatenation)."""
QAT_PREFIX = "quant_"


def _stem(variable) -> tuple[str, str, str]:
    """``(layer, stem, end)`` of a range variable ``<layer>/<stem>_<min|max>:0``."""
    layer = variable.name.split("/")[0]
    leaf = variable.name.split("/")[-1].split(":")[0]
    stem, _, end = leaf.rpartition("_")
    return layer, stem, end


def activation_range_variables(qat) -> list:
    """The activation range variables of a QAT model, in pairs: ``[min0, max0, min1, ...]``.

    The input quantizer's range is not among them (:func:`range_targets` adds it).

    Raises:
        EdgesegError: When a ``*_min`` is not followed by its ``*_max`` (another tfmot layout).
    """
    found = [v for v in qat.non_trainable_weights
             if _stem(v)[2] in ("min", "max") and _stem(v)[1] in ACTIVATION_RANGES]
    for lo, hi in zip(found[::2], found[1::2], strict=True):
        if not (lo.name.endswith("_min:0") and hi.name == lo.name.replace("_min:0", "_max:0")):
            raise EdgesegError(f"unexpected tfmot range variables {lo.name}, {hi.name}")
    return found


def range_targets(qat, model) -> list[tuple]:
    """Each activation range of ``qat`` with the tensor of ``model`` it quantizes.

    Returns:
        ``(min_variable, max_variable, tensor)`` triples, the input's first.

    Raises:
        EdgesegError: For a range whose float tensor cannot be told (a non-linear activation
            fused into a layer that is not an ``Activation`` layer).
    """
    quantizers = [layer for layer in qat.layers if type(layer).__name__ == INPUT_QUANTIZER]
    inputs = [v for layer in quantizers[:1] for v in layer.non_trainable_weights
              if _stem(v)[2] in ("min", "max")]
    targets = [(inputs[0], inputs[1], model.inputs[0])] if len(inputs) == 2 else []
    pairs = activation_range_variables(qat)
    for lo, hi in zip(pairs[::2], pairs[1::2], strict=True):
        name, stem, _ = _stem(lo)
        try:
            layer = model.get_layer(name.removeprefix(QAT_PREFIX))
        except ValueError as exc:
            raise EdgesegError(f"cannot calibrate {lo.name}: the float model has no layer "
                               f"{name.removeprefix(QAT_PREFIX)!r}") from exc
        if stem != "pre_activation":
            targets.append((lo, hi, layer.output))
        elif type(layer).__name__ == "Activation":
            targets.append((lo, hi, layer.input))
        else:
            raise EdgesegError(f"cannot calibrate {lo.name}: {layer.name} fuses a non-linear "
                               "activation; build the model with separate activation layers")
    return targets


def calibrate_ranges(qat, model, batches: Iterable) -> int:
    """Set the activation ranges of a fresh QAT model from the float model's tensors.

    Args:
        qat: A model from :func:`edgeseg.quantization.qat.quantize` of ``model`` (batch-norm frozen, so a
            training-mode pass changes nothing but the ranges).
        model: The float model it was made from.
        batches: Normalised image batches (``NxHxWxC`` float32).

    Returns:
        The number of range variables set.
    """
    _, keras = tf_keras()
    images = [np.asarray(b, np.float32) for b in batches]
    targets = range_targets(qat, model)
    if not images or not targets:
        return 0
    probe = keras.Model(model.inputs, [t for _, _, t in targets])
    lo = np.full(len(targets), np.inf)
    hi = np.full(len(targets), -np.inf)
    for batch in images:
        outs = probe(batch, training=False)
        outs = outs if isinstance(outs, list) else [outs]
        lo = np.minimum(lo, [float(np.min(o)) for o in outs])
        hi = np.maximum(hi, [float(np.max(o)) for o in outs])
    lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
    hi = np.maximum(hi, lo + MIN_WIDTH)
    qat(images[0], training=True)  # the weight ranges (and moved activation ranges)
    for (vmin, vmax, _), a, b in zip(targets, lo, hi, strict=True):
        vmin.assign(np.full(vmin.shape, a, np.float32))
        vmax.assign(np.full(vmax.shape, b, np.float32))
    return 2 * len(targets)
