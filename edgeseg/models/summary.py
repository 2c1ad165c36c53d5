"""Parameters and multiply-accumulates (MACs) of a Keras model, counted analytically per layer.

Counted: Conv2D (``out_h * out_w * kh * kw * cin / groups * cout``), DepthwiseConv2D
(``out_h * out_w * kh * kw * cin * depth_multiplier``), SeparableConv2D (depthwise +
pointwise), Conv2DTranspose (``in_h * in_w * kh * kw * cin * cout``: every input pixel
scatters a full kernel) and Dense (``inputs * units`` per position). Biases, batch-norm (folded
at export), activations, pooling, resizing and element-wise ops are not counted: they are a few
percent of a MobileNet's work. QAT wrappers are unwrapped.
"""

from __future__ import annotations

import math


def _shape(shape):
    """First shape of a layer's (possibly list-valued) shape attribute."""
    if isinstance(shape, list):
        shape = shape[0]
    return tuple(shape)


def layer_macs(layer) -> int:
    """Return the MACs of one call of ``layer`` for batch size 1 (0 for uncounted layers).

    Args:
        layer: A built ``tf_keras`` layer with known input/output shapes.

    Returns:
        The number of multiply-accumulates.
    """
    layer = getattr(layer, "layer", layer)  # tfmot QuantizeWrapper
    kind = type(layer).__name__
    if kind not in {"Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose", "Dense"}:
        return 0
    in_shape, out_shape = _shape(layer.input_shape), _shape(layer.output_shape)
    cin = int(in_shape[-1])
    if kind == "Dense":
        return math.prod(int(d) for d in in_shape[1:]) * int(layer.units)
    kh, kw = layer.kernel_size
    in_hw = int(in_shape[1]) * int(in_shape[2])
    out_hw = int(out_shape[1]) * int(out_shape[2])
    cout = int(out_shape[-1])
    if kind == "Conv2D":
        return out_hw * kh * kw * (cin // int(getattr(layer, "groups", 1))) * cout
    if kind == "Conv2DTranspose":
        return in_hw * kh * kw * cin * cout
    depthwise = out_hw * kh * kw * cin * int(layer.depth_multiplier)
    if kind == "DepthwiseConv2D":
        return depthwise
    return depthwise + out_hw * cin * int(layer.depth_multiplier) * cout


def model_summary(model) -> dict:
    """Count a model's parameters and MACs.

    Args:
        model: A built ``tf_keras`` model with a fixed input size.

    Returns:
        ``{"params": int, "trainable_params": int, "macs": int}`` (MACs for one image).
    """
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    return {
        "params": int(model.count_params()),
        "trainable_params": int(trainable),
        "macs": int(sum(layer_macs(layer) for layer in model.layers)),
    }
