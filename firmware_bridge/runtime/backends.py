"""Inference backends: LiteRT, OpenVINO and ONNX Runtime behind one small interface.

A backend takes the model's raw input tensor (already normalised, quantised and laid out) and
returns the raw output tensor; :mod:`firmware_bridge.runtime.segmenter` does everything around it.
Each backend reports its input and output as :class:`TensorSpec` (shape with ``None`` for
dynamic axes, dtype, quantisation scale and zero point). Batches larger than one run in one
call when the model's batch axis is dynamic and as a loop of single images otherwise.

The backends are one table, :data:`BACKENDS`: a row names the backend, the class that runs it
(imported only when a model is opened, so installing one runtime is enough), the file suffixes
it opens and its short aliases. A new runtime is one module with a :class:`Backend` subclass and
one row (or :func:`register_backend` from outside the package); nothing else lists backends.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firmware_bridge.errors import EdgesegError

CHANNEL_SIZES = (1, 2, 3, 4)
KERNELS = ("default", "reference")
"""Kernel sets a backend may offer: its default (fastest) kernels, or the reference kernels
whose arithmetic TensorFlow Lite Micro's firmware builds share (LiteRT only)."""


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output.

    Attributes:
        name: Tensor name in the model.
        shape: Dimensions, ``None`` where dynamic.
        dtype: numpy dtype the tensor holds.
        scale: Quantisation scale (``real = (q - zero_point) * scale``); 0 when not quantised.
        zero_point: Quantisation zero point.
    """

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype
    scale: float = 0.0
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        """True for an int8/uint8 tensor with a known scale."""
        return self.scale > 0 and np.issubdtype(self.dtype, np.integer)


@dataclass(frozen=True)
class BackendOptions:
    """How to open a model.

    Attributes:
        threads: CPU threads (``None``: the runtime's default).
        device: OpenVINO device: ``CPU``, ``GPU``, ``NPU``, ``AUTO`` (``None``: CPU).
        providers: ONNX Runtime execution providers in priority order (``None``: CPU).
        delegate: LiteRT external delegate library (e.g. ``libedgetpu.so.1``).
        delegate_options: Options passed to that delegate.
        kernels: ``"reference"``: LiteRT's reference kernels, whose rounding is TensorFlow
            Lite Micro's (a microcontroller's masks, reproduced exactly); ``None`` or
            ``"default"``: the backend's own (for LiteRT, XNNPACK and the optimised builtin
            kernels). Backends that offer no other set (:attr:`Backend.kernel_sets`) refuse
            ``"reference"``.
    """

    threads: int | None = None
    device: str | None = None
    providers: tuple[str, ...] | None = None
    delegate: str | None = None
    delegate_options: dict[str, str] | None = None
    kernels: str | None = None


def quantisation_problem(scales, zero_points, dtype, scale_given: bool = True) -> str | None:
    """What is wrong with a tensor's quantisation parameters, if anything.

    ``real = (q - zero_point) * scale`` is NaN, infinite or constant for a scale that is NaN,
    infinite, 0 or negative, and wraps for a zero point outside the integer type.

    Args:
        scales: The tensor's scale(s) (one per channel for per-channel weights).
        zero_points: Its zero point(s).
        dtype: The tensor's dtype.
        scale_given: True when the values were stored as quantisation parameters (0 is then
            wrong too); False for a :class:`TensorSpec`, whose 0 means "not quantised".

    Returns:
        A description of the problem, or ``None`` when the parameters are usable.
    """
    scales = np.asarray(scales, dtype=np.float64).ravel()
    bad = scales[~np.isfinite(scales) | (scales < 0) | ((scales == 0) & scale_given)]
    if bad.size:
        return f"quantisation scale {float(bad[0])} (a scale must be a finite number above 0)"
    dtype = np.dtype(dtype)
    zero_points = np.asarray(zero_points, dtype=np.int64).ravel()
    if zero_points.size and np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        out = zero_points[(zero_points < info.min) | (zero_points > info.max)]
        if out.size:
            return f"zero point {int(out[0])} outside the {dtype} range [{info.min}, {info.max}]"
    return None


def guess_layout(shape: tuple[int | None, ...]) -> str:
    """``"NHWC"`` or ``"NCHW"`` from a rank-4 image shape (channels are 1-4 wide)."""
    if len(shape) == 4 and shape[3] not in CHANNEL_SIZES and shape[1] in CHANNEL_SIZES:
        return "NCHW"
    return "NHWC"


class Backend(ABC):
    """A loaded model that maps one raw input tensor to one raw output tensor.

    Attributes:
        name: Registry name (``litert``, ``openvino``, ``onnxruntime``).
        path: The model file.
        input: Input tensor spec.
        output: Output tensor spec.
    """

    name = ""
    kernel_sets: tuple[str, ...] = ("default",)
    """The values of :attr:`BackendOptions.kernels` this backend takes."""

    def __init__(self, path: Path, input_spec: TensorSpec, output_spec: TensorSpec) -> None:
        if len(input_spec.shape) != 4:
            raise EdgesegError(
                f"{path}: input has shape {input_spec.shape}; an image model takes a rank-4 "
                "tensor (NHWC or NCHW)"
            )
        for what, spec in (("input", input_spec), ("output", output_spec)):
            problem = quantisation_problem(spec.scale, spec.zero_point, spec.dtype, False)
            if problem:
                raise EdgesegError(f"{path}: the {what} {spec.name!r} has {problem}: the file is "
                                   "damaged")
        self.path, self.input, self.output = path, input_spec, output_spec

    @property
    def layout(self) -> str:
        """Input layout guessed from the shape; a foreign model can override it."""
        return guess_layout(self.input.shape)

    @property
    def dynamic_batch(self) -> bool:
        """True when one call can take several images."""
        return self.input.shape[0] is None

    def describe(self) -> dict:
        """Input/output facts for reports (``bench``, ``--debug``)."""

        def spec(t: TensorSpec) -> dict:
            return {"name": t.name, "shape": list(t.shape), "dtype": str(np.dtype(t.dtype)),
                    "scale": t.scale, "zero_point": t.zero_point}

        return {"backend": self.name, "model": str(self.path), "layout": self.layout,
                "input": spec(self.input), "output": spec(self.output)}

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run a batch of raw input; returns the raw output batch, the caller's to keep or change.

        Raises:
            EdgesegError: For a dtype or shape the model does not take.
        """
        if x.dtype != self.input.dtype:
            raise EdgesegError(f"{self.path}: input must be {self.input.dtype}, got {x.dtype}")
        fixed = [(i, d) for i, d in enumerate(self.input.shape[1:], 1) if d is not None]
        if any(x.shape[i] != d for i, d in fixed):
            raise EdgesegError(
                f"{self.path}: the model takes input {self.input.shape}, got {x.shape}"
            )
        if x.shape[0] == 1 or self.dynamic_batch:
            return self._infer(np.ascontiguousarray(x))
        return np.concatenate([self._infer(np.ascontiguousarray(x[i : i + 1]))
                               for i in range(x.shape[0])])

    @abstractmethod
    def _infer(self, x: np.ndarray) -> np.ndarray:
        """Run the runtime on a contiguous batch."""


@dataclass(frozen=True)
class BackendEntry:
    """One row of the backend table.

    Attributes:
        name: What ``--backend`` takes and reports print.
        backend: The :class:`Backend` subclass, or ``"module:Class"`` imported on first use.
        suffixes: Model file suffixes this backend opens when none is named.
        aliases: Other names ``--backend`` accepts.
    """

    name: str
    backend: type | str
    suffixes: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()

    def load(self) -> type[Backend]:
        """The backend class (its module imported now)."""
        if not isinstance(self.backend, str):
            return self.backend
        module, _, cls = self.backend.partition(":")
        return getattr(importlib.import_module(module), cls)


BACKENDS: dict[str, BackendEntry] = {e.name: e for e in [
    BackendEntry("litert", "firmware_bridge.runtime.backend_litert:LiteRTBackend", (".tflite",), ("tflite",)),
    BackendEntry("openvino", "firmware_bridge.runtime.backend_openvino:OpenVINOBackend", (".xml",), ("ov",)),
    BackendEntry("onnxruntime", "firmware_bridge.runtime.backend_ort:OnnxRuntimeBackend", (".onnx",),
                 ("ort", "onnx")),
]}
"""Backend name -> row, in order of preference."""


def register_backend(entry: BackendEntry) -> None:
    """Add (or replace) a row of :data:`BACKENDS`."""
    BACKENDS[entry.name] = entry


def model_suffixes() -> tuple[str, ...]:
    """Every model file suffix some backend opens."""
    return tuple(dict.fromkeys(s for e in BACKENDS.values() for s in e.suffixes))


def backend_for(path: str | Path, name: str | None = None) -> str:
    """The backend name for a model: ``name`` if given, else from the file suffix.

    Raises:
        EdgesegError: For an unknown name or suffix (the message lists the valid ones).
    """
    names = ", ".join(BACKENDS)
    if name:
        key = name.lower()
        for entry in BACKENDS.values():
            if key == entry.name or key in entry.aliases:
                return entry.name
        raise EdgesegError(f"unknown backend {name!r}; choose one of {names}")
    suffix = Path(path).suffix.lower()
    for entry in BACKENDS.values():
        if suffix in entry.suffixes:
            return entry.name
    raise EdgesegError(
        f"{path}: cannot tell the backend from '{suffix}'; use a "
        f"{'/'.join(model_suffixes())} file or pass a backend ({names})"
    )


def open_backend(
    path: str | Path, name: str | None = None, options: BackendOptions | None = None
) -> Backend:
    """Open a model file on a backend.

    Args:
        path: ``.tflite`` (LiteRT), ``.xml`` (OpenVINO IR) or ``.onnx`` (ONNX Runtime, or
            OpenVINO when ``name="openvino"``).
        name: Backend name; ``None`` picks it from the suffix.
        options: Threads, device, providers, delegate, kernels.

    Returns:
        The loaded backend.

    Raises:
        EdgesegError: For a missing or unreadable model, an unknown backend, an option the
            backend cannot use, or a device/provider/delegate that is not available (the
            message lists what is).
        MissingDependencyError: When the backend's runtime is not installed.
    """
    path = Path(path)
    if not path.is_file():
        raise EdgesegError(f"{path}: no such model file")
    key = backend_for(path, name)
    cls = BACKENDS[key].load()
    options = options or BackendOptions()
    check_kernels(options.kernels, key, cls.kernel_sets)
    return cls(path, options)


def check_kernels(kernels: str | None, backend: str, offered: tuple[str, ...]) -> None:
    """Refuse a kernel set the backend does not offer.

    Args:
        kernels: :attr:`BackendOptions.kernels` (``None``: the default).
        backend: The backend's name, for the message.
        offered: Its :attr:`Backend.kernel_sets`.

    Raises:
        EdgesegError: For a value outside :data:`KERNELS`, or one the backend lacks.
    """
    if kernels is None or kernels in offered:
        return
    if kernels not in KERNELS:
        raise EdgesegError(f"kernels must be one of {', '.join(KERNELS)}, got {kernels!r}")
    raise EdgesegError(
        f"--kernels {kernels}: {backend} has only its default kernels; the reference kernels "
        "(the rounding of TensorFlow Lite Micro on a microcontroller) are LiteRT's: run the "
        "model's .tflite, or leave --kernels out"
    )
