"""Backbone table: MobileNetV2 (alpha 0.35-1.0) and MobileNetV3 Small/Large from tf_keras.

Each entry of :data:`BACKBONES` is plain data: the ``tf_keras.applications`` constructor, its
keyword arguments, the Keras-cache file names of its ImageNet no-top weights, and the layers
whose tensors are the skip features at strides 2, 4, 8, 16 and 32 (as in qubvel's
``_default_feature_layers``). A feature reference is a layer name (its output) or
``"<layer>:input"`` (the input of that layer): MobileNetV3's activations have auto-generated
names that change from build to build, so its features are taken at the input of the stable
``.../depthwise/pad`` layer of each down-sampling block (the expanded, activated tensor just
before the stride). ``":output"`` is the backbone's last tensor.

Every backbone is built *flat* on the caller's input tensor (``input_tensor=``), so its layers
become layers of the segmentation model: a model nested in a model cannot be quantized by
tensorflow-model-optimization. MobileNetV3's hard-sigmoid is rewritten without TFOpLambda
layers (see :func:`build_backbone`); its hard-swish and squeeze-excite still use ``Multiply``,
which tfmot's default scheme does not quantize (QAT needs a QuantizeConfig for ``Multiply``
and ``Rescaling``; post-training int8 works as is).

Normalisation is outside the model for every backbone: ``(pixel - 127.5) / 127.5``.
MobileNetV3 is built with ``include_preprocessing=False`` to match (its ImageNet weights
expect exactly that range, which its own ``Rescaling`` layer would otherwise apply).
"""

from __future__ import annotations

import glob
import os

from edgeseg.tf_env import tf_keras
from firmware_bridge.errors import EdgesegError

NORMALISATION = {"mean": 127.5, "std": 127.5}
"""Input normalisation of every backbone: ``(pixel - mean) / std``."""

_V2_FEATURES = {
    2: "block_1_expand_relu",
    4: "block_3_expand_relu",
    8: "block_6_expand_relu",
    16: "block_13_expand_relu",
    32: "out_relu",
}


def _v2(alpha: float) -> dict:
    return {
        "constructor": "MobileNetV2",
        "params": {"alpha": alpha},
        "features": _V2_FEATURES,
        "cache_files": [f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_*_no_top.h5"],
    }


def _v3(size: str, down_blocks: tuple[int, int, int, int]) -> dict:
    pads = [f"expanded_conv{'_' + str(b) if b else ''}/depthwise/pad:input" for b in down_blocks]
    return {
        "constructor": f"MobileNetV3{size.capitalize()}",
        "params": {"include_preprocessing": False},
        "features": {2: pads[0], 4: pads[1], 8: pads[2], 16: pads[3], 32: ":output"},
        "cache_files": [f"weights_mobilenet_v3_{size}_224_1.0_float_no_top_v2.h5"],
    }


BACKBONES: dict[str, dict] = {
    "mobilenetv2_035": _v2(0.35),
    "mobilenetv2_050": _v2(0.5),
    "mobilenetv2_075": _v2(0.75),
    "mobilenetv2_100": _v2(1.0),
    # Down-sampling blocks (the ones with a ZeroPadding2D before the depthwise conv).
    "mobilenetv3_small": _v3("small", (0, 1, 3, 8)),
    "mobilenetv3_large": _v3("large", (1, 3, 6, 12)),
}
"""Backbone name -> constructor, parameters, skip features by stride, Keras-cache files."""

STRIDES = (2, 4, 8, 16, 32)


def get_backbone_spec(name: str) -> dict:
    """Look a backbone up in :data:`BACKBONES`.

    Args:
        name: Backbone name, e.g. ``"mobilenetv2_035"``.

    Returns:
        The table entry.

    Raises:
        EdgesegError: For an unknown name; the message lists the valid ones.
    """
    if name not in BACKBONES:
        raise EdgesegError(
            f"unknown backbone {name!r}; valid backbones: {', '.join(sorted(BACKBONES))}"
        )
    return BACKBONES[name]


def keras_cache_file(name: str) -> str | None:
    """Return the path of a backbone's ImageNet no-top weights in Keras's cache, if present.

    The cache is ``$KERAS_HOME/models`` or ``~/.keras/models`` (where
    ``tf_keras.applications`` stores downloads).

    Args:
        name: Backbone name.

    Returns:
        The file path, or ``None`` when no matching file is cached.
    """
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    for pattern in get_backbone_spec(name)["cache_files"]:
        hits = sorted(glob.glob(os.path.join(home, "models", pattern)))
        if hits:
            return hits[-1]
    return None


def resolve_weights(name: str, weights: str | os.PathLike | None) -> str | None:
    """Turn an encoder-weights argument into a file path (or ``None`` for random init).

    Args:
        name: Backbone name.
        weights: ``None`` (random initialisation), ``"imagenet"`` (Keras's cache only: these
            machines cannot download), or a path to a Keras-applications no-top ``.h5`` file.

    Returns:
        A path to an existing file, or ``None``.

    Raises:
        EdgesegError: When the file does not exist or ImageNet weights are not cached.
    """
    if weights is None:
        return None
    if str(weights) == "imagenet":
        path = keras_cache_file(name)
        if path is None:
            files = ", ".join(get_backbone_spec(name)["cache_files"])
            raise EdgesegError(
                f"ImageNet weights for {name} are not in Keras's cache (~/.keras/models/{files}) "
                "and cannot be downloaded here: pass the path of a Keras-applications no-top "
                "weights file instead (e.g. --encoder-weights "
                "path/to/mobilenet_v2_0.35_224_no_top.h5), or no weights"
            )
        return path
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise EdgesegError(f"encoder weights file not found: {path}")
    return path


def build_backbone(name: str, input_tensor, weights: str | os.PathLike | None = None) -> dict:
    """Build a backbone flat on ``input_tensor`` and return its skip features.

    MobileNetV3 is first built on its own input (weights loaded by layer order), then its
    layers are copied onto ``input_tensor`` by :func:`_retrace_without_tf_ops`, which
    rewrites the hard-sigmoid (``x + 3`` and ``* 1/6`` TFOpLambda layers around a ReLU6)
    into ``Rescaling(1/6, offset=0.5) -> ReLU(max_value=1)``: the same function, but made of
    serialisable Keras layers that tfmot can clone and annotate.

    Args:
        name: Backbone name from :data:`BACKBONES`.
        input_tensor: A Keras input tensor ``(None, H, W, 3)``, already normalised.
        weights: See :func:`resolve_weights`; a file is loaded by layer order.

    Returns:
        Stride (2, 4, 8, 16, 32) -> the Keras tensor of the skip feature at that stride.

    Raises:
        EdgesegError: Unknown backbone, missing weights, or a weights file that does not fit
            the backbone (e.g. the wrong alpha).
    """
    _, keras = tf_keras()
    spec = get_backbone_spec(name)
    path = resolve_weights(name, weights)
    constructor = getattr(keras.applications, spec["constructor"])
    retrace = spec["constructor"].startswith("MobileNetV3")
    source = keras.Input(tuple(input_tensor.shape[1:])) if retrace else input_tensor
    try:
        model = constructor(input_tensor=source, include_top=False, weights=path, **spec["params"])
    except ValueError as exc:
        if path is None:
            raise
        raise EdgesegError(
            f"weights file {path} does not fit backbone {name} ({exc}); pass the no-top "
            "Keras-applications file of the same architecture and alpha"
        ) from exc
    mapping = _retrace_without_tf_ops(model, input_tensor) if retrace else {}

    def tensor(t):
        return mapping.get(id(t), t)

    features = {}
    for stride, ref in spec["features"].items():
        if ref == ":output":
            features[stride] = tensor(model.outputs[0])
        elif ref.endswith(":input"):
            features[stride] = tensor(model.get_layer(ref[: -len(":input")]).input)
        else:
            features[stride] = tensor(model.get_layer(ref).output)
    return features


def _retrace_without_tf_ops(model, input_tensor) -> dict:
    """Copy ``model``'s layers onto ``input_tensor``, rewriting MobileNetV3's hard-sigmoid.

    Returns:
        ``id(original tensor) -> new tensor`` for every tensor of ``model``.

    Raises:
        EdgesegError: On a TFOpLambda or ReLU6 that is not part of a hard-sigmoid.
    """
    tf, keras = tf_keras()
    mapping = {id(model.inputs[0]): input_tensor}
    rescaled = set()  # ids of new tensors x / 6 + 0.5
    for layer in model.layers[1:]:
        node = layer.inbound_nodes[0]
        args = tf.nest.map_structure(lambda t: mapping[id(t)], node.call_args[0])
        if type(layer).__name__ == "TFOpLambda":
            fn, const = layer.get_config()["function"], node.call_args[1:]
            if fn == "__operators__.add" and const == (3.0,):
                name = f"hard_sigmoid_{len(rescaled)}"
                new = keras.layers.Rescaling(1 / 6, offset=0.5, name=name)(args)
                rescaled.add(id(new))
            elif fn == "math.multiply" and const == (1 / 6,):
                new = args  # already divided by 6 in the Rescaling
            else:
                raise EdgesegError(f"cannot rewrite layer {layer.name} ({fn} {const})")
        else:
            copy = layer.__class__.from_config(layer.get_config())
            if type(layer).__name__ == "ReLU" and layer.max_value is not None:
                if id(args) not in rescaled or float(layer.max_value) != 6.0:
                    raise EdgesegError(f"unexpected bounded ReLU {layer.name} in {model.name}")
                copy = keras.layers.ReLU(max_value=1.0, name=layer.name)
            new = copy(args)
            copy.set_weights(layer.get_weights())
        mapping[id(layer.output)] = new
    return mapping
