"""Which convolutions of a quantized ONNX or OpenVINO model run on integer kernels.

A Q/DQ graph only says which tensors are quantized; the runtime decides, when it optimises the
graph, whether a ``DequantizeLinear -> Conv -> QuantizeLinear`` group becomes one integer
kernel or stays a float convolution between a dequantize and a quantize. So, as
:mod:`export.tflite_ops` does for TFLite, the check looks at what the runtime will execute:

* **ONNX Runtime**: the session is built as the ``onnxruntime`` backend builds it (CPU
  provider, default optimisation level) and writes its optimised graph
  (``SessionOptions.optimized_model_filepath``); integer kernels are ``QLinearConv``,
  ``ConvInteger``, ``MatMulInteger``, ...; float ones ``Conv``, ``FusedConv``, ``MatMul``, ...
* **OpenVINO**: the model is compiled for the CPU with the ``openvino`` backend's setting
  (``INFERENCE_PRECISION_HINT`` f32) and each layer of ``get_runtime_model()`` carries its
  ``layerType`` and ``runtimePrecision`` (``u8`` / ``i8`` for an integer convolution).

Transposed convolutions are counted apart: ONNX Runtime's CPU provider has no integer
``ConvTranspose`` kernel (``QLinearConvTranspose`` is the XNNPACK provider's), and OpenVINO's
CPU plugin chooses per layer (on an AVX2 CPU it ran 4 of a MobileUNet's 5 in int8 and the
last, whose input, the logits, has a non-zero zero point, in float). Such a layer computes in
float between the dequantize of its int8 input and weights and the quantize of its output,
with the QAT model's own scales: the numbers stay those of the int8 model, only that layer's
speed is float's.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from firmware_bridge.errors import EdgesegError, require

if TYPE_CHECKING:
    import openvino

ORT_INTEGER = ("QLinearConv", "ConvInteger", "MatMulInteger", "QLinearMatMul", "QGemm",
               "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QLinearConvTranspose")
ORT_FLOAT = ("Conv", "FusedConv", "NhwcFusedConv", "MatMul", "FusedMatMul", "Gemm", "FusedGemm")
ORT_FLOAT_TRANSPOSED = ("ConvTranspose",)
OV_CONVOLUTIONS = ("Convolution", "FullyConnected", "MatMul", "Deconvolution")
OV_TRANSPOSED = ("Deconvolution",)
OV_INTEGER_PRECISIONS = ("u8", "i8")
OV_CPU_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}
"""The CPU setting of :class:`firmware_bridge.runtime.backend_openvino.OpenVINOBackend`."""


@dataclass
class ConvKernels:
    """The convolution-like operators a runtime executes, by kind.

    Attributes:
        runtime: ``"onnxruntime"`` or ``"openvino"``.
        integer: Operator (ONNX Runtime) or ``layerType/precision`` (OpenVINO) -> count, for
            those on integer kernels.
        in_float: The same for ordinary convolutions and matrix products in float.
        transposed_in_float: Transposed convolutions in float (see the module docstring).
    """

    runtime: str
    integer: dict[str, int] = field(default_factory=dict)
    in_float: dict[str, int] = field(default_factory=dict)
    transposed_in_float: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Every convolution-like operator counted."""
        return sum(sum(d.values()) for d in (self.integer, self.in_float, self.transposed_in_float))

    def summary(self) -> str:
        """One line: how many run in integer and in float, with the operator names."""

        def listed(counts: dict[str, int]) -> str:
            return ", ".join(f"{n} {op}" for op, n in sorted(counts.items())) or "none"

        line = (f"{self.runtime} runs {sum(self.integer.values())} of {self.total} convolutions on "
                f"integer kernels ({listed(self.integer)})")
        if self.transposed_in_float:
            line += (f"; transposed in float: {sum(self.transposed_in_float.values())} "
                     f"({listed(self.transposed_in_float)})")
        if self.in_float:
            line += f"; in float: {sum(self.in_float.values())} ({listed(self.in_float)})"
        return line


def ort_optimized_ops(path: str | Path) -> dict[str, int]:
    """Operator type -> count of the graph ONNX Runtime executes for an ``.onnx`` file.

    The session is built like the ``onnxruntime`` backend's (CPU provider, default
    optimisation level ``ORT_ENABLE_ALL``) and saves the optimised graph, which is read back.

    Args:
        path: The model.

    Returns:
        Counts sorted by operator type (domains dropped: ``com.microsoft`` ``QLinearConv``
        and ONNX ``QLinearConv`` are both ``QLinearConv``).

    Raises:
        EdgesegError: When ONNX Runtime cannot load the model.
        MissingDependencyError: Without ``onnxruntime`` or ``onnx`` (the ``export`` extra).
    """
    ort = require("onnxruntime", "export")
    onnx = require("onnx", "export")
    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        so.log_severity_level = 3  # the "hardware specific optimizations" notice on saving
        try:
            ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises its own untyped errors
            raise EdgesegError(f"{path}: not a loadable ONNX model ({exc})") from exc
        graph = onnx.load(so.optimized_model_filepath).graph
        return dict(sorted(Counter(node.op_type for node in graph.node).items()))


def ort_conv_kernels(path: str | Path) -> ConvKernels:
    """The convolutions of an ``.onnx`` file as ONNX Runtime's CPU provider runs them.

    Raises:
        EdgesegError: When ONNX Runtime cannot load the model.
    """
    ops = ort_optimized_ops(path)

    def pick(names: tuple[str, ...]) -> dict[str, int]:
        return {op: n for op, n in ops.items() if op in names}

    return ConvKernels("onnxruntime", pick(ORT_INTEGER), pick(ORT_FLOAT), pick(ORT_FLOAT_TRANSPOSED))


def openvino_runtime_layers(model: str | Path | openvino.Model) -> dict[tuple[str, str], int]:
    """``(layerType, runtimePrecision)`` -> count of a model compiled for OpenVINO's CPU plugin.

    Args:
        model: A path (``.xml`` with its ``.bin``, or ``.onnx``) or an ``openvino.Model``.

    Returns:
        Counts, sorted.

    Raises:
        EdgesegError: When OpenVINO cannot read or compile the model.
        MissingDependencyError: Without ``openvino`` (the ``export`` extra).
    """
    ov = require("openvino", "export")
    core = ov.Core()
    try:
        if isinstance(model, (str, Path)):
            model = core.read_model(str(model))
        compiled = core.compile_model(model, "CPU", dict(OV_CPU_CONFIG))
    except RuntimeError as exc:
        raise EdgesegError(f"OpenVINO cannot compile the model for CPU ({exc})") from exc
    counts: Counter[tuple[str, str]] = Counter()
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        counts[(info["layerType"].astype(str), info["runtimePrecision"].astype(str).lower())] += 1
    return dict(sorted(counts.items()))


def openvino_conv_kernels(model: str | Path | openvino.Model) -> ConvKernels:
    """The convolutions of a model as OpenVINO's CPU plugin runs them (see the module docstring).

    Args:
        model: A path or an ``openvino.Model``.

    Raises:
        EdgesegError: When OpenVINO cannot read or compile the model.
    """
    kernels = ConvKernels("openvino")
    for (layer, precision), n in openvino_runtime_layers(model).items():
        if layer not in OV_CONVOLUTIONS:
            continue
        name = f"{layer}/{precision}"
        if precision in OV_INTEGER_PRECISIONS:
            kernels.integer[name] = kernels.integer.get(name, 0) + n
        elif layer in OV_TRANSPOSED:
            kernels.transposed_in_float[name] = kernels.transposed_in_float.get(name, 0) + n
        else:
            kernels.in_float[name] = kernels.in_float.get(name, 0) + n
    return kernels


def check_integer_convolutions(kernels: ConvKernels, what: str, allow_float: int = 0) -> None:
    """Refuse a quantized model whose ordinary convolutions the runtime runs in float.

    Transposed convolutions in float are allowed (see the module docstring); the caller
    reports them with :meth:`ConvKernels.summary`.

    Args:
        kernels: What :func:`ort_conv_kernels` or :func:`openvino_conv_kernels` found.
        what: Name of the model for the message.
        allow_float: Ordinary convolutions the export put in float on purpose (the OpenVINO
            QAT IR's first one: :func:`export.to_openvino.float_input_convolution`).

    Raises:
        EdgesegError: When a convolution or matrix product runs in float, or none runs on an
            integer kernel.
    """
    if sum(kernels.in_float.values()) > allow_float or not kernels.integer:
        found = ", ".join(f"{n} {op}" for op, n in sorted(kernels.in_float.items())) or "no integer kernel"
        raise EdgesegError(
            f"{what}: {kernels.runtime} runs convolutions in float ({found}): the Q/DQ graph did "
            "not fuse into integer kernels; deploy tflite-qat-int8 for this model, or "
            "openvino-int8 on OpenVINO")
