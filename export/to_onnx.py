"""ONNX artifacts: float32 from the Keras model, int8 Q/DQ from the QAT model; metadata in ``metadata_props``.

Float (``onnx``), as timm's ``onnx_export``: tf2onnx from the Keras model, check the file
(``onnx.checker``), and compare outputs with the Keras model on one calibration image (the
full parity check on validation images follows in :mod:`export.parity`). The graph keeps NHWC
and a dynamic batch axis.

QAT int8 (``onnx-qat-int8``): tf2onnx from the int8 TFLite flatbuffer of the QAT model, the
Q/DQ graph rewritten for ONNX Runtime's integer kernels (:mod:`export.qdq_onnx`), and the
convolutions of the optimised graph checked (:mod:`export.int8_ops`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from export.context import ExportContext, tensorflow
from firmware_bridge.errors import EdgesegError, require
from firmware_bridge.runtime.metadata import METADATA_KEY

MAX_ABS_DIFF = 1e-3
"""Largest allowed difference between ONNX Runtime and Keras probabilities on one image."""


def to_onnx_proto(ctx: ExportContext, which: str = "float"):
    """Convert a Keras model of the context with tf2onnx (cached per export).

    Returns:
        The ``onnx.ModelProto`` (input ``image``: ``(N, H, W, C)`` float32); callers that
        change it work on a copy.
    """
    key = f"onnx_proto_{which}"
    if key not in ctx.cache:
        tf = tensorflow()
        tf2onnx = require("tf2onnx", "export")
        h, w = ctx.input_size
        spec = (tf.TensorSpec((None, h, w, ctx.channels), tf.float32, name="image"),)
        ctx.cache[key], _ = tf2onnx.convert.from_keras(
            ctx.keras_model(which), input_signature=spec, opset=ctx.options.onnx_opset)
    return ctx.cache[key]


def onnx_file(ctx: ExportContext) -> Path:
    """The float model as an ONNX file in the context's scratch folder (no metadata; cached)."""
    onnx = require("onnx", "export")
    if "onnx_file" not in ctx.cache:
        path = ctx.workdir / "model.onnx"
        onnx.save(to_onnx_proto(ctx), str(path))
        ctx.cache["onnx_file"] = path
    return ctx.cache["onnx_file"]


def add_metadata(proto, json_text: str) -> None:
    """Set (or replace) the ``edgeseg`` entry of ``metadata_props``."""
    for prop in list(proto.metadata_props):
        if prop.key == METADATA_KEY:
            proto.metadata_props.remove(prop)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json_text


def check_against_keras(path: Path, ctx: ExportContext, which: str = "float") -> float:
    """Max absolute difference of ONNX Runtime and Keras on one input.

    Raises:
        EdgesegError: When it exceeds :data:`MAX_ABS_DIFF`.
    """
    ort = require("onnxruntime", "export")
    if len(ctx.calibration):
        x = ctx.calibration[:1].astype(np.float32)
    else:
        x = np.random.default_rng(0).uniform(-1, 1, (1, *ctx.input_size, ctx.channels))
        x = x.astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    want = ctx.keras_model(which)(x, training=False).numpy()
    diff = float(np.max(np.abs(got - want)))
    if not diff <= MAX_ABS_DIFF:
        raise EdgesegError(f"{path.name}: ONNX Runtime differs from Keras by {diff:.2e} "
                           f"(> {MAX_ABS_DIFF}); the conversion is wrong")
    return diff


def export_onnx(ctx: ExportContext, path: Path) -> list[Path]:
    """Float32 ONNX (opset ``ctx.options.onnx_opset``), checked and compared with Keras."""
    onnx = require("onnx", "export")
    proto = onnx.ModelProto()
    proto.CopyFrom(to_onnx_proto(ctx))
    add_metadata(proto, ctx.metadata("fp32").to_json())
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    check_against_keras(path, ctx)
    return [path]


def qat_int8_proto(ctx: ExportContext, weights: str):
    """The QAT model's Q/DQ graph from its int8 TFLite flatbuffer (cached per export).

    The flatbuffer is the one ``tflite-qat-int8`` writes (:func:`export.to_tflite.int8_flatbuffer`,
    converted and checked once per export), so both carry the same scales and zero points
    (:mod:`export.qdq_onnx`). Callers that change the proto work on a copy.

    Args:
        ctx: Export context.
        weights: ``"uint8"`` (ONNX Runtime) or ``"int8"`` (OpenVINO).

    Returns:
        The ``onnx.ModelProto`` (float32 NHWC input and output, batch 1; no metadata).

    Raises:
        EdgesegError: When the TFLite conversion, tf2onnx or the Q/DQ rewrite fails.
    """
    from export.qdq_onnx import from_tflite, qdq_model
    from export.to_tflite import int8_flatbuffer

    if "onnx_proto_qat_tf2onnx" not in ctx.cache:
        ctx.cache["onnx_proto_qat_tf2onnx"] = from_tflite(int8_flatbuffer(ctx, "qat"), ctx.workdir,
                                                          ctx.options.onnx_opset)
    key = f"onnx_proto_qat_int8_{weights}"
    if key not in ctx.cache:
        ctx.cache[key] = qdq_model(ctx.cache["onnx_proto_qat_tf2onnx"], weights)
    return ctx.cache[key]


def qat_int8_onnx_file(ctx: ExportContext) -> Path:
    """The Q/DQ graph with int8 weights (OpenVINO's) as a file in the scratch folder (cached)."""
    onnx = require("onnx", "export")
    if "onnx_file_qat_int8" not in ctx.cache:
        path = ctx.workdir / "model_qat_int8_int8_weights.onnx"
        onnx.save(qat_int8_proto(ctx, "int8"), str(path))
        ctx.cache["onnx_file_qat_int8"] = path
    return ctx.cache["onnx_file_qat_int8"]


def export_onnx_qat_int8(ctx: ExportContext, path: Path) -> list[Path]:
    """Q/DQ int8 ONNX of the QAT model, whose convolutions ONNX Runtime runs on integer kernels.

    Float32 NHWC input and output, batch 1, uint8 activations and weights (ONNX Runtime's
    U8U8 kernels: see :mod:`export.qdq_onnx`); the metadata's precision is ``int8-qat``. The
    optimised graph ONNX Runtime builds is checked (:mod:`export.int8_ops`) and its count of
    integer and float convolutions goes to the export's log.

    Raises:
        EdgesegError: When the conversion fails, or ONNX Runtime runs an ordinary convolution
            in float.
    """
    from export.int8_ops import check_integer_convolutions, ort_conv_kernels

    onnx = require("onnx", "export")
    proto = onnx.ModelProto()
    proto.CopyFrom(qat_int8_proto(ctx, "uint8"))
    add_metadata(proto, ctx.metadata("int8-qat").to_json())
    onnx.save(proto, str(path))
    kernels = ort_conv_kernels(path)
    check_integer_convolutions(kernels, path.name)
    ctx.notes.append(kernels.summary())
    return [path]
