"""The few parts of an ``.onnx`` file the runtime reads itself, without the ``onnx`` package.

An ONNX file is one protobuf message (``ModelProto``). Serving a model needs two things from
it that ONNX Runtime's session does not give: the ``metadata_props`` (edgeseg's own and other
exporters' keys, also for a model that OpenVINO runs) and the scale and zero point of an
integer input or output, which live in the graph's ``DequantizeLinear`` / ``QuantizeLinear``
nodes. Both are read here from the protobuf wire format, so that loading a model never
imports ``onnx`` (a conversion-side package). Field numbers are those of ``onnx.proto``.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterator
from pathlib import Path

from firmware_bridge.errors import EdgesegError

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5
MODEL_GRAPH, MODEL_METADATA_PROPS = 7, 14
GRAPH_NODE, GRAPH_INITIALIZER, GRAPH_INPUT, GRAPH_OUTPUT = 1, 5, 11, 12
NODE_INPUT, NODE_OUTPUT, NODE_OP_TYPE = 1, 2, 4
TENSOR_DIMS, TENSOR_DATA_TYPE, TENSOR_FLOAT_DATA, TENSOR_INT32_DATA = 1, 2, 4, 5
TENSOR_INT64_DATA, TENSOR_NAME, TENSOR_RAW_DATA, TENSOR_DOUBLE_DATA = 7, 8, 9, 10
RAW_FORMATS = {1: "f", 2: "B", 3: "b", 4: "H", 5: "h", 6: "i", 7: "q", 10: "e", 11: "d"}
"""``struct`` format of one element of ``raw_data`` by ``TensorProto.DataType``."""


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise WireError("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def fields(buf, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int, object]]:
    """The fields of one protobuf message, in file order.

    Args:
        buf: The bytes (``bytes``, ``memoryview`` or ``mmap``).
        start: Where the message starts.
        end: Where it ends (``None``: the end of ``buf``).

    Yields:
        ``(field number, wire type, value)``: an ``int`` for varint and fixed-width fields,
        ``(start, end)`` of the payload for length-delimited ones.

    Raises:
        WireError: For a truncated message or a wire type protobuf 3 does not write.
    """
    end = len(buf) if end is None else end
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, pos = _varint(buf, pos, end)
        elif wire == LENGTH:
            size, pos = _varint(buf, pos, end)
            if pos + size > end:
                raise WireError("a field runs past the end of its message")
            value, pos = (pos, pos + size), pos + size
        elif wire in (FIXED32, FIXED64):
            width = 4 if wire == FIXED32 else 8
            if pos + width > end:
                raise WireError("a field runs past the end of its message")
            value = int.from_bytes(buf[pos : pos + width], "little")
            pos += width
        else:
            raise WireError(f"wire type {wire} (groups) in field {number}")
        if number == 0:
            raise WireError("field number 0")
        yield number, wire, value


def _text(buf, span: tuple[int, int]) -> str:
    return bytes(buf[span[0] : span[1]]).decode("utf-8", "replace")


def _open(path: Path):
    """The file's bytes, memory-mapped (an empty file gives ``b""``)."""
    with path.open("rb") as f:
        if path.stat().st_size == 0:
            return b""
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def metadata_props(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ``.onnx`` file (key -> value; later keys win).

    Only the top level of the file is walked: the graph, weights included, is skipped by its
    length.

    Args:
        path: The ``.onnx`` file.

    Returns:
        The properties; empty for a model without any.

    Raises:
        EdgesegError: When the file is not a readable protobuf message.
    """
    path = Path(path)
    buf = _open(path)
    props: dict[str, str] = {}
    try:
        for number, wire, value in fields(buf):
            if number != MODEL_METADATA_PROPS or wire != LENGTH:
                continue
            entry = {n: _text(buf, v) for n, w, v in fields(buf, *value) if w == LENGTH}
            if 1 in entry:
                props[entry[1]] = entry.get(2, "")
    except WireError as exc:
        raise EdgesegError(f"{path}: not a readable ONNX file ({exc})") from None
    finally:
        if isinstance(buf, mmap.mmap):
            buf.close()
    return props


def _scalar(buf, span: tuple[int, int]) -> tuple[str, float | None]:
    """Name and value of a ``TensorProto`` holding one number (value ``None`` otherwise).

    The data fields are decoded only for a tensor of one element: a weight tensor is skipped
    without a copy.
    """
    name, dtype, dims, data = "", 0, [], []
    for number, wire, value in fields(buf, *span):
        if number == TENSOR_NAME and wire == LENGTH:
            name = _text(buf, value)
        elif number == TENSOR_DATA_TYPE and wire == VARINT:
            dtype = value
        elif number == TENSOR_DIMS:
            dims += _ints(buf, wire, value)
        elif number in (TENSOR_RAW_DATA, TENSOR_FLOAT_DATA, TENSOR_DOUBLE_DATA, TENSOR_INT32_DATA,
                        TENSOR_INT64_DATA):
            data.append((number, wire, value))
    if any(d != 1 for d in dims):
        return name, None
    values: list[float] = []
    for number, wire, value in data:
        if number == TENSOR_RAW_DATA and wire == LENGTH:
            fmt = RAW_FORMATS.get(dtype)
            if fmt is None or value[1] - value[0] != struct.calcsize(fmt):
                return name, None
            values.append(float(struct.unpack("<" + fmt, bytes(buf[value[0] : value[1]]))[0]))
        elif number == TENSOR_FLOAT_DATA:
            values += _packed(buf, wire, value, "f", FIXED32)
        elif number == TENSOR_DOUBLE_DATA:
            values += _packed(buf, wire, value, "d", FIXED64)
        else:
            values += [float(v) for v in _ints(buf, wire, value)]
    return name, values[0] if len(values) == 1 else None


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _ints(buf, wire: int, value) -> list[int]:
    if wire == VARINT:
        return [_signed(value)]
    if wire != LENGTH:
        return []
    out, pos, end = [], value[0], value[1]
    while pos < end:
        v, pos = _varint(buf, pos, end)
        out.append(_signed(v))
    return out


def _packed(buf, wire: int, value, fmt: str, single: int) -> list[float]:
    width = struct.calcsize(fmt)
    if wire == single:
        return list(struct.unpack("<" + fmt, value.to_bytes(width, "little")))
    if wire != LENGTH or (value[1] - value[0]) % width:
        return []
    return [float(v) for v in struct.unpack(f"<{(value[1] - value[0]) // width}{fmt}",
                                            bytes(buf[value[0] : value[1]]))]


def _node(buf, span: tuple[int, int]) -> tuple[str, list[str], list[str]]:
    op, inputs, outputs = "", [], []
    for number, wire, value in fields(buf, *span):
        if wire != LENGTH:
            continue
        if number == NODE_OP_TYPE:
            op = _text(buf, value)
        elif number == NODE_INPUT:
            inputs.append(_text(buf, value))
        elif number == NODE_OUTPUT:
            outputs.append(_text(buf, value))
    return op, inputs, outputs


def _value_name(buf, span: tuple[int, int]) -> str:
    return next((_text(buf, v) for n, w, v in fields(buf, *span) if n == 1 and w == LENGTH), "")


def edge_quantization(path: str | Path) -> tuple[tuple[float, int], tuple[float, int]]:
    """Input and output ``(scale, zero_point)`` from the graph's edge Q/DQ nodes.

    An integer input feeds a ``DequantizeLinear`` and an integer output comes from a
    ``QuantizeLinear``; their scalar scale and zero point (initializers) are the tensor's
    quantisation.

    Args:
        path: The ``.onnx`` file.

    Returns:
        ``((input scale, input zero point), (output scale, output zero point))``; ``(0.0, 0)``
        for a side without the pattern, and for a file that does not parse (its runtime then
        says what is wrong with it).
    """
    path = Path(path)
    none = ((0.0, 0), (0.0, 0))
    try:
        buf = _open(path)
    except OSError:
        return none
    try:
        graph = next((v for n, w, v in fields(buf) if n == MODEL_GRAPH and w == LENGTH), None)
        if graph is None:
            return none
        nodes, inits, inputs, outputs = [], {}, [], []
        for number, wire, value in fields(buf, *graph):
            if wire != LENGTH:
                continue
            if number == GRAPH_NODE:
                nodes.append(_node(buf, value))
            elif number == GRAPH_INITIALIZER:
                name, scalar = _scalar(buf, value)
                inits[name] = scalar
            elif number == GRAPH_INPUT:
                inputs.append(_value_name(buf, value))
            elif number == GRAPH_OUTPUT:
                outputs.append(_value_name(buf, value))
    except (WireError, struct.error):
        return none
    finally:
        if isinstance(buf, mmap.mmap):
            buf.close()
    if not inputs or not outputs:
        return none
    found = []
    for tensor, op, where in ((inputs[0], "DequantizeLinear", 0), (outputs[0], "QuantizeLinear", 1)):
        matches = [n for n in nodes if n[0] == op and len(n[1]) >= 2 and n[2]
                   and (n[1][0] if where == 0 else n[2][0]) == tensor]
        quant = (0.0, 0)
        if len(matches) == 1:
            node_inputs = matches[0][1]
            scale = inits.get(node_inputs[1])
            zp = inits.get(node_inputs[2]) if len(node_inputs) > 2 and node_inputs[2] else 0.0
            if scale and zp is not None:
                quant = (scale, int(zp))
        found.append(quant)
    return found[0], found[1]
