"""The QAT int8 model as an ONNX Q/DQ graph, from the very flatbuffer of ``tflite-qat-int8``.

tf2onnx converts a quantized TFLite file into QuantizeLinear / DequantizeLinear (Q/DQ) nodes
around float operators (``tf2onnx.convert.from_tflite``; its ``--dequantize`` option, which
would drop them, is not used): int8 weights with their per-channel scales, int32 biases, and
every activation's scale and zero point as the TFLite converter fixed them from the QAT model.
The scales are then the TFLite artifact's own, not a second calibration. Rewrites follow, none
changing a single real value (an 8-bit value ``q`` with zero point ``z`` becomes ``q + 128``
with ``z + 128``, same scale):

* **Activations as uint8.** ONNX Runtime's x86 CPU provider fuses ``DQ -> Conv -> Q`` into
  ``QLinearConv`` only for uint8 activations; of int8 ones it converts only plain Q -> DQ
  pairs, so a tensor read by two layers (a residual, a skip connection) or passed through a
  Concat or Transpose kept 28 of a MobileUNet's 67 convolutions in float. With uint8
  activations it fused all 62 ordinary ones.
* **Weights as uint8, for ONNX Runtime only.** With int8 weights ONNX Runtime picks its U8S8
  kernel, which on x86 CPUs without VNNI adds pairs of products in saturating 16-bit
  arithmetic (``vpmaddubsw``): on such a CPU (AVX2) the masks agreed with the TFLite file on
  96.2 % of validation-tile pixels. uint8 weights select the U8U8 kernel, which does not
  saturate: 99.36 %, as the unfused float evaluation of the same graph (99.34 %).
  OpenVINO gets int8 weights: its CPU plugin runs int8 convolutions only with signed weights
  (with uint8 weights it ran all of them in float).
* **Float input and output**: a QuantizeLinear with the TFLite input's scale and zero point
  right before the first DequantizeLinear (after tf2onnx's NHWC -> NCHW Transpose, so that
  OpenVINO folds the pair into the first convolution), and a DequantizeLinear right after the
  last QuantizeLinear. The file then opens like the float ``onnx`` artifact (NHWC, float32),
  and the edge quantisation is the model's own.

The batch size is 1, as in the TFLite file (its transposed convolutions carry the output shape).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from firmware_bridge.errors import EdgesegError, require

if TYPE_CHECKING:
    import onnx

PASS_THROUGH = ("Transpose", "Concat", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Flatten",
                "Slice", "Split", "MaxPool", "DepthToSpace", "SpaceToDepth", "Resize", "Gather")
"""Operators that move quantized values without computing on them (they take uint8 as int8;
a Resize only in ``nearest`` mode)."""
WEIGHT_INPUTS = {"Conv": 1, "ConvTranspose": 1, "MatMul": 1, "Gemm": 1}
"""Operator -> index of its weight input (weights are left to :func:`uint8_weights`)."""
MIN_OPSET = 13
"""Per-channel DequantizeLinear (``axis``) needs opset 13."""


def from_tflite(flatbuffer: bytes, workdir: Path, opset: int) -> onnx.ModelProto:
    """Convert an int8 TFLite flatbuffer into a Q/DQ ``onnx.ModelProto`` (as tf2onnx writes it).

    Args:
        flatbuffer: The full-integer TFLite model (no metadata archive).
        workdir: Scratch folder for the ``.tflite`` file tf2onnx reads.
        opset: ONNX opset.

    Returns:
        The model.

    Raises:
        EdgesegError: For an opset below 13, or a graph tf2onnx cannot convert (an operator
            left unconverted fails ``onnx.checker``).
    """
    if opset < MIN_OPSET:
        raise EdgesegError(f"the Q/DQ ONNX of the QAT model needs per-channel DequantizeLinear: "
                           f"pass --opset {MIN_OPSET} or later (got {opset})")
    tf2onnx = require("tf2onnx", "export")
    onnx = require("onnx", "export")
    path = workdir / "qat_int8_for_onnx.tflite"
    path.write_bytes(flatbuffer)
    model, _ = tf2onnx.convert.from_tflite(str(path), opset=opset)
    leftover = sorted({n.op_type for n in model.graph.node if n.op_type.startswith("TFL_")})
    if leftover:
        raise EdgesegError(f"tf2onnx cannot convert the TFLite operator(s) {', '.join(leftover)} of "
                           "the QAT model; deploy tflite-qat-int8 for this model")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise EdgesegError(f"tf2onnx wrote an invalid ONNX graph of the QAT model ({exc}); deploy "
                           "tflite-qat-int8 for this model") from exc
    return model


class _Graph:
    """Producer, consumer and initializer look-ups of an ``onnx.GraphProto`` being rewritten."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.inits = {t.name: t for t in graph.initializer}
        self.refresh()

    def refresh(self) -> None:
        self.producer = {out: node for node in self.graph.node for out in node.output}
        self.consumers: dict[str, list] = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def array(self, name: str) -> np.ndarray:
        from onnx import numpy_helper

        return numpy_helper.to_array(self.inits[name])

    def add(self, array: np.ndarray, name: str) -> str:
        from onnx import numpy_helper

        if name not in self.inits:
            tensor = numpy_helper.from_array(array, name)
            self.graph.initializer.append(tensor)
            self.inits[name] = tensor
        return name

    def shifted(self, name: str) -> str:
        """An initializer holding the int8 one plus 128 as uint8 (``name`` when not int8)."""
        values = self.array(name)
        if values.dtype != np.int8:
            return name
        return self.add((values.astype(np.int16) + 128).astype(np.uint8), f"{name}__u8")

    def is_weight(self, dq: onnx.NodeProto) -> bool:
        """True for a DequantizeLinear of a constant that only feeds weight inputs."""
        if dq.input[0] not in self.inits:
            return False
        users = self.consumers.get(dq.output[0], [])
        return bool(users) and all(
            WEIGHT_INPUTS.get(u.op_type) is not None and len(u.input) > WEIGHT_INPUTS[u.op_type]
            and u.input[WEIGHT_INPUTS[u.op_type]] == dq.output[0] for u in users)


def _interpolates(node: onnx.NodeProto) -> bool:
    """True for a Resize that computes new values (any mode but ``nearest``)."""
    if node.op_type != "Resize":
        return False
    modes = [a.s for a in node.attribute if a.name == "mode"]
    return modes != [b"nearest"] and modes != []


def uint8_activations(model: onnx.ModelProto) -> int:
    """Store every int8 activation as uint8 (``q + 128``, zero point ``+ 128``), in place.

    Weights (constants dequantized into a convolution's or matrix product's weight input)
    stay int8. Integer tensors may only reach DequantizeLinear and :data:`PASS_THROUGH`
    operators, which move values without computing on them.

    Args:
        model: A Q/DQ ``onnx.ModelProto``.

    Returns:
        The number of Q and DQ nodes changed.

    Raises:
        EdgesegError: When an integer activation reaches another operator (a Pad filling
            with a constant, an integer Add), whose meaning the shift would change.
    """
    tensor = require("onnx", "export").TensorProto
    g = _Graph(model.graph)
    integer = {n.output[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    integer |= {i.name for i in model.graph.input
                if i.type.tensor_type.elem_type in (tensor.UINT8, tensor.INT8)}
    frontier = list(integer)
    while frontier:
        for user in g.consumers.get(frontier.pop(), []):
            if user.op_type == "DequantizeLinear":
                continue
            if user.op_type not in PASS_THROUGH or _interpolates(user):
                raise EdgesegError(f"the Q/DQ ONNX of the QAT model feeds an integer tensor to "
                                   f"{user.op_type} ({user.name}); deploy tflite-qat-int8 for this model")
            new = [o for o in user.output if o not in integer]
            integer.update(new)
            frontier.extend(new)
    changed = 0
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        if node.op_type == "DequantizeLinear" and g.is_weight(node):
            continue
        if node.op_type == "DequantizeLinear" and node.input[0] in g.inits:
            node.input[0] = g.shifted(node.input[0])
        zero_point = g.shifted(node.input[2])
        if zero_point != node.input[2]:
            node.input[2] = zero_point
            changed += 1
    return changed


def _walk(g: _Graph, start: str, forward: bool) -> tuple[onnx.NodeProto, str] | None:
    """From a graph input down (or an output up) through :data:`PASS_THROUGH` to a DQ (or Q).

    Returns:
        ``(node, edge)``: the DequantizeLinear (QuantizeLinear) and the tensor name between
        it and the pass-through chain; ``None`` when the path branches or ends elsewhere.
    """
    name = start
    for _ in range(len(g.graph.node)):
        if forward:
            users = g.consumers.get(name, [])
            if len(users) != 1:
                return None
            node = users[0]
            if node.op_type == "DequantizeLinear":
                return node, name
            if node.op_type not in PASS_THROUGH or len(node.output) != 1:
                return None
            name = node.output[0]
        else:
            node = g.producer.get(name)
            if node is None or len(g.consumers.get(name, [])) > 1:
                return None
            if node.op_type == "QuantizeLinear":
                return node, name
            if node.op_type not in PASS_THROUGH or not node.input:
                return None
            name = node.input[0]
    return None


def float_edges(model: onnx.ModelProto) -> None:
    """Give an integer graph input and output float32, quantized inside with the model's own scales.

    The input's QuantizeLinear goes right before the first DequantizeLinear (the pass-through
    operators before it, tf2onnx's layout Transpose, then carry float), the output's
    DequantizeLinear right after the last QuantizeLinear. Float edges stay as they are.

    Args:
        model: A Q/DQ ``onnx.ModelProto`` (changed in place).

    Raises:
        EdgesegError: When an integer input does not lead to one DequantizeLinear (or an output
            come from one QuantizeLinear) through pass-through operators alone.
    """
    onnx = require("onnx", "export")
    helper, float32 = onnx.helper, onnx.TensorProto.FLOAT
    g = _Graph(model.graph)
    for value in model.graph.input:
        if value.type.tensor_type.elem_type == float32:
            continue
        found = _walk(g, value.name, forward=True)
        if found is None:
            raise EdgesegError(f"the Q/DQ ONNX input {value.name!r} does not lead to one "
                               "DequantizeLinear; deploy tflite-qat-int8 for this model")
        dq, edge = found
        quantized = f"{edge}__quantized"
        q = helper.make_node("QuantizeLinear", [edge, dq.input[1], dq.input[2]], [quantized],
                             name=f"{value.name}__quantize")
        dq.input[0] = quantized
        model.graph.node.insert(list(model.graph.node).index(dq), q)
        value.type.tensor_type.elem_type = float32
    g.refresh()
    for value in model.graph.output:
        if value.type.tensor_type.elem_type == float32:
            continue
        found = _walk(g, value.name, forward=False)
        if found is None:
            raise EdgesegError(f"the Q/DQ ONNX output {value.name!r} does not come from one "
                               "QuantizeLinear; deploy tflite-qat-int8 for this model")
        q, edge = found
        quantized = f"{edge}__quantized"
        q.output[0] = quantized
        dq = helper.make_node("DequantizeLinear", [quantized, q.input[1], q.input[2]], [edge],
                              name=f"{value.name}__dequantize")
        model.graph.node.insert(list(model.graph.node).index(q) + 1, dq)
        value.type.tensor_type.elem_type = float32


def drop_unused_initializers(model: onnx.ModelProto) -> None:
    """Remove initializers no node reads (the int8 zero points the rewrites replaced)."""
    used = {name for node in model.graph.node for name in node.input}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def uint8_weights(model: onnx.ModelProto) -> int:
    """Store every int8 weight as uint8 (``w + 128``, zero point ``+ 128``), in place.

    Args:
        model: A Q/DQ ``onnx.ModelProto``.

    Returns:
        The number of weights changed.
    """
    g = _Graph(model.graph)
    changed = 0
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or len(node.input) < 3 or not g.is_weight(node):
            continue
        weight = g.shifted(node.input[0])
        if weight != node.input[0]:
            node.input[0], node.input[2] = weight, g.shifted(node.input[2])
            changed += 1
    return changed


def qdq_model(converted: onnx.ModelProto, weights: str = "int8") -> onnx.ModelProto:
    """The deployable Q/DQ model: uint8 activations, float edges, checked (a new proto).

    Args:
        converted: What :func:`from_tflite` returned (left unchanged).
        weights: ``"int8"`` (OpenVINO) or ``"uint8"`` (ONNX Runtime; see the module docstring).

    Returns:
        The ``onnx.ModelProto`` (input ``(1, H, W, C)`` float32, NHWC; no metadata).

    Raises:
        EdgesegError: For a graph that cannot be rewritten or does not check afterwards.
    """
    onnx = require("onnx", "export")
    if weights not in ("int8", "uint8"):
        raise EdgesegError(f"weights must be int8 or uint8, got {weights!r}")
    model = onnx.ModelProto()
    model.CopyFrom(converted)
    uint8_activations(model)
    if weights == "uint8":
        uint8_weights(model)
    float_edges(model)
    drop_unused_initializers(model)
    del model.graph.value_info[:]  # tf2onnx's int8 types of the rewritten tensors
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise EdgesegError(f"the Q/DQ ONNX of the QAT model does not check after its rewrite "
                           f"({exc}); deploy tflite-qat-int8 for this model") from exc
    return model


def activation_quantization(model: onnx.ModelProto) -> list[tuple[float, int]]:
    """``(scale, zero point as int8)`` of every per-tensor QuantizeLinear, in graph order.

    The zero point is given back in TFLite's int8 terms (uint8 minus 128), so that the list
    compares with the TFLite file's activation quantization.
    """
    g = _Graph(model.graph)
    found = []
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 3:
            continue
        scale, zero_point = g.array(node.input[1]), g.array(node.input[2])
        if scale.size != 1:
            continue
        shift = 128 if zero_point.dtype == np.uint8 else 0
        found.append((float(scale.ravel()[0]), int(zero_point.ravel()[0]) - shift))
    return found
