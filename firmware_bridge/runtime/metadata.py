"""Self-describing model metadata, readable on the device without TensorFlow.

Every artifact that ``export`` writes carries one JSON document (``ModelMetadata``):

* TFLite: a zip archive appended to the flatbuffer holding ``edgeseg.json`` (the
  interpreter ignores trailing bytes; ``zipfile`` finds the archive from the end). The
  metadata records the SHA-256 of the flatbuffer (``model_sha256``) and :func:`read_metadata`
  compares it, so a flipped bit anywhere in the model, weights included, is refused at load.
  LiteRT's own flatbuffer verifier only sees structural damage: a changed weight or
  quantisation value still parses, and only the digest tells it apart (a foreign ``.tflite``,
  which carries no digest, gets the structural checks alone). The zip's CRC-32 covers the
  metadata itself.
* ONNX: ``metadata_props`` entry with key ``edgeseg`` (read from the file's protobuf by
  :mod:`firmware_bridge.runtime.onnxfile`, without the ``onnx`` package).
* OpenVINO IR: ``rt_info`` entry ``edgeseg`` in the ``.xml`` (``model.set_rt_info(json, "edgeseg")``).

Foreign models (no edgeseg metadata) are served with what their publisher recorded
(:mod:`firmware_bridge.runtime.publisher`), defaults for the rest, and the user's overrides
on top (:func:`firmware_bridge.runtime.modelspec.resolve_model`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import numbers
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

from firmware_bridge.errors import EdgesegError
from firmware_bridge.runtime.standardise import MODES as STANDARDISE_MODES

METADATA_KEY = "edgeseg"
TFLITE_ENTRY = "edgeseg.json"
DEFAULT_OVERLAP = 32
"""Overlap in pixels between neighbouring tiles when neither the model nor the user sets one."""
OUTPUT_KINDS = ("softmax", "logits", "sigmoid", "multilabel", "multilabel-logits")
MULTILABEL_KINDS = ("multilabel", "multilabel-logits")
"""Independent sigmoid channels, one per class, no background channel (probabilities, logits)."""
RESIZE_MODES = ("tile", "fit", "stretch")
"""How an image of another size meets the model (:mod:`firmware_bridge.runtime.resize`)."""
RESIZE_FILTERS = ("antialias", "bilinear")
"""How ``fit`` and ``stretch`` resize the pixels (``--resize-filter``), the default first."""
RESIZE_BACKS = ("scores", "mask")
"""What ``fit`` and ``stretch`` resize back to the image (``--resize-back``), the default first."""
LAYOUTS = ("NHWC", "NCHW")
ARCHIVE_TAIL = 1 << 16
"""Bytes at the end of a ``.tflite`` searched for the metadata archive's entry name."""


def _float_list(name: str, values) -> list[float]:
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)):
        raise EdgesegError(f"{name} must be a list of numbers, got {values!r}")
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
        raise EdgesegError(f"{name} must be a list of numbers, got {list(values)!r}")
    return [float(v) for v in values]


def check_normalisation(mean, std, scale: float = 1.0) -> tuple[list[float], list[float]]:
    """Refuse a normalisation that turns every pixel into garbage.

    ``(pixel * scale - mean) / std`` is NaN or infinite everywhere for a NaN or infinite
    ``mean``, and NaN, infinite or 0 everywhere for a ``std`` of 0, NaN or infinity.

    Args:
        mean: Per-channel (or single) mean.
        std: Per-channel (or single) divisor.
        scale: Multiplier of the pixel before ``mean`` and ``std``.

    Returns:
        ``(mean, std)`` as lists of floats.

    Raises:
        EdgesegError: For a value that is not a finite number, a ``std`` not above 0, an
            empty list, or a ``scale`` that is not a positive finite number.
    """
    mean, std = _float_list("mean", mean), _float_list("std", std)
    if not mean or not all(math.isfinite(v) for v in mean):
        raise EdgesegError(f"mean must hold finite numbers, got {mean}")
    if not std or not all(math.isfinite(v) and v > 0 for v in std):
        raise EdgesegError(f"std must hold finite numbers above 0, got {std}")
    if (isinstance(scale, bool) or not isinstance(scale, numbers.Real)
            or not (math.isfinite(scale) and scale > 0)):
        raise EdgesegError(f"scale must be a positive finite number, got {scale!r}")
    return mean, std


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
        output: ``"softmax"``, ``"logits"``, ``"sigmoid"`` (one foreground channel),
            ``"multilabel"`` (one sigmoid probability per class, no background channel) or
            ``"multilabel-logits"`` (the same as logits).
        threshold: Sigmoid threshold for the positive class (every class for multilabel).
        tile_size: Recommended tile edge for tiled inference (defaults to the input size).
        tile_overlap: Recommended overlap in pixels between neighbouring tiles.
        arch: Architecture name, e.g. ``"mobileunet"``.
        backbone: Encoder name, e.g. ``"mobilenetv2_035"``.
        precision: ``"fp32"``, ``"fp16"``, ``"int8"``, ...
        version: edgeseg version that wrote the artifact.
        scores: Validation scores at export (e.g. ``{"miou": 0.61}``).
        resize: Recommended way to meet images of another size: ``"tile"``, ``"fit"`` or
            ``"stretch"`` (:mod:`firmware_bridge.runtime.resize`); ``""``: no recommendation
            (tiles).
        model_sha256: SHA-256 (hex) of the model bytes this metadata describes, the TFLite
            flatbuffer without the archive appended to it; empty where none was recorded.
        standardise: ``"none"``: ``mean`` and ``std`` as given; ``"image"``: each image (each
            streamed scene) is normalised by its own band statistics instead
            (:mod:`firmware_bridge.runtime.standardise`).

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
    tile_overlap: int = DEFAULT_OVERLAP
    arch: str = ""
    backbone: str = ""
    precision: str = "fp32"
    version: str = ""
    scores: dict[str, float] = field(default_factory=dict)
    resize: str = ""
    model_sha256: str = ""
    standardise: str = "none"

    def __post_init__(self) -> None:
        """Check the fields that every pixel depends on.

        Raises:
            EdgesegError: For an unknown layout or output kind, a normalisation that is not
                finite (or a ``std`` not above 0), or a threshold outside ``(0, 1)``.
        """
        self.mean, self.std = check_normalisation(self.mean, self.std, self.scale)
        self.scale = float(self.scale)
        if (isinstance(self.threshold, bool) or not isinstance(self.threshold, numbers.Real)
                or not 0 < self.threshold < 1):
            raise EdgesegError(f"threshold must lie between 0 and 1, got {self.threshold!r}")
        if self.layout not in LAYOUTS:
            raise EdgesegError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.output not in OUTPUT_KINDS:
            raise EdgesegError(f"output must be one of {OUTPUT_KINDS}, got {self.output!r}")
        if self.resize and self.resize not in RESIZE_MODES:
            raise EdgesegError(f"resize must be one of {RESIZE_MODES} (or empty), got {self.resize!r}")
        if self.input_size is not None:
            self.input_size = (int(self.input_size[0]), int(self.input_size[1]))
        if self.standardise not in STANDARDISE_MODES:
            raise EdgesegError(f"standardise must be one of {STANDARDISE_MODES}, "
                               f"got {self.standardise!r}")

    @property
    def num_classes(self) -> int:
        """Number of classes the mask can hold (2 for a sigmoid model, one more for multilabel)."""
        if self.output in MULTILABEL_KINDS:
            return len(self.classes) + 1
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
        if not isinstance(data, dict):
            raise EdgesegError("model metadata is not a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except (TypeError, ValueError, IndexError) as exc:
            raise EdgesegError(f"model metadata holds a value of the wrong type ({exc})") from exc


def tflite_with_metadata(model_bytes: bytes, meta: ModelMetadata) -> bytes:
    """Return TFLite flatbuffer bytes with the metadata appended as a zip archive.

    The metadata written records the SHA-256 of ``model_bytes`` (``model_sha256``), which
    :func:`read_metadata` checks.

    Args:
        model_bytes: The converter's output.
        meta: Metadata to embed.

    Returns:
        Bytes that LiteRT loads unchanged and :func:`read_metadata` reads back.

    """
    meta = dataclasses.replace(meta, model_sha256=hashlib.sha256(model_bytes).hexdigest())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(TFLITE_ENTRY, meta.to_json())
    return model_bytes + buf.getvalue()


def _has_archive_name(path: Path) -> bool:
    """True when the end of the file names the metadata entry (an archive is there)."""
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - ARCHIVE_TAIL))
        return TFLITE_ENTRY.encode() in f.read()


def _read_tflite(path: Path) -> tuple[str, int] | None:
    """The metadata JSON of a ``.tflite`` and the length of the flatbuffer before it.

    Raises:
        EdgesegError: When the file ends with an edgeseg archive that does not read back
            (a changed byte in it fails the zip's CRC-32 or its structure).
    """
    damaged = f"{path}: the edgeseg metadata at the end of the file is damaged"
    try:
        with zipfile.ZipFile(path) as zf:
            text = zf.read(TFLITE_ENTRY).decode()
            start = min(info.header_offset for info in zf.infolist())
    except (KeyError, zipfile.BadZipFile) as exc:
        if _has_archive_name(path):  # an edgeseg archive is there but does not read back
            reason = "no readable entry" if isinstance(exc, KeyError) else str(exc)
            raise EdgesegError(f"{damaged} ({reason}); copy the file again") from None
        return None  # a foreign model, or another tool's archive
    except (zlib.error, EOFError, UnicodeDecodeError) as exc:
        raise EdgesegError(f"{damaged} ({exc}); copy the file again") from None
    return text, start


def sha256_prefix(path: Path, size: int, chunk: int = 1 << 20) -> str:
    """SHA-256 (hex) of the first ``size`` bytes of a file, read in chunks.

    Args:
        path: The file.
        size: Bytes to hash from its start.
        chunk: Bytes read at a time.

    Returns:
        The hex digest.
    """
    digest = hashlib.sha256()
    with path.open("rb") as f:
        left = size
        while left > 0:
            data = f.read(min(chunk, left))
            if not data:
                break
            digest.update(data)
            left -= len(data)
    return digest.hexdigest()


def _check_digest(path: Path, meta: ModelMetadata, size: int) -> None:
    if meta.model_sha256 and sha256_prefix(path, size) != meta.model_sha256.lower():
        raise EdgesegError(
            f"{path}: the model's bytes do not match the SHA-256 recorded at export: the file "
            "was changed or damaged after export (copy it again, or export it again)"
        )


def _read_onnx(path: Path) -> str | None:
    """The ``edgeseg`` entry of the file's ``metadata_props``, read without ``onnx``."""
    from firmware_bridge.runtime.onnxfile import metadata_props

    return metadata_props(path).get(METADATA_KEY)


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
        EdgesegError: When the file does not exist, the embedded metadata is corrupt or holds
            values that make every pixel garbage, or (TFLite) the flatbuffer's SHA-256 differs
            from the one recorded at export.

    """
    path = Path(path)
    if not path.is_file():
        raise EdgesegError(f"{path}: no such model file")
    suffix = path.suffix.lower()
    size = None
    if suffix == ".tflite":
        found = _read_tflite(path)
        text, size = found if found else (None, None)
    else:
        readers = {".onnx": _read_onnx, ".xml": _read_openvino_xml}
        reader = readers.get(suffix)
        text = reader(path) if reader else None
    if text is None:
        return None
    try:
        meta = ModelMetadata.from_json(text)
    except EdgesegError as exc:
        raise EdgesegError(f"{path}: invalid edgeseg metadata: {exc}") from None
    if size is not None:
        _check_digest(path, meta, size)
    return meta
