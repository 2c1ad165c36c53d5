"""TFLite artifacts: float32, float16, dynamic-range, full-integer int8 (PTQ) and int8 from QAT.

Every conversion starts from the context's SavedModel (batch 1, fixed input size: dilated and
transposed convolutions refuse ``resize_tensor_input``, so a model is converted per size).
Full-integer conversions, the post-training one and the QAT one alike, get a representative
dataset and ``TFLITE_BUILTINS_INT8``: without them a QAT DeepLab kept its dilated depthwise
convolution in float. Their operator list is then checked
(:func:`export.tflite_ops.check_fully_integer`): an int8 artifact that still computes in
float is an error, not a silent success.

Selected layers can stay float in the post-training int8 model (``ExportOptions.float_layers``,
for CPUs and GPUs, not for integer-only accelerators): TensorFlow's ``QuantizationDebugger``
converts with the operators of those layers denylisted, and QUANTIZE / DEQUANTIZE around them.

The metadata rides in a zip appended to the flatbuffer
(:func:`firmware_bridge.runtime.metadata.tflite_with_metadata`).
"""

from __future__ import annotations

from pathlib import Path

from export.context import ExportContext, tensorflow
from export.tflite_ops import check_fully_integer, op_list
from firmware_bridge.errors import EdgesegError
from firmware_bridge.runtime.metadata import tflite_with_metadata

MODES = ("fp32", "fp16", "dynamic", "int8")


def convert(ctx: ExportContext, which: str, mode: str) -> bytes:
    """Convert the float or QAT model to TFLite flatbuffer bytes (no metadata).

    Args:
        ctx: Export context.
        which: ``"float"`` or ``"qat"``.
        mode: ``fp32``, ``fp16`` (float16 weights), ``dynamic`` (int8 weights, float
            activations) or ``int8`` (full integer with the context's ``io_type``).

    Returns:
        The flatbuffer.
    """
    tf = tensorflow()
    conv = tf.lite.TFLiteConverter.from_saved_model(str(ctx.saved_model(which)))
    if mode != "fp32":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "fp16":
        conv.target_spec.supported_types = [tf.float16]
    elif mode == "int8":
        conv.representative_dataset = ctx.representative()
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        io = {"int8": tf.int8, "uint8": tf.uint8, "float": tf.float32}[ctx.options.io_type]
        conv.inference_input_type = io
        conv.inference_output_type = io
    if mode == "int8" and which == "float" and ctx.options.float_layers:
        return _convert_with_float_layers(tf, conv, ctx)
    return conv.convert()


def float_layer_nodes(model: bytes, layers: tuple[str, ...]) -> list[str]:
    """Output tensor names of the operators that compute the named Keras layers.

    Raises:
        EdgesegError: For a layer no operator computes (misspelt, or folded away).
    """
    ops = op_list(model)
    missing = [layer for layer in layers if not any(op.computes(layer) for op in ops)]
    if missing:
        raise EdgesegError(f"--float-layers: no operator computes {', '.join(missing)}; name Keras "
                           "layers of the model (the per-layer report lists them)")
    return sorted({name for op in ops if any(op.computes(layer) for layer in layers)
                   for name in op.output_names})


def _convert_with_float_layers(tf, conv, ctx: ExportContext) -> bytes:
    """Post-training int8 with the operators of ``ctx.options.float_layers`` left in float."""
    nodes = float_layer_nodes(convert(ctx, "float", "fp32"), ctx.options.float_layers)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=conv, debug_dataset=ctx.representative(),
        debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=nodes))
    return debugger.get_nondebug_quantized_model()


def int8_flatbuffer(ctx: ExportContext, which: str) -> bytes:
    """The full-integer flatbuffer of the float (PTQ) or QAT model, checked and cached.

    Raises:
        EdgesegError: When float operators remain.
    """
    key = f"tflite_int8_{which}"
    if key not in ctx.cache:
        data = convert(ctx, which, "int8")
        keep = ctx.options.float_layers if which == "float" else ()
        check_fully_integer(data, f"int8 TFLite of the {which} model", keep)
        ctx.cache[key] = data
    return ctx.cache[key]


def _write(path: Path, data: bytes, ctx: ExportContext, precision: str) -> list[Path]:
    path.write_bytes(tflite_with_metadata(data, ctx.metadata(precision)))
    return [path]


def export_tflite_fp32(ctx: ExportContext, path: Path) -> list[Path]:
    """Float32 TFLite."""
    return _write(path, convert(ctx, "float", "fp32"), ctx, "fp32")


def export_tflite_fp16(ctx: ExportContext, path: Path) -> list[Path]:
    """Float16 weights, float32 compute (dequantised at load) TFLite."""
    return _write(path, convert(ctx, "float", "fp16"), ctx, "fp16")


def export_tflite_dynamic(ctx: ExportContext, path: Path) -> list[Path]:
    """Dynamic-range TFLite: int8 weights, float activations.

    Not a default: with a transposed convolution it ran 20-33x slower than float here
    (no fast hybrid kernel).
    """
    return _write(path, convert(ctx, "float", "dynamic"), ctx, "int8-dynamic")


def export_tflite_int8(ctx: ExportContext, path: Path) -> list[Path]:
    """Full-integer TFLite by post-training quantization on the calibration images.

    With ``float_layers`` those layers compute in float (precision ``int8-mixed``).
    """
    precision = "int8-mixed" if ctx.options.float_layers else "int8"
    return _write(path, int8_flatbuffer(ctx, "float"), ctx, precision)


def export_tflite_qat_int8(ctx: ExportContext, path: Path) -> list[Path]:
    """Full-integer TFLite of the quantization-aware model."""
    return _write(path, int8_flatbuffer(ctx, "qat"), ctx, "int8-qat")
