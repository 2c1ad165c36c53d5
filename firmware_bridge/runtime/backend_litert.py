"""LiteRT backend (``ai_edge_litert``, falling back to ``tflite_runtime``; never TensorFlow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from firmware_bridge.errors import EdgesegError, MissingDependencyError
from firmware_bridge.runtime.backends import Backend, BackendOptions, TensorSpec


def import_litert():
    """Return ``(Interpreter, load_delegate)`` from the small runtime packages.

    ``ai_edge_litert`` first, then the legacy ``tflite_runtime``; the full TensorFlow package
    is never used, so the device stays small.

    Raises:
        MissingDependencyError: When neither package is installed.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter, load_delegate
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter, load_delegate
        except ImportError as exc:
            raise MissingDependencyError(
                "no LiteRT runtime: pip install 'edgeseg[device]' (ai-edge-litert), or "
                "tflite-runtime on platforms without it"
            ) from exc
    return Interpreter, load_delegate


def _spec(detail: dict) -> TensorSpec:
    signature = detail.get("shape_signature", detail["shape"])
    shape = tuple(None if int(d) < 0 else int(d) for d in signature)
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorSpec(detail["name"], shape, np.dtype(detail["dtype"]), float(scale),
                      int(zero_point))


class LiteRTBackend(Backend):
    """A ``.tflite`` model on the LiteRT interpreter.

    Threads and an external delegate (Edge TPU, GPU, ...) come from :class:`BackendOptions`;
    a ``device`` or ``providers`` option is refused (LiteRT picks hardware by delegate).
    Dynamic axes (``-1`` in the signature) are resized per call.
    """

    name = "litert"

    def __init__(self, path: Path, options: BackendOptions) -> None:
        if options.device or options.providers:
            raise EdgesegError(
                "LiteRT selects hardware through a delegate (--delegate LIB), not a device or "
                "provider; use an .xml (OpenVINO) or .onnx (ONNX Runtime) model for those"
            )
        interpreter_cls, load_delegate = import_litert()
        delegates = None
        if options.delegate:
            try:
                delegates = [load_delegate(options.delegate, options.delegate_options or {})]
            except (ValueError, OSError, RuntimeError) as exc:
                raise EdgesegError(
                    f"cannot load the LiteRT delegate {options.delegate!r} ({exc}); give the "
                    "path of an installed delegate library (e.g. libedgetpu.so.1) or leave it out"
                ) from exc
        try:
            self._it = interpreter_cls(model_path=str(path), num_threads=options.threads,
                                       experimental_delegates=delegates)
            self._it.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise EdgesegError(f"{path}: not a loadable TFLite model ({exc})") from exc
        inputs, outputs = self._it.get_input_details(), self._it.get_output_details()
        if len(inputs) != 1:
            raise EdgesegError(f"{path}: the model has {len(inputs)} inputs; a segmentation "
                               "model takes one image tensor")
        self._in, self._out = inputs[0]["index"], outputs[0]["index"]
        self._shape = tuple(int(d) for d in inputs[0]["shape"])
        super().__init__(path, _spec(inputs[0]), _spec(outputs[0]))

    def _infer(self, x: np.ndarray) -> np.ndarray:
        try:
            if x.shape != self._shape:
                self._it.resize_tensor_input(self._in, list(x.shape), strict=True)
                self._it.allocate_tensors()
                self._shape = x.shape
            self._it.set_tensor(self._in, x)
            self._it.invoke()
        except (ValueError, RuntimeError) as exc:
            raise EdgesegError(f"{self.path}: LiteRT failed on input {x.shape}: {exc}") from exc
        return self._it.get_tensor(self._out).copy()


def xnnpack_effect(path: Path, threads: int | None, runs: int = 20) -> dict:
    """Latency of one inference with LiteRT's default XNNPACK delegate and without it.

    A graph that XNNPACK takes whole runs many times faster with it (int8 MobileUNet-0.35 on
    an AVX-512 VNNI CPU: 2.3 against 35 ms); a graph whose ops fall back to the reference
    kernels shows little difference. ``op_resolver_type`` is LiteRT's switch for this.

    Returns:
        ``{"with_ms", "without_ms", "speedup"}``.
    """
    import time

    interpreter_cls, _ = import_litert()
    try:
        from ai_edge_litert.interpreter import OpResolverType
    except ImportError:  # tflite_runtime
        from tflite_runtime.interpreter import OpResolverType
    out = {}
    for key, kind in (("with_ms", OpResolverType.AUTO),
                      ("without_ms", OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)):
        it = interpreter_cls(model_path=str(path), num_threads=threads,
                             experimental_op_resolver_type=kind)
        it.allocate_tensors()
        detail = it.get_input_details()[0]
        it.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        it.invoke()
        start = time.perf_counter()
        for _ in range(runs):
            it.invoke()
        out[key] = round((time.perf_counter() - start) / runs * 1e3, 3)
    out["speedup"] = round(out["without_ms"] / out["with_ms"], 2)
    return out
