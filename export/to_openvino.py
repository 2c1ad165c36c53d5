"""OpenVINO IR artifacts: FP32, FP16 (weights compressed), INT8 (NNCF post-training) and QAT INT8.

Converted from the ONNX file of the export (tf2onnx), never from a TFLite file: OpenVINO's
TFLite reader got a MobileUNet's TRANSPOSE_CONV with a fused activation wrong (mIoU 0.98 ->
0.90). Not from the SavedModel either: that route leaves NHWC/NCHW
transposes inside the graph (10 against 2 for a MobileUNet), and NNCF's int8 model of it
agrees with Keras on far fewer pixels than from ONNX. NNCF runs with the ``MIXED`` preset
(asymmetric activations, for the batch-norm outputs that no ReLU follows). The metadata goes
into the IR's ``rt_info`` as ``edgeseg`` (a string attribute of ``<rt_info><edgeseg value=.../>``
in the ``.xml``), which
:func:`firmware_bridge.runtime.metadata.read_metadata` reads without OpenVINO. An IR is two files;
``save_model`` writes the ``.bin`` beside the ``.xml`` with the same stem.

The QAT model's IR (``openvino-qat-int8``) is converted from the Q/DQ ONNX of
``onnx-qat-int8``: its quantisation is the QAT model's own, where NNCF's post-training
``openvino-int8`` calibrates the float model (the route for runs without QAT).
"""

from __future__ import annotations

from pathlib import Path

from export.context import ExportContext
from firmware_bridge.errors import EdgesegError, require
from firmware_bridge.runtime.metadata import METADATA_KEY


def convert(ctx: ExportContext):
    """The float model as a fresh ``openvino.Model`` (from ONNX; dynamic batch).

    The conversion runs once per export; each format gets its own clone.
    """
    from export.to_onnx import onnx_file

    ov = require("openvino", "export")
    if "openvino_model" not in ctx.cache:
        ctx.cache["openvino_model"] = ov.convert_model(str(onnx_file(ctx)))
    return ctx.cache["openvino_model"].clone()


def _save(model, path: Path, ctx: ExportContext, precision: str, fp16: bool) -> list[Path]:
    ov = require("openvino", "export")
    model.set_rt_info(ctx.metadata(precision).to_json(), METADATA_KEY)
    ov.save_model(model, str(path), compress_to_fp16=fp16)
    return [path, path.with_suffix(".bin")]


def export_openvino_fp32(ctx: ExportContext, path: Path) -> list[Path]:
    """OpenVINO IR with float32 weights."""
    return _save(convert(ctx), path, ctx, "fp32", fp16=False)


def export_openvino_fp16(ctx: ExportContext, path: Path) -> list[Path]:
    """OpenVINO IR with float16 weights (the runtime computes in f32 or bf16 as configured)."""
    return _save(convert(ctx), path, ctx, "fp16", fp16=True)


def export_openvino_int8(ctx: ExportContext, path: Path) -> list[Path]:
    """OpenVINO IR quantized to int8 by NNCF on the calibration images.

    ``float_layers`` become NNCF's ignored scope (operations named ``.../<layer>/...``); NNCF
    refuses a name that matches nothing.
    """
    import re

    nncf = require("nncf", "export")
    model = convert(ctx)
    images = ctx.calibration
    if len(images) == 0:
        ctx.representative()  # raises the "needs calibration images" error
    dataset = nncf.Dataset([image[None] for image in images])
    layers = ctx.options.float_layers
    scope = nncf.IgnoredScope(patterns=[f".*/{re.escape(name)}/.*" for name in layers])
    try:
        quantized = nncf.quantize(model, dataset, preset=nncf.QuantizationPreset.MIXED,
                                  subset_size=min(len(images), ctx.options.nncf_subset),
                                  ignored_scope=scope)
    except nncf.ValidationError as exc:
        raise EdgesegError(f"--float-layers: {exc}") from exc
    return _save(quantized, path, ctx, "int8-mixed" if layers else "int8", fp16=False)


def float_input_convolution(model) -> str | None:
    """Give the convolution that reads the model's input float weights, in place.

    On x86 CPUs without VNNI (AVX2, AVX-512 without VNNI), OpenVINO's int8 convolution adds
    pairs of uint8 x int8 products in saturating 16-bit arithmetic. The first convolution reads
    the image, whose pixels span the whole 8-bit range, and saturates most: on an AVX2 CPU the
    QAT IR's masks agreed with the TFLite QAT file on 95.5 % of Dubai tile 7's pixels, 97.1 %
    with this convolution in float (``docs/benchmarks.md``). Its weights become the QAT
    model's dequantized values (int8 times scale), so it computes exactly what the int8 one
    would without saturation; it is 3 input channels deep, a small share of the model's MACs.

    Args:
        model: An ``openvino.Model`` converted from the Q/DQ ONNX graph.

    Returns:
        The convolution's name, or ``None`` when no convolution reads the input through int8
        weights (``Constant(i8) -> Convert -> Multiply``).
    """
    ov = require("openvino", "export")
    from openvino import opset13

    for op in model.get_ordered_ops():
        if op.get_type_name() not in ("Convolution", "GroupConvolution"):
            continue
        scale = op.input_value(1).get_node()
        convert = scale.input_value(0).get_node() if scale.get_type_name() == "Multiply" else None
        weights = convert.input_value(0).get_node() if convert is not None else None
        if (weights is None or convert.get_type_name() != "Convert"
                or weights.get_type_name() != "Constant"
                or weights.get_output_element_type(0) != ov.Type.i8):
            return None
        factor = scale.input_value(1).get_node()
        if factor.get_type_name() != "Constant":
            return None
        value = weights.get_data().astype("float32") * factor.get_data().astype("float32")
        op.input(1).replace_source_output(opset13.constant(value).output(0))
        model.validate_nodes_and_infer_types()
        return op.get_friendly_name()
    return None


def export_openvino_qat_int8(ctx: ExportContext, path: Path) -> list[Path]:
    """OpenVINO IR of the QAT model's Q/DQ ONNX graph (``onnx-qat-int8``'s, with int8 weights).

    OpenVINO reads each Q/DQ pair as a FakeQuantize with the QAT model's own range, and its
    CPU plugin runs the convolutions in int8, all but the first, which reads the image and runs
    in float with the QAT model's dequantized weights (:func:`float_input_convolution`); no
    NNCF pass, no calibration of its own. The compiled model's layer precisions are checked
    (:mod:`export.int8_ops`) and its count of integer and float convolutions goes to the
    export's log.

    Raises:
        EdgesegError: When the conversion fails, or the CPU plugin runs an ordinary
            convolution in float.
    """
    from export.int8_ops import check_integer_convolutions, openvino_conv_kernels
    from export.to_onnx import qat_int8_onnx_file

    ov = require("openvino", "export")
    model = ov.convert_model(str(qat_int8_onnx_file(ctx)))
    first = float_input_convolution(model)
    files = _save(model, path, ctx, "int8-qat", fp16=False)
    kernels = openvino_conv_kernels(path)
    check_integer_convolutions(kernels, path.name, allow_float=int(first is not None))
    ctx.notes.append(kernels.summary())
    return files
