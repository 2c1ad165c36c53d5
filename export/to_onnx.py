"""ONNX artifact: tf2onnx from the Keras model, checked, metadata in ``metadata_props``.

As timm's ``onnx_export``: convert, check the file (``onnx.checker``), and compare outputs
with the Keras model on one calibration image (the full parity check on validation images
follows in :mod:`export.parity`). The graph keeps NHWC and a dynamic batch axis.
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
