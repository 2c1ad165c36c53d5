"""LiteRT backend (``ai_edge_litert``, falling back to ``tflite_runtime``; never TensorFlow)."""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path

import numpy as np

from firmware_bridge.errors import EdgesegError, MissingDependencyError
from firmware_bridge.runtime.backends import (
    Backend,
    BackendOptions,
    TensorSpec,
    quantisation_problem,
)
from firmware_bridge.runtime.metadata import read_metadata

FILE_IDENTIFIER = b"TFL3"
"""The TFLite schema's file identifier, bytes 4-7 of every ``.tflite`` flatbuffer."""
DELEGATE_SYMBOLS = ("tflite_plugin_create_delegate", "tflite_plugin_destroy_delegate")
"""The functions every LiteRT external delegate library exports."""


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


def op_resolver_types():
    """LiteRT's ``OpResolverType`` enum, from the package :func:`import_litert` uses.

    ``AUTO`` (the default: XNNPACK, then the optimised builtin kernels), ``BUILTIN_REF`` (the
    reference kernels) and ``BUILTIN_WITHOUT_DEFAULT_DELEGATES`` (no XNNPACK).

    Raises:
        MissingDependencyError: When neither runtime package is installed.
        EdgesegError: When the installed ``tflite_runtime`` is too old to have the enum.
    """
    import_litert()
    try:
        from ai_edge_litert.interpreter import OpResolverType
    except ImportError:
        try:
            from tflite_runtime.interpreter import OpResolverType
        except ImportError:
            raise EdgesegError("this tflite_runtime cannot choose its kernels (no OpResolverType); "
                               "install ai-edge-litert") from None
    return OpResolverType


def resolver_args(kernels: str | None) -> dict:
    """The interpreter's keyword arguments for :attr:`BackendOptions.kernels`.

    Nothing for the default kernels (any runtime's own default);
    ``experimental_op_resolver_type=OpResolverType.BUILTIN_REF`` for ``"reference"``.

    Raises:
        EdgesegError: When the runtime lacks reference kernels.
    """
    if kernels != "reference":
        return {}
    types = op_resolver_types()
    if not hasattr(types, "BUILTIN_REF"):
        raise EdgesegError("this LiteRT runtime has no reference kernels (OpResolverType."
                           "BUILTIN_REF); install ai-edge-litert")
    return {"experimental_op_resolver_type": types.BUILTIN_REF}


def check_identifier(path: Path) -> None:
    """Refuse a file that does not carry the TFLite file identifier.

    Raises:
        EdgesegError: When bytes 4-7 are not ``TFL3`` (a damaged header, or not a TFLite file).
    """
    with path.open("rb") as f:
        head = f.read(8)
    if head[4:8] != FILE_IDENTIFIER:
        raise EdgesegError(f"{path}: not a loadable TFLite model (no 'TFL3' file identifier in "
                           "bytes 4-7: the header is damaged, or the file is not a .tflite)")


def load_external_delegate(load_delegate, library: str, options: dict[str, str] | None):
    """Load a LiteRT external delegate, checking the library first.

    LiteRT's ``Delegate`` fails half-built on a library that does not load or lacks the
    delegate functions, and its finaliser then prints a second traceback; loading the library
    with ``ctypes`` first turns both cases into one error.

    Args:
        load_delegate: The runtime's ``load_delegate``.
        library: Path or name of the shared library.
        options: Options for the delegate.

    Returns:
        The loaded delegate.

    Raises:
        EdgesegError: When the library does not load, is not a delegate, or refuses to start.
    """
    hint = ("give the path of an installed delegate library (e.g. libedgetpu.so.1) or leave "
            "--delegate out")
    try:
        lib = ctypes.CDLL(library)
    except OSError as exc:
        raise EdgesegError(f"cannot load the LiteRT delegate {library!r} ({exc}); {hint}") from None
    missing = [name for name in DELEGATE_SYMBOLS if not hasattr(lib, name)]
    if missing:
        raise EdgesegError(f"{library!r} is not a LiteRT delegate library (it has no "
                           f"{missing[0]}); {hint}")
    try:
        return load_delegate(library, options or {})
    except (ValueError, OSError, RuntimeError) as exc:
        raise EdgesegError(f"cannot load the LiteRT delegate {library!r} ({exc}); {hint}") from None


def check_quantisation(path: Path, interpreter) -> None:
    """Refuse a model with a tensor whose quantisation parameters are unusable.

    A flatbuffer with a changed scale or zero point passes LiteRT's verifier and runs,
    producing garbage; this looks at every tensor's stored parameters.

    Args:
        path: The model file, for the message.
        interpreter: The LiteRT interpreter with the model loaded.

    Raises:
        EdgesegError: For a scale that is not a finite number above 0, or a zero point
            outside its integer type.
    """
    for detail in interpreter.get_tensor_details():
        params = detail.get("quantization_parameters") or {}
        problem = quantisation_problem(params.get("scales", ()), params.get("zero_points", ()),
                                       detail["dtype"])
        if problem:
            raise EdgesegError(f"{path}: tensor {detail['name']!r} has {problem}: the file is "
                               "damaged")


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

    ``kernels="reference"`` builds the interpreter with ``OpResolverType.BUILTIN_REF``: every
    operator on LiteRT's reference kernels, without XNNPACK, which compute what TensorFlow Lite
    Micro's reference kernels compute on a microcontroller, bit for bit (int8 scores and so
    masks identical), many times slower. It does not combine with a delegate.

    Before it is trusted, the file must carry the ``TFL3`` identifier, pass LiteRT's
    flatbuffer verifier (run when the interpreter loads it) and hold usable quantisation
    parameters in every tensor; :func:`~firmware_bridge.runtime.metadata.read_metadata`
    compares an edgeseg model's SHA-256 with the one recorded at export.

    Args:
        path: The ``.tflite`` file.
        options: Threads, delegate and kernels.

    Raises:
        EdgesegError: For a damaged or foreign file, an unusable delegate, a device or
            provider option, a delegate with reference kernels, or a model with more than one
            input.
    """

    name = "litert"
    kernel_sets = ("default", "reference")

    def __init__(self, path: Path, options: BackendOptions) -> None:
        if options.device or options.providers:
            raise EdgesegError(
                "LiteRT selects hardware through a delegate (--delegate LIB), not a device or "
                "provider; use an .xml (OpenVINO) or .onnx (ONNX Runtime) model for those"
            )
        if options.kernels == "reference" and options.delegate:
            raise EdgesegError("--kernels reference runs every operator on the CPU's reference "
                               "kernels; leave --delegate out")
        interpreter_cls, load_delegate = import_litert()
        resolver = resolver_args(options.kernels)
        self.kernels = "reference" if options.kernels == "reference" else "default"
        delegates = None
        if options.delegate:
            delegates = [load_external_delegate(load_delegate, options.delegate,
                                                options.delegate_options)]
        check_identifier(path)
        read_metadata(path)  # an edgeseg model's SHA-256, before the interpreter reads it
        try:
            self._it = interpreter_cls(model_path=str(path), num_threads=options.threads,
                                       experimental_delegates=delegates, **resolver)
            check_quantisation(path, self._it)  # before a kernel or delegate prepares them
            self._it.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise EdgesegError(f"{path}: not a loadable TFLite model ({exc})") from exc
        inputs, outputs = self._it.get_input_details(), self._it.get_output_details()
        if len(inputs) != 1:
            raise EdgesegError(f"{path}: the model has {len(inputs)} inputs; a segmentation "
                               "model takes one image tensor")
        self._in, self._out = inputs[0]["index"], outputs[0]["index"]
        self._shape = tuple(int(d) for d in inputs[0]["shape"])
        self._lock = threading.Lock()  # an interpreter runs one call at a time, whatever thread
        super().__init__(path, _spec(inputs[0]), _spec(outputs[0]))

    def describe(self) -> dict:
        """:meth:`Backend.describe`, with the kernels (``"default"`` or ``"reference"``)."""
        return {**super().describe(), "kernels": self.kernels}

    def _infer(self, x: np.ndarray) -> np.ndarray:
        with self._lock:
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
        ``{"with_ms", "without_ms", "speedup"}``; ``without_ms`` and ``speedup`` are ``None``
        when the graph does not run without XNNPACK (custom operators only the delegate
        implements, as MediaPipe's ``Convolution2DTransposeBias``), with the reason in
        ``"without_error"``.
    """
    import time

    interpreter_cls, _ = import_litert()
    types = op_resolver_types()
    out = {}
    for key, kind in (("with_ms", types.AUTO),
                      ("without_ms", types.BUILTIN_WITHOUT_DEFAULT_DELEGATES)):
        try:
            it = interpreter_cls(model_path=str(path), num_threads=threads,
                                 experimental_op_resolver_type=kind)
            it.allocate_tensors()
        except (RuntimeError, ValueError) as e:
            if key == "with_ms":
                raise
            first = str(e).strip().splitlines()
            return {**out, "without_ms": None, "speedup": None,
                    "without_error": first[0] if first else type(e).__name__}
        detail = it.get_input_details()[0]
        it.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        it.invoke()
        start = time.perf_counter()
        for _ in range(runs):
            it.invoke()
        out[key] = round((time.perf_counter() - start) / runs * 1e3, 3)
    out["speedup"] = round(out["without_ms"] / out["with_ms"], 2)
    return out
