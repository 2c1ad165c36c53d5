"""Self-describing model metadata, readable on the device without TensorFlow.

Every artifact that ``export`` writes carries one JSON document (``ModelMetadata``):

* TFLite: a zip archive appended to the flatbuffer holding ``edgeseg.json`` (the
  interpreter ignores trailing bytes; ``zipfile`` finds the archive from the end).
* ONNX: ``metadata_props`` entry with key ``edgeseg``.
* OpenVINO IR: ``rt_info`` entry ``edgeseg`` in the ``.xml`` (``model.set_rt_info(json, "edgeseg")``).

Foreign models (no metadata) are served with defaults plus the user's overrides.
"""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

from firmware_bridge.errors import EdgesegError

METADATA_KEY = "edgeseg"
TFLITE_ENTRY = "edgeseg.json"
OUTPUT_KINDS = ("softmax", "logits", "sigmoid")
LAYOUTS = ("NHWC", "NCHW")


@dataclass
class ModelMetadata:
    """What a runtime needs to know to feed a segmentation model and read its output.

    Normalisation: the float input is ``(pixel * scale - mean) / std`` with ``pixel`` in the
    image's native range (0..255 for 8-bit). MobileNet preprocessing is ``mean=std=127.5``
    with ``scale=1``; a satellite model trained on reflectances might use ``scale=2e-5`` with
    ``mean`` and ``std`` in reflectance units.

    Attributes:
        classes: Class names, index order of the output channels (one name for sigmoid).
        colours: ``#RRGGBB`` per class, for overlays and colour masks.
        ignore_names: Names of the label colours that no metric counts (the class table's
            ignore rows), so that the training masks validate without the CSV.
        ignore_colours: ``#RRGGBB`` of those rows.
        mean: Per-channel (or single) mean subtracted from the scaled pixel.
        std: Per-channel (or single) divisor.
        scale: Multiplier of the pixel before ``mean`` and ``std``.
        input_size: ``(height, width)`` the model was exported at; ``None`` when dynamic.
        channels: Input bands.
        layout: ``"NHWC"`` or ``"NCHW"``.
        output: ``"softmax"``, ``"logits"`` or ``"sigmoid"``.
        threshold: Sigmoid threshold for the positive class.
        tile_size: Recommended tile edge for tiled inference (defaults to the input size).
        tile_overlap: Recommended overlap in pixels between neighbouring tiles.
        arch: Architecture name, e.g. ``"mobileunet"``.
        backbone: Encoder name, e.g. ``"mobilenetv2_035"``.
        precision: ``"fp32"``, ``"fp16"``, ``"int8"``, ...
        version: edgeseg version that wrote the artifact.
        scores: Validation scores at export (e.g. ``{"miou": 0.61}``).

    """

    classes: list[str] = field(default_factory=lambda: ["background", "foreground"])
    colours: list[str] = field(default_factory=list)
    ignore_names: list[str] = field(default_factory=list)
    ignore_colours: list[str] = field(default_factory=list)
    mean: list[float] = field(default_factory=lambda: [127.5])
    std: list[float] = field(default_factory=lambda: [127.5])
    scale: float = 1.0
    input_size: tuple[int, int] | None = None
    channels: int = 3
    layout: str = "NHWC"
    output: str = "softmax"
    threshold: float = 0.5
    tile_size: int | None = None
    tile_overlap: int = 32
    arch: str = ""
    backbone: str = ""
    precision: str = "fp32"
    version: str = ""
    scores: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise EdgesegError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.output not in OUTPUT_KINDS:
            raise EdgesegError(f"output must be one of {OUTPUT_KINDS}, got {self.output!r}")
        if self.input_size is not None:
            self.input_size = (int(self.input_size[0]), int(self.input_size[1]))

    @property
    def num_classes(self) -> int:
        """Number of classes the mask can hold (2 for a sigmoid model)."""
        return 2 if self.output == "sigmoid" and len(self.classes) == 1 else len(self.classes)

    def to_json(self) -> str:
        """Serialise to a JSON string."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelMetadata:
        """Parse a JSON string written by :meth:`to_json` (unknown keys are ignored).

        Raises:
            EdgesegError: When the text is not valid metadata.

        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EdgesegError(f"model metadata is not valid JSON: {exc}") from exc
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def tflite_with_metadata(model_bytes: bytes, meta: ModelMetadata) -> bytes:
    """Return TFLite flatbuffer bytes with the metadata appended as a zip archive.

    Args:
        model_bytes: The converter's output.
        meta: Metadata to embed.

    Returns:
        Bytes that LiteRT loads unchanged and :func:`read_metadata` reads back.

    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(TFLITE_ENTRY, meta.to_json())
    return model_bytes + buf.getvalue()


def _read_tflite(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.read(TFLITE_ENTRY).decode()
    except (zipfile.BadZipFile, KeyError):
        return None


def _read_onnx(path: Path) -> str | None:
    try:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return sess.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    except ImportError:
        pass
    try:
        import onnx
    except ImportError:
        return None
    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    return props.get(METADATA_KEY)


def _read_openvino_xml(path: Path) -> str | None:
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as exc:
        raise EdgesegError(f"{path}: not a readable OpenVINO IR .xml ({exc})") from exc
    node = root.find(f"rt_info/{METADATA_KEY}")
    return None if node is None else node.get("value")


def read_metadata(path: str | Path) -> ModelMetadata | None:
    """Read the edgeseg metadata embedded in a model file, without TensorFlow.

    Args:
        path: A ``.tflite``, ``.onnx`` or OpenVINO ``.xml`` file.

    Returns:
        The metadata, or ``None`` for a model that carries none (a foreign model).

    Raises:
        EdgesegError: When the file does not exist or the embedded metadata is corrupt.

    """
    path = Path(path)
    if not path.is_file():
        raise EdgesegError(f"{path}: no such model file")
    suffix = path.suffix.lower()
    readers = {".tflite": _read_tflite, ".onnx": _read_onnx, ".xml": _read_openvino_xml}
    reader = readers.get(suffix)
    text = reader(path) if reader else None
    return None if text is None else ModelMetadata.from_json(text)
