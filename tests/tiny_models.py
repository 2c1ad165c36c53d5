"""Tiny segmentation models for the runtime tests, built without TensorFlow where possible.

One network in every format: ``conv3x3(3->8) relu -> [dilated conv3x3(8->8)] + [global average
pool -> conv1x1(8->8)] -> relu -> conv1x1(8->K) -> softmax``. The global-pool branch makes every
pixel depend on the whole input (like DeepLab's image pooling), so tiled and whole-image
predictions differ a little everywhere, not only at tile borders.

ONNX variants come from ``onnx.helper``: float NCHW and NHWC with dynamic batch and size,
uint8/int8 through Q/DQ nodes at the edges, and a one-channel logit model. OpenVINO IR is
converted from the ONNX file; TFLite needs TensorFlow (tests only; one conversion).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import pytest

K = 4
MEAN, STD = 127.5, 127.5
TFLITE_SIZE = 64
GLOBAL_SCALE = 0.02  # weight scale of the global-pool branch: small, as in a trained net


def weights(k: int = K, seed: int = 4) -> dict[str, np.ndarray]:
    """Deterministic weights, OIHW."""
    rng = np.random.default_rng(seed)

    def n(*shape, s=0.5):
        return rng.normal(0.0, s, shape).astype(np.float32)

    return {"w1": n(8, 3, 3, 3), "b1": n(8, s=0.1), "w2": n(8, 8, 3, 3, s=0.3),
            "b2": n(8, s=0.1), "wg": n(8, 8, 1, 1, s=GLOBAL_SCALE), "bg": n(8, s=0.05),
            "w3": n(k, 8, 1, 1), "b3": n(k, s=0.1)}


def reference_logits(x: np.ndarray) -> np.ndarray:
    """The network's logits in float64 for a normalised float NCHW batch ``x``."""
    w = {name: v.astype(np.float64) for name, v in weights().items()}

    def conv(a, kernel, bias, dilation=1):
        kh, kw = kernel.shape[2:]
        h, wd = a.shape[2:]
        pad = dilation * (kh // 2)
        a = np.pad(a, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        out = sum(np.einsum("nchw,oc->nohw", a[:, :, i * dilation : i * dilation + h,
                                              j * dilation : j * dilation + wd], kernel[:, :, i, j])
                  for i in range(kh) for j in range(kw))
        return out + bias[None, :, None, None]

    r1 = np.maximum(conv(np.asarray(x, np.float64), w["w1"], w["b1"]), 0)
    pooled = conv(r1.mean(axis=(2, 3), keepdims=True), w["wg"], w["bg"])
    r2 = np.maximum(conv(r1, w["w2"], w["b2"], dilation=2) + pooled, 0)
    return conv(r2, w["w3"], w["b3"])


UNIT_ROUNDOFF = 2.0 ** -24  # float32


def prob_atol(x: np.ndarray, tiled: bool = False) -> float:
    """How far apart two float32 evaluations of the network may put a probability on ``x``.

    For tests that compare two evaluations (two runtimes, batched and single, NHWC and NCHW):
    the runtimes sum in different orders (oneDNN, MLAS and XNNPACK block their reductions by
    the CPU's vector width and pick kernels per input shape), so rounding may differ, and only
    rounding. Each logit is a chain of float32 dot products of 27, 72 and 8 terms; rounding
    errors of random sign grow like ``sqrt(n) * u`` per dot product (``u = 2^-24``) relative to
    the logits' scale ``max|z|``, and the pooled branch adds a mean over the ``H * W`` pixels
    that enters through weights ``GLOBAL_SCALE`` times smaller. The softmax's slope is at most
    1/2 and two evaluations may err in opposite directions (2 * 1/2 = 1), so::

        (sqrt(27) + sqrt(72) + sqrt(8) + GLOBAL_SCALE * sqrt(H * W)) * u * max|z|

    That is 2.4e-5 for the standard-normal batches of the backend tests (``max|z|`` ~ 23) and
    1e-5 for the 300 x 420 test image (``max|z|`` 7.3); float32 forward passes with a random
    summation order in every reduction stay within a tenth of it (1.9e-6 and 7.7e-7 apart).
    ``tiled``: both sides blend up to four tiles per pixel, a weighted mean that rounds each
    side by up to ``8u`` more. The faults these comparisons are for are far larger: the pooled
    branch averaged over the batch instead of each image moves probabilities by 1.4e-3, bf16
    inference by 1e-2 to 2e-2. (The worst-case bound, every rounding of every order aligned,
    is 8e-4: as large as those faults, so not a usable tolerance.)

    Args:
        x: A normalised float NCHW batch, or an ``HxWx3`` uint8 image (normalised here with
            ``MEAN`` and ``STD``, as the segmenter does).
        tiled: Both sides are tiled predictions (blended).

    Returns:
        The absolute tolerance for the probabilities.
    """
    if x.dtype == np.uint8:
        x = ((x.astype(np.float64) - MEAN) / STD).transpose(2, 0, 1)[None]
    h, w = x.shape[2:]
    depth = np.sqrt(27) + np.sqrt(72) + np.sqrt(8) + GLOBAL_SCALE * np.sqrt(h * w)
    atol = float(depth * UNIT_ROUNDOFF * np.abs(reference_logits(x)).max())
    return atol + (16 * UNIT_ROUNDOFF if tiled else 0.0)


def _onnx_model(w: dict, layout: str = "NCHW", quant: str | None = None,
                output: str = "softmax", meta_json: str | None = None,
                size: tuple[int, int] | None = None):
    """The tiny network as an ONNX model.

    Args:
        w: Its weights (:func:`weights`).
        layout: ``"NCHW"`` or ``"NHWC"`` input and output.
        quant: ``"uint8"`` or ``"int8"`` input and output through Q/DQ nodes, or ``None``.
        output: ``"softmax"``, ``"sigmoid"`` (of every channel) or ``"logits"``.
        meta_json: edgeseg metadata to embed.
        size: A fixed input ``(height, width)``; ``None``: dynamic.

    Returns:
        The ``onnx.ModelProto``.
    """
    from onnx import TensorProto, helper, numpy_helper

    h = helper
    inits = [numpy_helper.from_array(v, name) for name, v in w.items()]
    nodes, x = [], "x"
    in_type = {None: TensorProto.FLOAT, "uint8": TensorProto.UINT8, "int8": TensorProto.INT8}[quant]
    k = w["w3"].shape[0]
    if quant:
        qdtype = np.uint8 if quant == "uint8" else np.int8
        in_zp, out_zp = (128, 0) if quant == "uint8" else (0, -128)
        inits += [numpy_helper.from_array(np.array(1 / 127.5, np.float32), "in_s"),
                  numpy_helper.from_array(np.array(in_zp, qdtype), "in_z"),
                  numpy_helper.from_array(np.array(1 / 256, np.float32), "out_s"),
                  numpy_helper.from_array(np.array(out_zp, qdtype), "out_z")]
        nodes.append(h.make_node("DequantizeLinear", ["x", "in_s", "in_z"], ["xf"]))
        x = "xf"
    if layout == "NHWC":
        nodes.append(h.make_node("Transpose", [x], ["xt"], perm=[0, 3, 1, 2]))
        x = "xt"
    nodes += [
        h.make_node("Conv", [x, "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c1"], ["r1"]),
        h.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[2, 2, 2, 2], dilations=[2, 2]),
        h.make_node("GlobalAveragePool", ["r1"], ["gp"]),
        h.make_node("Conv", ["gp", "wg", "bg"], ["g"]),
        h.make_node("Add", ["c2", "g"], ["s"]),
        h.make_node("Relu", ["s"], ["r2"]),
        h.make_node("Conv", ["r2", "w3", "b3"], ["logits"]),
    ]
    y = "logits"
    if output == "softmax":
        nodes.append(h.make_node("Softmax", [y], ["p"], axis=1))
        y = "p"
    elif output == "sigmoid":
        nodes.append(h.make_node("Sigmoid", [y], ["p"]))
        y = "p"
    if layout == "NHWC":
        nodes.append(h.make_node("Transpose", [y], ["yt"], perm=[0, 2, 3, 1]))
        y = "yt"
    if quant:
        nodes.append(h.make_node("QuantizeLinear", [y, "out_s", "out_z"], ["yq"]))
        y = "yq"
    hh, ww = size or ("H", "W")
    dims_in = ["N", 3, hh, ww] if layout == "NCHW" else ["N", hh, ww, 3]
    dims_out = ["N", k, hh, ww] if layout == "NCHW" else ["N", hh, ww, k]
    graph = h.make_graph(nodes, "tiny_fcn", [h.make_tensor_value_info("x", in_type, dims_in)],
                         [h.make_tensor_value_info(y, in_type, dims_out)], inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    if meta_json:
        h.set_model_props(model, {"edgeseg": meta_json})
    return model


def metadata(classes: int = K, **kw):
    from firmware_bridge.runtime.metadata import ModelMetadata

    return ModelMetadata(classes=[f"c{i}" for i in range(classes)], mean=[MEAN], std=[STD],
                         layout=kw.pop("layout", "NCHW"), tile_size=64, tile_overlap=16,
                         colours=["#FF0000", "#00FF00", "#0000FF", "#FFFF00"][:classes], **kw)


def to_openvino(onnx_path: Path, xml_path: Path, meta_json: str | None = None) -> Path:
    """Convert an ONNX file to OpenVINO IR (FP32 weights), with metadata in rt_info."""
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    if meta_json:
        model.set_rt_info(meta_json, "edgeseg")
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return xml_path


@functools.cache
def build_onnx(folder: Path) -> dict[str, Path]:
    """Every ONNX / OpenVINO variant in ``folder`` (built once per session)."""
    import onnx

    w = weights()
    out = {}
    variants = {
        "nchw": dict(meta_json=metadata().to_json()),
        "nhwc": dict(layout="NHWC", meta_json=metadata(layout="NHWC").to_json()),
        "foreign": dict(),
        "uint8": dict(quant="uint8", meta_json=metadata().to_json()),
        "int8": dict(quant="int8", meta_json=metadata().to_json()),
        "standardised": dict(meta_json=metadata(standardise="image").to_json()),
    }
    for name, kw in variants.items():
        path = folder / f"{name}.onnx"
        onnx.save(_onnx_model(w, **kw), str(path))
        out[name] = path
    path = folder / "logit1.onnx"
    onnx.save(_onnx_model(weights(k=1), output="logits"), str(path))
    out["logit1"] = path
    out["nchw_xml"] = to_openvino(out["nchw"], folder / "nchw.xml", variants["nchw"]["meta_json"])
    out["uint8_xml"] = to_openvino(out["uint8"], folder / "uint8.xml",
                                   variants["uint8"]["meta_json"])
    return out


@functools.cache
def build_tflite(folder: Path) -> Path:
    """The same network as a float TFLite file, NHWC, input ``[-1, 64, 64, 3]`` (needs TF)."""
    from edgeseg.tf_env import tf_keras
    from firmware_bridge.runtime.metadata import tflite_with_metadata

    tf, keras = tf_keras()
    w = {k: v for k, v in weights().items()}
    hwio = {k: np.transpose(v, (2, 3, 1, 0)) for k, v in w.items() if k.startswith("w")}
    inp = keras.Input((TFLITE_SIZE, TFLITE_SIZE, 3), name="x")
    c1 = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inp)
    c2 = keras.layers.Conv2D(8, 3, padding="same", dilation_rate=2, name="c2")(c1)
    gp = keras.layers.GlobalAveragePooling2D(keepdims=True)(c1)
    g = keras.layers.Conv2D(8, 1, name="g")(gp)
    r2 = keras.layers.ReLU()(keras.layers.Add()([c2, g]))
    logits = keras.layers.Conv2D(K, 1, name="c3")(r2)
    probs = keras.layers.Softmax()(logits)
    model = keras.Model(inp, probs)
    for layer, (wk, bk) in {"c1": ("w1", "b1"), "c2": ("w2", "b2"), "g": ("wg", "bg"),
                            "c3": ("w3", "b3")}.items():
        model.get_layer(layer).set_weights([hwio[wk], w[bk]])
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    data = converter.convert()
    path = folder / "tiny.tflite"
    path.write_bytes(tflite_with_metadata(data, metadata(layout="NHWC")))
    return path


def tflite_bytes(quant: bool = False, k: int = K, size: int = TFLITE_SIZE,
                 input_scale: float = 1 / 127.5, input_zero_point: int = 128) -> bytes:
    """A one-layer TFLite model written with LiteRT's schema, without TensorFlow.

    ``x [1, size, size, 3] -> conv1x1(3->k) -> softmax``, NHWC. With ``quant`` the input is
    uint8 and a DEQUANTIZE with ``input_scale`` and ``input_zero_point`` turns it to float
    (a damaged file's parameters can be written on purpose).

    Args:
        quant: uint8 input through DEQUANTIZE instead of float32.
        k: Classes.
        size: Input height and width.
        input_scale: Quantisation scale of the uint8 input.
        input_zero_point: Its zero point.

    Returns:
        The flatbuffer bytes (no edgeseg metadata).
    """
    schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    from ai_edge_litert.tools.flatbuffer_utils import convert_object_to_bytearray

    w = weights(k)
    kernel = np.ascontiguousarray(np.transpose(w["w3"][:, :3], (0, 2, 3, 1)))  # OHWI
    buffers = [schema.BufferT(), schema.BufferT(), schema.BufferT()]
    buffers[1].data = np.frombuffer(kernel.tobytes(), np.uint8)
    buffers[2].data = np.frombuffer(w["b3"].tobytes(), np.uint8)

    def tensor(name, shape, kind=schema.TensorType.FLOAT32, buffer=0, quantization=None):
        t = schema.TensorT()
        t.name, t.shape, t.type, t.buffer, t.quantization = name, shape, kind, buffer, quantization
        return t

    def op(code, inputs, outputs, options_type, options):
        o = schema.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = code, inputs, outputs
        o.builtinOptionsType, o.builtinOptions = options_type, options
        return o

    image = [1, size, size]
    tensors = [tensor("x", [*image, 3]), tensor("w", list(kernel.shape), buffer=1),
               tensor("b", [k], buffer=2), tensor("logits", [*image, k]),
               tensor("probs", [*image, k])]
    conv = schema.Conv2DOptionsT()
    conv.padding, conv.strideH, conv.strideW = schema.Padding.SAME, 1, 1
    softmax = schema.SoftmaxOptionsT()
    softmax.beta = 1.0
    codes = [schema.BuiltinOperator.CONV_2D, schema.BuiltinOperator.SOFTMAX]
    ops = [op(0, [0, 1, 2], [3], schema.BuiltinOptions.Conv2DOptions, conv),
           op(1, [3], [4], schema.BuiltinOptions.SoftmaxOptions, softmax)]
    inputs = [0]
    if quant:
        q = schema.QuantizationParametersT()
        q.scale, q.zeroPoint = [input_scale], [input_zero_point]
        tensors.append(tensor("x_uint8", [*image, 3], schema.TensorType.UINT8, quantization=q))
        codes.append(schema.BuiltinOperator.DEQUANTIZE)
        ops.insert(0, op(2, [len(tensors) - 1], [0], schema.BuiltinOptions.NONE, None))
        inputs = [len(tensors) - 1]
    graph = schema.SubGraphT()
    graph.tensors, graph.inputs, graph.outputs, graph.operators = tensors, inputs, [4], ops
    graph.name = "main"
    model = schema.ModelT()
    model.version, model.subgraphs, model.buffers = 3, [graph], buffers
    model.operatorCodes = []
    for code in codes:
        c = schema.OperatorCodeT()
        c.builtinCode, c.deprecatedBuiltinCode, c.version = code, min(code, 127), 1
        model.operatorCodes.append(c)
    model.description = "tiny one-layer segmentation model"
    return bytes(convert_object_to_bytearray(model))


INT8_SIZE = 24
INT8_WIDTH = 16


def tflite_int8_bytes(k: int = K, size: int = INT8_SIZE, seed: int = 5) -> bytes:
    """A fully int8 TFLite model written with LiteRT's schema, without TensorFlow.

    ``x int8 [1, size, size, 3] -> conv3x3(3->16) relu -> conv3x3(16->16) relu ->
    conv1x1(16->k) -> softmax int8``, NHWC, per-channel int8 weights and int32 biases as the
    TFLite converter writes them. Every convolution's requantisation multiplier
    (``input_scale * weight_scale / output_scale``) is a power of two, so many accumulators
    land exactly halfway between two integers, where LiteRT's reference kernels and its
    default kernels round differently: their scores differ by a step in each convolution and
    by more after the softmax, as on a trained network.

    Args:
        k: Classes.
        size: Input height and width.
        seed: Seed of the weights.

    Returns:
        The flatbuffer bytes (no edgeseg metadata).
    """
    schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    from ai_edge_litert.tools.flatbuffer_utils import convert_object_to_bytearray

    rng = np.random.default_rng(seed)
    t_int8, t_int32 = schema.TensorType.INT8, schema.TensorType.INT32
    # (input channels, output channels, kernel edge, largest weight, requantisation
    # multiplier, output zero point)
    layers = [(3, INT8_WIDTH, 3, 1, 1 / 4, -128), (INT8_WIDTH, INT8_WIDTH, 3, 1, 1 / 4, -128),
              (INT8_WIDTH, k, 1, 2, 1 / 64, 0)]
    in_scale, w_scale = 1 / 128, 1 / 4
    tensors, buffers, ops = [], [schema.BufferT()], []

    def quant(scales, zero_points, axis=0):
        q = schema.QuantizationParametersT()
        q.scale, q.zeroPoint, q.quantizedDimension = list(scales), list(zero_points), axis
        return q

    def tensor(name, shape, kind, q, data=None):
        t = schema.TensorT()
        t.name, t.shape, t.type, t.quantization, t.buffer = name, list(shape), kind, q, 0
        if data is not None:
            buffer = schema.BufferT()
            buffer.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
            buffers.append(buffer)
            t.buffer = len(buffers) - 1
        tensors.append(t)
        return len(tensors) - 1

    def op(code, inputs, outputs, options_type=schema.BuiltinOptions.NONE, options=None):
        o = schema.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = code, inputs, outputs
        o.builtinOptionsType, o.builtinOptions = options_type, options
        ops.append(o)

    image = [1, size, size]
    x = first = tensor("x", [*image, 3], t_int8, quant([in_scale], [0]))
    for i, (cin, cout, edge, magnitude, multiplier, out_zero_point) in enumerate(layers):
        out_scale = in_scale * w_scale / multiplier
        w = rng.integers(-magnitude, magnitude + 1, (cout, edge, edge, cin)).astype(np.int8)  # OHWI
        b = rng.integers(-64, 64, cout).astype(np.int32)
        wt = tensor(f"w{i}", w.shape, t_int8, quant([w_scale] * cout, [0] * cout), w)
        bt = tensor(f"b{i}", b.shape, t_int32, quant([in_scale * w_scale] * cout, [0] * cout), b)
        y = tensor(f"y{i}", [*image, cout], t_int8, quant([out_scale], [out_zero_point]))
        options = schema.Conv2DOptionsT()
        options.padding, options.strideH, options.strideW = schema.Padding.SAME, 1, 1
        options.dilationHFactor = options.dilationWFactor = 1
        options.fusedActivationFunction = (schema.ActivationFunctionType.RELU if i < 2
                                           else schema.ActivationFunctionType.NONE)
        op(0, [x, wt, bt], [y], schema.BuiltinOptions.Conv2DOptions, options)
        x, in_scale = y, out_scale
    probs = tensor("probs", [*image, k], t_int8, quant([1 / 256], [-128]))
    softmax = schema.SoftmaxOptionsT()
    softmax.beta = 1.0
    op(1, [x], [probs], schema.BuiltinOptions.SoftmaxOptions, softmax)
    graph = schema.SubGraphT()
    graph.tensors, graph.inputs, graph.outputs, graph.operators = tensors, [first], [probs], ops
    graph.name = "main"
    model = schema.ModelT()
    model.version, model.subgraphs, model.buffers = 3, [graph], buffers
    model.operatorCodes = []
    for code, version in ((schema.BuiltinOperator.CONV_2D, 3), (schema.BuiltinOperator.SOFTMAX, 2)):
        c = schema.OperatorCodeT()
        c.builtinCode, c.deprecatedBuiltinCode, c.version = code, min(code, 127), version
        model.operatorCodes.append(c)
    model.description = "tiny int8 segmentation model"
    return bytes(convert_object_to_bytearray(model))


def tflite_kernel_offset(data: bytes, k: int = K) -> int:
    """Where the conv kernel's bytes of :func:`tflite_bytes` start in the flatbuffer."""
    kernel = np.ascontiguousarray(np.transpose(weights(k)["w3"][:, :3], (0, 2, 3, 1)))
    offset = data.find(kernel.tobytes())
    assert offset > 0, "the kernel is not stored verbatim"
    return offset


def _folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.getbasetemp() / "tiny_models"
    folder.mkdir(exist_ok=True)
    return folder


def onnx_models(tmp_path_factory) -> dict[str, Path]:
    """Fixture body: the ONNX and OpenVINO models (skips without onnx / openvino)."""
    for module in ("onnx", "onnxruntime", "openvino"):
        pytest.importorskip(module)
    return build_onnx(_folder(tmp_path_factory))


def tflite_model(tmp_path_factory) -> Path:
    """Fixture body: the TFLite model (skips without TensorFlow)."""
    if importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("tf_keras") is None:
        pytest.skip("building the tiny .tflite needs TensorFlow with tf-keras (edgeseg[train])")
    return build_tflite(_folder(tmp_path_factory))


def smooth_image(height: int, width: int, seed: int = 3, noise: float = 20.0) -> np.ndarray:
    """A deterministic aerial-looking uint8 RGB image with noise."""
    from firmware_bridge.io.synthetic_raster import synthetic_block

    rng = np.random.default_rng(seed)
    img = np.stack(synthetic_block(0, 0, height, width, 3, np.uint8), -1).astype(np.float32)
    return np.clip(img + rng.normal(0, noise, img.shape), 0, 255).astype(np.uint8)
