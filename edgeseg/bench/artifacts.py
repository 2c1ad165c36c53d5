"""The exported artifacts a benchmark measures: found in export folders, with sizes and parity.

An export folder (``edgeseg export RUN --out DIR``) holds one main file per format, named
``<stem><suffix>`` after :data:`export.formats.FORMATS` (``model_int8.tflite``,
``model_fp32.xml`` + ``.bin``, ``model.onnx``, ``model.cc`` + ``.h``), and ``parity.json``.
The format of a file is the format with the longest matching suffix; a runtime file that
matches none (a foreign model) keeps its file name as its label.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from export.formats import FORMATS
from export.formats import format_of as row_of
from firmware_bridge.errors import EdgesegError
from firmware_bridge.runtime.backends import model_suffixes, open_backend
from firmware_bridge.runtime.metadata import read_metadata

PARITY_FILE = "parity.json"


@dataclass
class ArtifactInfo:
    """One exported model file.

    Attributes:
        label: Format name (``tflite-int8``, ``onnx``...), unique within a benchmark.
        format: Export format name, or ``""`` for a file no format names.
        path: The file a runtime opens (``.cc`` for the C array).
        files: Every file of the artifact (``.xml`` + ``.bin``, ``.cc`` + ``.h``).
        size_bytes: Bytes of all its files.
        resolution: Square input edge; ``None`` for a dynamic-size model.
        precision: From the metadata (``fp32``, ``fp16``, ``int8``, ``int8-qat``...).
        runnable: Whether a ``firmware_bridge`` backend opens it (not the C array).
    """

    label: str
    format: str
    path: Path
    files: list[Path]
    size_bytes: int
    resolution: int | None
    precision: str
    runnable: bool = True

    def to_dict(self) -> dict:
        """JSON-ready dict (paths as strings)."""
        return {"label": self.label, "format": self.format, "path": str(self.path),
                "files": [f.name for f in self.files], "size_bytes": self.size_bytes,
                "resolution": self.resolution, "precision": self.precision,
                "runnable": self.runnable}


@dataclass
class ParityEntry:
    """What ``parity.json`` says about one artifact (``miou`` 0..1, ``miou_drop`` in points)."""

    format: str
    file: str
    miou: float | None
    agreement: float | None
    miou_drop: float | None
    passed: bool | None


@dataclass
class ParityFile:
    """A folder's ``parity.json``: the Keras mIoU and one entry per artifact file."""

    path: Path
    keras_miou: float | None
    images: int
    entries: dict[str, ParityEntry] = field(default_factory=dict)
    """File name -> entry."""


def format_of(path: Path) -> str:
    """The export format of a file name (longest matching main-file ending), ``""`` when none."""
    row = row_of(path)
    return row.name if row else ""


def _describe(path: Path, fmt: str) -> tuple[int | None, str]:
    """``(square input edge or None, precision)`` from the file's metadata or its input."""
    row = FORMATS.get(fmt)
    if path.suffix not in model_suffixes():  # opened through its format row (the C array)
        with tempfile.TemporaryDirectory() as tmp:
            opened = row.runnable(path, Path(tmp)) if row and row.runnable else None
            meta = read_metadata(opened) if opened else None
        size = meta.input_size if meta else None
        return (size[0] if size and size[0] == size[1] else None), meta.precision if meta else ""
    meta = read_metadata(path)
    if meta is not None and meta.input_size is not None:
        h, w = meta.input_size
        return (h if h == w else None), meta.precision

    backend = open_backend(path)
    layout = meta.layout if meta else backend.layout
    shape = backend.input.shape
    h, w = (shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2])
    precision = meta.precision if meta else str(backend.input.dtype)
    return (int(h) if h is not None and h == w else None), precision


def find_artifacts(folders: list[Path], formats: tuple[str, ...] | None = None) -> list[ArtifactInfo]:
    """Every model file in the folders (not recursive), in the export table's order.

    Args:
        folders: Export folders.
        formats: Keep only these format names (``None``: all).

    Returns:
        The artifacts; labels are made unique by appending the input size when a format
        appears at several sizes, and the file name when it still repeats.

    Raises:
        EdgesegError: For a folder that does not exist.
    """
    order = {name: i for i, name in enumerate(FORMATS)}
    found: list[ArtifactInfo] = []
    for folder in folders:
        if not folder.is_dir():
            raise EdgesegError(f"{folder}: no such artifacts folder (make one with 'edgeseg export "
                               "RUN --out DIR', or leave --artifacts out to export into --out)")
        for path in sorted(folder.iterdir()):
            fmt = format_of(path)
            if path.name.startswith(".") or (not fmt and path.suffix not in model_suffixes()):
                continue
            if formats and fmt not in formats:
                continue
            files = [f for f in (FORMATS[fmt].files(path) if fmt else [path]) if f.is_file()]
            resolution, precision = _describe(path, fmt)
            found.append(ArtifactInfo(fmt or path.name, fmt, path, files,
                                      sum(f.stat().st_size for f in files), resolution, precision,
                                      runnable=path.suffix in model_suffixes()))
    found.sort(key=lambda a: (order.get(a.format, len(order)), a.resolution or 0, str(a.path)))
    _unique_labels(found)
    return found


def _unique_labels(artifacts: list[ArtifactInfo]) -> None:
    """Make labels unique: ``@size`` when sizes tell them apart, else the file name."""
    groups: dict[str, list[ArtifactInfo]] = {}
    for a in artifacts:
        groups.setdefault(a.label, []).append(a)
    for label, group in groups.items():
        if len(group) == 1:
            continue
        sizes = [a.resolution for a in group]
        by_size = None not in sizes and len(set(sizes)) == len(sizes)
        for a in group:
            a.label = f"{label}@{a.resolution}" if by_size else f"{label} ({a.path.name})"


def read_parity(folder: Path) -> ParityFile | None:
    """The folder's ``parity.json`` (written by ``edgeseg export``), ``None`` when absent.

    Raises:
        EdgesegError: When the file is not the JSON that export writes.
    """
    path = folder / PARITY_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        entries = {
            a["file"]: ParityEntry(a["format"], a["file"], a.get("miou"), a.get("agreement"),
                                   a.get("miou_drop"), a.get("passed"))
            for a in data.get("artifacts", [])
        }
        return ParityFile(path, data.get("keras_miou"), int(data.get("images", 0)), entries)
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise EdgesegError(f"{path}: not a parity report written by 'edgeseg export' ({exc})") from exc
