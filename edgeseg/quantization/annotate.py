"""What tfmot's default 8-bit scheme lacks or gets wrong for our graphs.

1. Annotations for the layers the scheme leaves out (below). 2. The input order of
   concatenations, which tfmot's graph transforms can permute (:func:`concat_order_fix`,
   checked by :func:`check_input_order`).


MobileNetV3's hard-sigmoid (``Rescaling(1/6, offset=0.5)`` -> ``ReLU(1)`` in our backbone
table), its hard-swish and its squeeze-excite gate (``Multiply``), and edgeseg's max-unpooling
(``MaxUnpool2D``, :func:`edgeseg.models.layers.max_unpool`) have no entry in tfmot's default
registry, and ``quantize_model`` refuses such a model. They have no weights and compute an
elementwise function or move values (the unpooling's comparisons and selections run on int8
values of one scale in TFLite), so the right fake quantization is on their output, as the
int8 kernels (MUL, ADD, a requantize after the unpooling) requantize there:
:func:`output_quantize_config` makes a ``QuantizeConfig`` that does exactly that, and
:func:`annotate` attaches it to those layers before ``quantize_apply`` (every other layer gets
the default scheme).
"""

from __future__ import annotations

import contextlib
import functools

from edgeseg.tf_env import tf_keras
from firmware_bridge.errors import EdgesegError, require

OUTPUT_ONLY = ("Multiply", "Rescaling", "MaxUnpool2D")
"""Weightless layers quantized at their output."""


@functools.lru_cache(maxsize=1)
def output_quantize_config():
    """The ``OutputQuantizeConfig`` class (built on first use: it subclasses a tfmot class).

    Returns:
        A ``tfmot.quantization.keras.QuantizeConfig`` subclass: no weights or activations
        quantized, the output by an 8-bit asymmetric moving-average quantizer.
    """
    qk = require("tensorflow_model_optimization", "train").quantization.keras

    class OutputQuantizeConfig(qk.QuantizeConfig):
        """Quantize a weightless layer's output only (8 bit, asymmetric, per tensor)."""

        def get_weights_and_quantizers(self, layer):
            return []

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            pass

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            return [qk.quantizers.MovingAverageQuantizer(
                num_bits=8, per_axis=False, symmetric=False, narrow_range=False)]

        def get_config(self):
            return {}

    return OutputQuantizeConfig


def needs_annotation(model, registry) -> list:
    """The layers of ``model`` that :func:`annotate` handles (unsupported, output-only type)."""
    return [layer for layer in model.layers
            if type(layer).__name__ in OUTPUT_ONLY and not registry.supports(layer)]


def annotate_and_quantize(model, registry):
    """``quantize_model`` with :data:`OUTPUT_ONLY` layers annotated (weights kept).

    Args:
        model: A float ``tf_keras`` model; left unchanged.
        registry: tfmot's default 8-bit registry (to tell supported layers).

    Returns:
        The quantization-aware model.
    """
    _, keras = tf_keras()

    qk = require("tensorflow_model_optimization", "train").quantization.keras
    config_cls = output_quantize_config()
    targets = {layer.name for layer in needs_annotation(model, registry)}

    def clone(layer):
        new = layer.__class__.from_config(layer.get_config())
        return qk.quantize_annotate_layer(new, config_cls()) if layer.name in targets else new

    marked = keras.models.clone_model(model, clone_function=clone)
    marked.set_weights(model.get_weights())
    with qk.quantize_scope({"OutputQuantizeConfig": config_cls}):
        return qk.quantize_apply(qk.quantize_annotate_model(marked))


@contextlib.contextmanager
def concat_order_fix():
    """Keep the input order of multi-input layers through tfmot's graph transforms.

    tfmot 0.8.1's ``ModelTransformer._get_layers`` returns the matched layers in the order of
    the model config, not in the order asked for (tensorflow/model-optimization#1179, #1061):
    a ``Concatenate`` whose first input is declared after its second comes out with its
    inputs swapped, and the layer after it then reads the wrong channels. DeepLabV3+'s ASPP
    concatenation ``[1x1, r6, r12, r18, pool]`` became ``[pool, 1x1, r6, r12, r18]``: the
    QAT model agreed with the float one on 63 % of the pixels. Within this context the method
    returns the layers in the order of the names (first occurrence; the same set as before).
    """
    module = require("tensorflow_model_optimization.python.core.quantization.keras."
                     "graph_transformations.model_transformer", "train")
    transformer = module.ModelTransformer
    original = transformer._get_layers

    def ordered(self, layer_names):
        by_name = {layer["config"]["name"]: layer for layer in self._config["layers"]}
        return [by_name[n] for n in dict.fromkeys(layer_names) if n in by_name]

    transformer._get_layers = ordered
    try:
        yield
    finally:
        transformer._get_layers = original


def check_input_order(model, qat) -> None:
    """Refuse a QAT model whose ``Concatenate`` layers take their inputs in another order.

    Raises:
        EdgesegError: Naming the layer and both orders.
    """

    def inputs(layer) -> list[str]:
        inbound = layer.inbound_nodes[0].inbound_layers
        inbound = inbound if isinstance(inbound, list) else [inbound]
        return [n.name.removeprefix("quant_") for n in inbound]

    for layer in model.layers:
        if type(layer).__name__ != "Concatenate":
            continue
        got = inputs(qat.get_layer("quant_" + layer.name))
        if got != inputs(layer):
            raise EdgesegError(f"QAT reordered the inputs of {layer.name}: {inputs(layer)} -> {got} "
                               "(tfmot ModelTransformer bug); this tfmot version is not supported")
