"""OpenVINO backend: IR ``.xml`` (or ``.onnx``) on CPU, GPU, NPU or AUTO."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from firmware_bridge.errors import EdgesegError, require
from firmware_bridge.runtime.backends import Backend, BackendOptions, TensorSpec

VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")


def _const(node) -> float | None:
    """Scalar value of a Constant node (through a Convert), else ``None``."""
    if node.get_type_name() == "Convert":
        node = node.input_value(0).get_node()
    if node.get_type_name() != "Constant":
        return None
    data = np.asarray(node.get_data()).ravel()
    return float(data[0]) if data.size and np.all(data == data[0]) else None


def input_quantization(model) -> tuple[float, int]:
    """Scale and zero point of an integer input, from the dequantise pattern after it.

    OpenVINO expresses ``DequantizeLinear`` as ``Parameter -> Convert -> [Subtract zp] ->
    Multiply scale``. Returns ``(0.0, 0)`` when the pattern is not there.
    """
    consumers = list(model.input(0).get_target_inputs())
    if len(consumers) != 1 or consumers[0].get_node().get_type_name() != "Convert":
        return 0.0, 0
    node, zero_point = consumers[0].get_node(), 0.0
    nxt = list(node.output(0).get_target_inputs())
    if len(nxt) == 1 and nxt[0].get_node().get_type_name() == "Subtract":
        node = nxt[0].get_node()
        zero_point = _const(node.input_value(1).get_node())
        if zero_point is None:
            return 0.0, 0
        nxt = list(node.output(0).get_target_inputs())
    if len(nxt) != 1 or nxt[0].get_node().get_type_name() != "Multiply":
        return 0.0, 0
    mul = nxt[0].get_node()
    other = mul.input_value(1 - nxt[0].get_index()).get_node()
    scale = _const(other)
    return (scale, int(round(zero_point))) if scale else (0.0, 0)


def output_quantization(model) -> tuple[float, int]:
    """Scale and zero point of an integer output: ``FakeQuantize -> Convert -> Result``.

    A FakeQuantize with input range ``[il, ih]`` and output range ``[ol, oh]`` stores
    ``q = ol + (x - il) / scale`` with ``scale = (ih - il) / (oh - ol)``, so the zero point is
    ``ol - il / scale``. Returns ``(0.0, 0)`` when the pattern is not there.
    """
    node = model.output(0).get_node().input_value(0).get_node()
    if node.get_type_name() != "Convert":
        return 0.0, 0
    fq = node.input_value(0).get_node()
    if fq.get_type_name() != "FakeQuantize":
        return 0.0, 0
    il, ih, ol, oh = (_const(fq.input_value(i).get_node()) for i in range(1, 5))
    if None in (il, ih, ol, oh) or ih == il or oh == ol:
        return 0.0, 0
    scale = (ih - il) / (oh - ol)
    return float(scale), int(round(ol - il / scale))


def _spec(port, quant: tuple[float, int]) -> TensorSpec:
    shape = tuple(None if d.is_dynamic else d.get_length() for d in port.get_partial_shape())
    dtype = np.dtype(port.get_element_type().to_dtype())
    scale, zero_point = quant if np.issubdtype(dtype, np.integer) else (0.0, 0)
    return TensorSpec(port.get_any_name(), shape, dtype, scale, zero_point)


def check_device(device: str, available: list[str]) -> None:
    """Refuse a device OpenVINO does not see, listing the ones it does.

    Raises:
        EdgesegError: When ``device`` (e.g. ``GPU`` or ``GPU.1``) is not available.
    """
    base = device.split(":")[0].upper()
    if base in VIRTUAL_DEVICES:
        return
    families = {d.split(".")[0] for d in available}
    if device.upper() not in available and base not in families:
        raise EdgesegError(
            f"OpenVINO device {device!r} is not available; available here: "
            f"{', '.join(available + ['AUTO'])}"
        )


def precision_config(device: str) -> dict:
    """The settings that make OpenVINO's CPU plugin infer a float model in f32.

    On CPUs with AMX or AVX512_BF16 the CPU plugin infers in bf16 by default, whose 8-bit
    significand moves the probabilities by ~1e-2 against the f32 of the other backends. The
    hint goes to the CPU directly (``CPU``, ``CPU.0``, ``BATCH:CPU``), or through
    ``DEVICE_PROPERTIES`` to a CPU that ``AUTO``, ``MULTI`` or ``HETERO`` may pick (``BATCH``
    refuses ``DEVICE_PROPERTIES``); other devices keep their defaults (a GPU's f16). Quantized
    layers stay int8: the hint sets the precision of the float ones.
    """
    base, _, targets = device.upper().partition(":")
    if base.split(".")[0] == "CPU" or (base == "BATCH" and targets.startswith("CPU")):
        return {"INFERENCE_PRECISION_HINT": "f32"}
    if base in VIRTUAL_DEVICES and base != "BATCH":
        return {"DEVICE_PROPERTIES": {"CPU": {"INFERENCE_PRECISION_HINT": "f32"}}}
    return {}


class OpenVINOBackend(Backend):
    """A model on OpenVINO.

    On CPU, inference runs in f32 (``INFERENCE_PRECISION_HINT``, also through AUTO, MULTI
    and HETERO: :func:`precision_config`): OpenVINO would otherwise pick bf16 on CPUs that
    have it, and results would drift from the other backends.

    A model with a dynamic input dimension (the exported IRs have a dynamic batch) is
    compiled once per concrete input shape it is given, reshaped to that static shape first:
    OpenVINO's CPU plugin crashed (segmentation fault) running NNCF int8 models with a
    dynamic dimension on CPUs with AMX at small inputs (openvinotoolkit/openvino#37577), and
    static shapes also let the plugin pick its kernels once. A tiled prediction gives one or
    two shapes (full batches and the last one).
    """

    name = "openvino"

    def __init__(self, path: Path, options: BackendOptions) -> None:
        if options.delegate or options.providers:
            raise EdgesegError("OpenVINO takes a device (--device CPU/GPU/NPU/AUTO), not a "
                               "delegate or providers")
        ov = require("openvino", "openvino")
        core = ov.Core()
        device = options.device or "CPU"
        check_device(device, list(core.available_devices))
        if path.suffix.lower() == ".xml" and not path.with_suffix(".bin").is_file():
            raise EdgesegError(f"{path}: the weights file {path.with_suffix('.bin').name} "
                               "must lie beside the .xml")
        try:
            model = core.read_model(str(path))
        except RuntimeError as exc:
            raise EdgesegError(f"{path}: not a readable OpenVINO model ({exc})") from exc
        if len(model.inputs) != 1:
            raise EdgesegError(f"{path}: the model has {len(model.inputs)} inputs; a "
                               "segmentation model takes one image tensor")
        config = precision_config(device)
        if options.threads:
            config["INFERENCE_NUM_THREADS"] = str(options.threads)
        self.device = device
        self._model, self._core, self._config = model, core, config
        self._requests: dict[tuple[int, ...], object] = {}
        super().__init__(path, _spec(model.input(0), input_quantization(model)),
                         _spec(model.output(0), output_quantization(model)))
        if model.input(0).get_partial_shape().is_static:
            self._request_for(tuple(model.input(0).get_shape()))

    def _request_for(self, shape: tuple[int, ...]):
        """The infer request of a model compiled for exactly ``shape`` (compiled once)."""
        if shape not in self._requests:
            ov = require("openvino", "openvino")
            model = self._model
            if not model.input(0).get_partial_shape().is_static:
                model = model.clone()
                model.reshape({0: ov.PartialShape(list(shape))})
            try:
                compiled = self._core.compile_model(model, self.device, self._config)
            except RuntimeError as exc:
                raise EdgesegError(f"{self.path}: OpenVINO cannot compile it for {self.device} "
                                   f"at input {shape} ({exc})") from exc
            self._requests[shape] = compiled.create_infer_request()
        return self._requests[shape]

    def describe(self) -> dict:
        """:meth:`Backend.describe`, with the device the model is compiled for."""
        return {**super().describe(), "device": self.device}

    def _infer(self, x: np.ndarray) -> np.ndarray:
        request = self._request_for(tuple(int(d) for d in x.shape))
        try:
            request.infer({0: x})
        except RuntimeError as exc:
            raise EdgesegError(f"{self.path}: OpenVINO failed on input {x.shape}: {exc}") from exc
        return np.array(request.get_output_tensor(0).data, copy=True)
