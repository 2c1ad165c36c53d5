"""ONNX Runtime backend: ``.onnx`` models on the execution providers installed here."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from firmware_bridge.errors import EdgesegError, require
from firmware_bridge.runtime.backends import Backend, BackendOptions, TensorSpec
from firmware_bridge.runtime.onnxfile import edge_quantization

ORT_DTYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8, "tensor(int8)": np.int8,
}


NVIDIA_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
"""Providers that need the CUDA and cuDNN libraries loaded first."""


def onnx_quantization(path: Path) -> tuple[tuple[float, int], tuple[float, int]]:
    """Input and output ``(scale, zero_point)`` from the graph's edge Q/DQ nodes.

    An integer input feeds a ``DequantizeLinear`` and an integer output comes from a
    ``QuantizeLinear``; their scalar scale and zero point are the tensor's quantisation.
    Read from the file itself (:func:`~firmware_bridge.runtime.onnxfile.edge_quantization`),
    without the ``onnx`` package; zeros where the pattern is not there.
    """
    return edge_quantization(path)


def check_providers(wanted: list[str], available: list[str]) -> None:
    """Refuse providers this ONNX Runtime build lacks, listing the ones it has.

    Raises:
        EdgesegError: When a provider is not available.
    """
    missing = [p for p in wanted if p not in available]
    if missing:
        raise EdgesegError(
            f"ONNX Runtime provider(s) {', '.join(missing)} not available; this build has: "
            f"{', '.join(available)} (install onnxruntime-gpu or the vendor build for others)"
        )


def check_started(path: Path, wanted: list[str], started: list[str]) -> None:
    """Refuse a session that runs without a provider it was asked for.

    ONNX Runtime drops a provider it cannot start (the CUDA provider without the CUDA and
    cuDNN libraries it was built for, TensorRT's without TensorRT), logs a line and goes on
    with the others, CPU last: a run on ``--providers CUDAExecutionProvider`` would then be a
    CPU run, its masks and timings taken for the GPU's.

    Args:
        path: The model, for the message.
        wanted: The providers asked for.
        started: The session's providers (``InferenceSession.get_providers()``).

    Raises:
        EdgesegError: When a provider of ``wanted`` is not in ``started``.
    """
    dropped = [p for p in wanted if p not in started]
    if dropped:
        raise EdgesegError(
            f"{path}: ONNX Runtime did not start {', '.join(dropped)} (its log above says why: "
            "for CUDA or TensorRT, usually a CUDA, cuDNN or TensorRT library it cannot load) and "
            f"would run on {', '.join(started)}; install what it needs, or leave "
            f"{dropped[0]} out of --providers"
        )


def _spec(arg, quant: tuple[float, int]) -> TensorSpec:
    if arg.type not in ORT_DTYPES:
        raise EdgesegError(f"tensor {arg.name!r} has type {arg.type}, not one of "
                           f"{', '.join(ORT_DTYPES)}")
    shape = tuple(d if isinstance(d, int) and d > 0 else None for d in arg.shape)
    dtype = np.dtype(ORT_DTYPES[arg.type])
    scale, zero_point = quant if np.issubdtype(dtype, np.integer) else (0.0, 0)
    return TensorSpec(arg.name, shape, dtype, scale, zero_point)


class OnnxRuntimeBackend(Backend):
    """An ``.onnx`` model on ONNX Runtime with a list of execution providers.

    Providers are names such as ``TensorrtExecutionProvider``, ``CUDAExecutionProvider`` or
    ``CPUExecutionProvider``, highest priority first; the default is CPU. ONNX Runtime adds
    the CPU provider last for the operators the others do not take; a provider asked for that
    does not start is an error (:func:`check_started`), not a quiet run on the CPU.
    """

    name = "onnxruntime"

    def __init__(self, path: Path, options: BackendOptions) -> None:
        if options.delegate or options.device:
            raise EdgesegError("ONNX Runtime takes providers (--providers), not a delegate or "
                               "device")
        ort = require("onnxruntime", "onnx")
        providers = list(options.providers or ["CPUExecutionProvider"])
        check_providers(providers, list(ort.get_available_providers()))
        if set(providers) & set(NVIDIA_PROVIDERS) and hasattr(ort, "preload_dlls"):
            # CUDA and cuDNN from the nvidia-* wheels of onnxruntime-gpu[cuda,cudnn] (or the
            # system's): the providers' libraries carry no path to them
            ort.preload_dlls()
        so = ort.SessionOptions()
        if options.threads:
            so.intra_op_num_threads = options.threads
        so.inter_op_num_threads = 1  # one graph at a time: the tiles are the parallel work
        try:
            self._session = ort.InferenceSession(str(path), so, providers=providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own untyped errors
            raise EdgesegError(f"{path}: not a loadable ONNX model ({exc})") from exc
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1:
            raise EdgesegError(f"{path}: the model has {len(inputs)} inputs; a segmentation "
                               "model takes one image tensor")
        self.providers = self._session.get_providers()
        check_started(path, providers, self.providers)
        qin, qout = onnx_quantization(path)
        self._in, self._out = inputs[0].name, outputs[0].name
        super().__init__(path, _spec(inputs[0], qin), _spec(outputs[0], qout))

    def describe(self) -> dict:
        """:meth:`Backend.describe`, with the providers the session runs on, first preferred."""
        return {**super().describe(), "providers": list(self.providers)}

    def _infer(self, x: np.ndarray) -> np.ndarray:
        try:
            return self._session.run([self._out], {self._in: x})[0]
        except Exception as exc:  # noqa: BLE001
            raise EdgesegError(f"{self.path}: ONNX Runtime failed on input {x.shape}: {exc}") \
                from exc
