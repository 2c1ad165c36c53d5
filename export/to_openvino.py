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


def export_openvino_qat_int8(ctx: ExportContext, path: Path) -> list[Path]:
    """OpenVINO IR of the QAT model's Q/DQ ONNX graph (``onnx-qat-int8``'s, with int8 weights).

    OpenVINO reads each Q/DQ pair as a FakeQuantize with the QAT model's own range, and its
    CPU plugin runs the convolutions in int8; no NNCF pass, no calibration of its own. The
    compiled model's layer precisions are checked (:mod:`export.int8_ops`) and its count of
    integer and float convolutions goes to the export's log.

    Raises:
        EdgesegError: When the conversion fails, or the CPU plugin runs an ordinary
            convolution in float.
    """
    from export.int8_ops import check_integer_convolutions, openvino_conv_kernels
    from export.to_onnx import qat_int8_onnx_file

    ov = require("openvino", "export")
    files = _save(ov.convert_model(str(qat_int8_onnx_file(ctx))), path, ctx, "int8-qat", fp16=False)
    kernels = openvino_conv_kernels(path)
    check_integer_convolutions(kernels, path.name)
    ctx.notes.append(kernels.summary())
    return files
