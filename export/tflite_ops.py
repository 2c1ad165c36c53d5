"""The operator list of a TFLite flatbuffer, and which of its operators compute in float.

An int8 input and output type does not prove a fully integer graph (a QAT
DeepLab kept its dilated depthwise convolution in float): the operators must be inspected.
This module parses the flatbuffer with the schema that ships with ``ai_edge_litert`` (no
interpreter, so no delegate replaces operators before we see them, and no TensorFlow).

"Float compute": an operator other than QUANTIZE / DEQUANTIZE with a float tensor among its
inputs or outputs. QUANTIZE (float -> int8) and DEQUANTIZE (int8 -> float) are conversions,
allowed where the model keeps float input or output.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from firmware_bridge.errors import EdgesegError, require

FLOAT_TYPES = ("FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16")
CONVERSIONS = ("QUANTIZE", "DEQUANTIZE")


@dataclass(frozen=True)
class TFLiteOp:
    """One operator: builtin name, types of its inputs and outputs, names of its outputs.

    The converter names output tensors after the Keras layers they compute
    (``model/<layer>/<op>``, fused operators joined by ``;``).
    """

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    output_names: tuple[str, ...] = ()

    def computes(self, layer: str) -> bool:
        """True when an output tensor of this operator belongs to the Keras layer ``layer``."""
        key = f"/{layer}/"
        return any(key in part for name in self.output_names for part in name.split(";"))

    @property
    def float_compute(self) -> bool:
        """True when the operator computes in float (see the module docstring)."""
        if self.name in CONVERSIONS:
            return False
        return any(t in FLOAT_TYPES for t in self.inputs + self.outputs)


def _names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


def flatbuffer_size(model: bytes) -> int:
    """Bytes of the flatbuffer itself, without the metadata archive appended after it.

    :func:`firmware_bridge.runtime.metadata.tflite_with_metadata` appends a zip written on its own,
    so the offsets in its end record count from the archive's first byte:
    ``start = end_record - central_directory_size - central_directory_offset``.

    Returns:
        ``start`` when a zip follows the flatbuffer, else ``len(model)``.
    """
    eocd = model.rfind(b"PK\x05\x06")
    if eocd < 0 or eocd + 22 > len(model):
        return len(model)
    cd_size = int.from_bytes(model[eocd + 12 : eocd + 16], "little")
    cd_offset = int.from_bytes(model[eocd + 16 : eocd + 20], "little")
    start = eocd - cd_size - cd_offset
    if start <= 0 or model[start : start + 4] != b"PK\x03\x04":
        return len(model)
    return start


def op_list(model: bytes) -> list[TFLiteOp]:
    """The operators of the main subgraph, in execution order.

    Args:
        model: TFLite flatbuffer bytes (with or without the appended metadata archive).

    Returns:
        One :class:`TFLiteOp` per operator.

    Raises:
        EdgesegError: When the bytes are not a TFLite model.
        MissingDependencyError: Without ``ai_edge_litert`` (the ``device`` extra).
    """
    schema = require("ai_edge_litert.schema_py_generated", "device")
    if model[4:8] != b"TFL3":
        raise EdgesegError("not a TFLite flatbuffer (no TFL3 identifier)")
    ops, types = _names(schema.BuiltinOperator), _names(schema.TensorType)
    root = schema.Model.GetRootAsModel(model, 0)
    graph = root.Subgraphs(0)
    result = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = root.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = ops.get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM":
            name = f"CUSTOM:{code.CustomCode().decode()}"
        ins = tuple(types[graph.Tensors(op.Inputs(j)).Type()]
                    for j in range(op.InputsLength()) if op.Inputs(j) >= 0)
        outs = tuple(types[graph.Tensors(op.Outputs(j)).Type()] for j in range(op.OutputsLength()))
        out_names = tuple((graph.Tensors(op.Outputs(j)).Name() or b"").decode()
                          for j in range(op.OutputsLength()))
        result.append(TFLiteOp(name, ins, outs, out_names))
    return result


def op_counts(model: bytes) -> dict[str, int]:
    """Operator name -> count, sorted by name."""
    return dict(sorted(Counter(op.name for op in op_list(model)).items()))


def float_compute_ops(model: bytes) -> list[TFLiteOp]:
    """The operators that compute in float (empty for a fully integer graph)."""
    return [op for op in op_list(model) if op.float_compute]


def check_fully_integer(model: bytes, what: str, float_layers: tuple[str, ...] = ()) -> None:
    """Refuse a graph that still computes in float (except the layers kept float on purpose).

    Args:
        model: TFLite flatbuffer bytes.
        what: Name of the model for the message.
        float_layers: Keras layers whose operators may compute in float.

    Raises:
        EdgesegError: Listing the float operators.
    """
    bad = [op for op in float_compute_ops(model)
           if not any(op.computes(layer) for layer in float_layers)]
    if bad:
        listed = ", ".join(sorted({f"{op.name}({'/'.join(op.inputs)})" for op in bad}))
        raise EdgesegError(
            f"{what}: {len(bad)} operator(s) left in float after int8 conversion: {listed}; "
            "the graph is not fully integer (convert with a representative dataset and "
            "TFLITE_BUILTINS_INT8, no BN after a transposed conv)"
        )
