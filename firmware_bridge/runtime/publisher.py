"""What other tools write into a model about feeding it: normalisation, band order, class names.

A model that edgeseg did not export carries no edgeseg metadata, but often its publisher's:

* TFLite: TFLite Support metadata, a flatbuffer (``metadata_schema.fbs``, file identifier
  ``M001``) in the model buffer named ``TFLITE_METADATA``. The input tensor's
  ``NormalizationOptions`` give mean and std, its ``ImageProperties`` the colour space (RGB
  or grayscale); the output tensor's first ``TENSOR_AXIS_LABELS`` associated file, zipped onto
  the end of the model file, holds the class names. The few tables needed are read here with
  ``struct``, without the ``tflite-support`` package.
* ONNX: ``metadata_props`` keys as common exporters write them: ``names`` (Ultralytics, a
  dict ``{0: 'person', ...}``), ``labels``, ``classes`` or ``class_names`` (a list, or names
  separated by commas or lines), ``mean`` / ``mean_values`` and ``std`` / ``scale_values``.
* OpenVINO IR: ``rt_info`` ``model_info`` as the OpenVINO Model API and Open Model Zoo write
  it: ``labels`` (separated by spaces), ``mean_values``, ``scale_values``,
  ``reverse_input_channels`` (``True``: the model takes RGB) and ``embedded_processing`` (the
  normalisation is inside the graph: pixels go in as they are).

Normalisation is ``(pixel - mean) / std`` on the image's own values (0..255 for 8-bit) in
every one of them, as in edgeseg's metadata with ``scale`` 1. A value that does not parse is
left out (the runtime then says it assumed one); nothing here raises for a foreign model.
"""

from __future__ import annotations

import ast
import json
import math
import mmap
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

from firmware_bridge.errors import EdgesegError
from firmware_bridge.io.classes import parse_labels

TFLITE_METADATA = "TFLITE_METADATA"
"""Name of the model buffer that holds TFLite Support metadata."""
ONNX_CLASS_KEYS = ("names", "labels", "classes", "class_names")
ONNX_MEAN_KEYS = ("mean", "mean_values")
ONNX_STD_KEYS = ("std", "scale_values")
TENSOR_AXIS_LABELS = 2
IMAGE_PROPERTIES = 2
NORMALIZATION_OPTIONS = 1
COLOUR_SPACES = {1: "RGB", 2: "GRAY"}


@dataclass
class PublisherMetadata:
    """What a model's publisher recorded about its input and output (``None``: not recorded).

    Attributes:
        source: Where it was read, for messages (``"TFLite Support metadata"``).
        classes: Class names in output-channel order.
        mean: Per-channel (or single) mean subtracted from the pixel.
        std: Per-channel (or single) divisor.
        bands: ``"RGB"`` or ``"GRAY"`` where the publisher says which bands the model takes.
    """

    source: str
    classes: list[str] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    bands: str | None = None

    def __bool__(self) -> bool:
        """True when anything was recorded."""
        return any(v is not None for v in (self.classes, self.mean, self.std, self.bands))


class _Malformed(ValueError):
    """A flatbuffer that points outside itself."""


class _Table:
    """One flatbuffer table, read with ``struct`` (little-endian, as flatbuffers are)."""

    def __init__(self, buf, pos: int) -> None:
        self.buf, self.pos = buf, pos
        self.vtable = pos - self._i32(pos)
        self.vsize = self._u16(self.vtable)

    @classmethod
    def root(cls, buf, identifier: bytes | None = None) -> _Table | None:
        """The root table of a flatbuffer; ``None`` when the file identifier differs."""
        if len(buf) < 8 or (identifier and bytes(buf[4:8]) != identifier):
            return None
        return cls(buf, cls._u32_at(buf, 0))

    @staticmethod
    def _u32_at(buf, pos: int) -> int:
        if pos < 0 or pos + 4 > len(buf):
            raise _Malformed(f"offset {pos} outside the buffer")
        return struct.unpack_from("<I", buf, pos)[0]

    def _i32(self, pos: int) -> int:
        if pos < 0 or pos + 4 > len(self.buf):
            raise _Malformed(f"offset {pos} outside the buffer")
        return struct.unpack_from("<i", self.buf, pos)[0]

    def _u16(self, pos: int) -> int:
        if pos < 0 or pos + 2 > len(self.buf):
            raise _Malformed(f"offset {pos} outside the buffer")
        return struct.unpack_from("<H", self.buf, pos)[0]

    def _field(self, slot: int) -> int:
        """Absolute position of field ``slot``, 0 when absent."""
        entry = 4 + 2 * slot
        if entry + 2 > self.vsize:
            return 0
        rel = self._u16(self.vtable + entry)
        return self.pos + rel if rel else 0

    def scalar(self, slot: int, fmt: str, default=0):
        """A scalar field (``struct`` format ``fmt``), or ``default``."""
        pos = self._field(slot)
        if not pos:
            return default
        if pos + struct.calcsize(fmt) > len(self.buf):
            raise _Malformed(f"field {slot} outside the buffer")
        return struct.unpack_from("<" + fmt, self.buf, pos)[0]

    def _target(self, slot: int) -> int:
        pos = self._field(slot)
        return pos + self._u32_at(self.buf, pos) if pos else 0

    def table(self, slot: int) -> _Table | None:
        """A table field, or ``None``."""
        pos = self._target(slot)
        return _Table(self.buf, pos) if pos else None

    def _vector(self, slot: int, width: int) -> tuple[int, int]:
        pos = self._target(slot)
        if not pos:
            return 0, 0
        n = self._u32_at(self.buf, pos)
        if pos + 4 + n * width > len(self.buf):
            raise _Malformed(f"vector {slot} of {n} elements runs past the buffer")
        return pos + 4, n

    def string(self, slot: int) -> str | None:
        """A string field, or ``None``."""
        start, n = self._vector(slot, 1)
        return bytes(self.buf[start : start + n]).decode("utf-8", "replace") if start else None

    def data(self, slot: int) -> bytes | None:
        """A ``[ubyte]`` field, or ``None``."""
        start, n = self._vector(slot, 1)
        return bytes(self.buf[start : start + n]) if start else None

    def floats(self, slot: int) -> list[float] | None:
        """A ``[float]`` field, or ``None``."""
        start, n = self._vector(slot, 4)
        return list(struct.unpack_from(f"<{n}f", self.buf, start)) if start else None

    def tables(self, slot: int) -> list[_Table]:
        """A vector-of-tables field (empty when absent)."""
        start, n = self._vector(slot, 4)
        return [_Table(self.buf, start + 4 * i + self._u32_at(self.buf, start + 4 * i))
                for i in range(n)]


def _normalisation(mean: list[float] | None, std: list[float] | None
                   ) -> tuple[list[float] | None, list[float] | None]:
    """``mean`` and ``std`` each kept where usable: finite numbers, and ``std`` above 0."""
    usable_mean = mean if mean and all(math.isfinite(v) for v in mean) else None
    usable_std = std if std and all(math.isfinite(v) and v > 0 for v in std) else None
    return usable_mean, usable_std


def _tflite_metadata_buffer(buf) -> bytes | None:
    """The bytes of the model buffer named ``TFLITE_METADATA``, if there is one."""
    model = _Table.root(buf, b"TFL3")
    if model is None:
        return None
    for entry in model.tables(6):  # Model.metadata
        if entry.string(0) != TFLITE_METADATA:
            continue
        buffers = model.tables(4)  # Model.buffers
        index = entry.scalar(1, "I")
        if index >= len(buffers):
            return None
        buffer = buffers[index]
        offset, size = buffer.scalar(1, "Q"), buffer.scalar(2, "Q")
        if offset > 1:  # stored after the flatbuffer (models over 2 GB)
            return bytes(buf[offset : offset + size])
        return buffer.data(0)
    return None


def read_tflite_support(path: str | Path) -> PublisherMetadata | None:
    """TFLite Support metadata of a ``.tflite``: normalisation, colour space, labels.

    Args:
        path: The model file.

    Returns:
        What the metadata records, or ``None`` for a model without it (or whose metadata
        does not parse).
    """
    path = Path(path)
    if path.stat().st_size < 8:
        return None
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        try:
            raw = _tflite_metadata_buffer(buf)
        except (_Malformed, struct.error):
            return None
    if not raw:
        return None
    found = PublisherMetadata("TFLite Support metadata")
    label_file = None
    try:
        meta = _Table.root(raw)
        subgraphs = meta.tables(3) if meta else []  # ModelMetadata.subgraph_metadata
        if not subgraphs:
            return None
        inputs, outputs = subgraphs[0].tables(2), subgraphs[0].tables(3)
        if inputs:
            content = inputs[0].table(3)  # TensorMetadata.content
            if content is not None and content.scalar(0, "B") == IMAGE_PROPERTIES:
                image = content.table(1)
                found.bands = COLOUR_SPACES.get(image.scalar(0, "b")) if image else None
            for unit in inputs[0].tables(4):  # TensorMetadata.process_units
                options = unit.table(1)
                if unit.scalar(0, "B") == NORMALIZATION_OPTIONS and options is not None:
                    found.mean, found.std = _normalisation(options.floats(0), options.floats(1))
                    break
        if outputs:
            labels = [f for f in outputs[0].tables(6) if f.scalar(2, "b") == TENSOR_AXIS_LABELS]
            label_file = labels[0].string(0) if labels else None
    except (_Malformed, struct.error):
        return None
    if label_file:
        found.classes = _zipped_labels(path, label_file)
    return found if found else None


def _zipped_labels(path: Path, name: str) -> list[str] | None:
    """Class names from the file ``name`` of the zip archive at the end of ``path``."""
    try:
        with zipfile.ZipFile(path) as zf:
            text = zf.read(name).decode("utf-8-sig")
        return parse_labels(text, f"{path}:{name}")
    except (KeyError, zipfile.BadZipFile, UnicodeDecodeError, EOFError, EdgesegError):
        return None


def parse_names(text: str, separators: str = ",\n") -> list[str] | None:
    """Class names from a metadata value: a list, a dict of indices, or separated names.

    A list is JSON or a Python literal; a dict maps indices 0..n-1 to names (as Ultralytics
    writes ``names``); a plain string is split at a separator.

    Args:
        text: The value.
        separators: Characters that separate names in a plain string (the first one present
            splits; a string without any is one name; empty names are left out); ``" "``
            splits on any white space.

    Returns:
        The names, or ``None`` when the value holds none or its dict indices are not 0..n-1.
    """
    text = text.strip()
    value: object = None
    if text[:1] in "[{(":
        for parse in (json.loads, ast.literal_eval):
            try:
                value = parse(text)
                break
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
    if isinstance(value, dict):
        try:
            index = {int(k): str(v).strip() for k, v in value.items()}
        except (TypeError, ValueError):
            return None
        if sorted(index) != list(range(len(index))):
            return None
        value = [index[i] for i in range(len(index))]
    if isinstance(value, (list, tuple)):
        names = [str(v).strip() for v in value]
    else:  # separated names: empty ones (blank lines, doubled commas) are left out
        sep = next((s for s in separators if s in text), None)
        names = [n.strip() for n in (text.split(None if sep == " " else sep) if sep else [text])]
        names = [n for n in names if n]
    return names if names and all(names) else None


def parse_numbers(text: str) -> list[float] | None:
    """Numbers from a metadata value: a JSON list, or numbers separated by commas or spaces.

    Returns:
        The numbers, or ``None`` when the value is not a list of finite numbers.
    """
    try:
        values = [float(v) for v in text.strip().strip("[]()").replace(",", " ").split()]
    except ValueError:
        return None
    return values if values and all(math.isfinite(v) for v in values) else None


def read_onnx_props(path: str | Path) -> PublisherMetadata | None:
    """Class names and normalisation from an ``.onnx`` file's ``metadata_props``.

    Args:
        path: The model file.

    Returns:
        What the properties record, or ``None`` when they record none of it.
    """
    from firmware_bridge.runtime.onnxfile import metadata_props

    try:
        props = {k.lower(): v for k, v in metadata_props(path).items()}
    except EdgesegError:
        return None
    found = PublisherMetadata("ONNX metadata_props")

    def first(keys: tuple[str, ...]) -> str | None:
        return next((props[k] for k in keys if k in props), None)

    names = first(ONNX_CLASS_KEYS)
    found.classes = parse_names(names) if names is not None else None
    mean, std = first(ONNX_MEAN_KEYS), first(ONNX_STD_KEYS)
    found.mean, found.std = _normalisation(parse_numbers(mean) if mean is not None else None,
                                           parse_numbers(std) if std is not None else None)
    return found if found else None


def read_openvino_model_info(path: str | Path) -> PublisherMetadata | None:
    """Class names, normalisation and band order from an IR ``.xml``'s ``rt_info/model_info``.

    Args:
        path: The ``.xml`` file.

    Returns:
        What ``model_info`` records, or ``None`` when it records none of it.
    """
    try:
        root = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, OSError):
        return None
    info = root.find("rt_info/model_info")
    if info is None:
        return None
    values = {child.tag: child.get("value", "") for child in info}
    found = PublisherMetadata("OpenVINO rt_info model_info")
    if "labels" in values:
        found.classes = parse_names(values["labels"], " ")

    def yes(key: str) -> bool:
        return values.get(key, "").strip().lower() in ("true", "yes", "1")

    if yes("embedded_processing"):
        found.mean, found.std = [0.0], [1.0]  # the graph normalises: pixels go in as they are
    else:
        mean, std = values.get("mean_values"), values.get("scale_values")
        found.mean, found.std = _normalisation(parse_numbers(mean) if mean is not None else None,
                                               parse_numbers(std) if std is not None else None)
        if yes("reverse_input_channels"):
            found.bands = "RGB"  # the Model API turns OpenCV's BGR into RGB for such a model
    return found if found else None


def read_publisher_metadata(path: str | Path) -> PublisherMetadata | None:
    """The publisher's metadata of a model file, by its suffix.

    Args:
        path: A ``.tflite``, ``.onnx`` or OpenVINO ``.xml`` file.

    Returns:
        What the file records, or ``None`` (nothing recorded, or another suffix).
    """
    readers = {".tflite": read_tflite_support, ".onnx": read_onnx_props,
               ".xml": read_openvino_model_info}
    reader = readers.get(Path(path).suffix.lower())
    return reader(path) if reader else None
