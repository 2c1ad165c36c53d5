"""The export formats as a table, and a thin dispatcher that writes them atomically.

Each row names a format, the file suffix its main artifact gets, the extra that installs
what it needs, the options that apply, and whether it is quantized (parity then limits the
mIoU lost instead of requiring pixel agreement). The functions live in ``export.to_*``.

Atomicity: every artifact of one call is written into a hidden staging folder inside the
output folder and moved into place only when all of them were written and passed the
caller's check (the parity check of ``edgeseg export``); a failed check, a failed or
interrupted export (exception, Ctrl-C) removes the staging folder and leaves no artifact
under its final name.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from export import to_carray, to_onnx, to_openvino, to_tflite
from export.context import ExportContext, ExportOptions, tensorflow
from firmware_bridge.errors import EdgesegError, require


def _opened_as_is(main: Path, workdir: Path) -> Path:
    """The artifact's main file is the file a runtime opens."""
    return main


@dataclass(frozen=True)
class ExportFormat:
    """One row of the format table: everything the rest of edgeseg knows about a format.

    Attributes:
        name: Format name (``--formats``).
        suffix: Ending of the main file's name (the one a user deploys).
        fn: Writes the artifact; returns its files.
        modules: Modules the conversion imports.
        extra: The package extra that installs them.
        options: :class:`~export.context.ExportOptions` fields that apply.
        quantized: Parity limits the mIoU lost instead of requiring pixel agreement.
        default: Part of ``--formats all``.
        needs_qat: Only from a QAT model.
        uses_qat: Built from the QAT model when there is one (``needs_qat`` or a choice).
        companions: Extensions of the other files of the artifact (the main file's name with
            its last extension replaced).
        runnable: ``(main file, scratch folder) -> file a firmware_bridge backend opens``
            (``None``: no backend opens it on the workstation); that file carries the
            artifact's metadata.
    """

    name: str
    suffix: str
    fn: Callable[[ExportContext, Path], list[Path]]
    modules: tuple[str, ...]
    extra: str
    options: tuple[str, ...] = ()
    quantized: bool = False
    default: bool = True
    needs_qat: bool = False
    uses_qat: bool = False
    companions: tuple[str, ...] = ()
    runnable: Callable[[Path, Path], Path] | None = _opened_as_is

    def wants_qat(self, options: ExportOptions) -> bool:
        """Whether this export needs the QAT model loaded, given the options."""
        return self.needs_qat or (self.uses_qat and options.carray_source != "ptq")

    def files(self, main: Path) -> list[Path]:
        """Every file of the artifact whose main file is ``main`` (the main file first)."""
        return [main] + [main.with_suffix(c) for c in self.companions]


_TF = ("tensorflow",)
_OV = ("tf2onnx", "onnx", "openvino")
_ORT = ("tf2onnx", "onnx", "onnxruntime")
FORMATS: dict[str, ExportFormat] = {f.name: f for f in [
    ExportFormat("tflite-fp32", "_fp32.tflite", to_tflite.export_tflite_fp32, _TF, "train"),
    ExportFormat("tflite-fp16", "_fp16.tflite", to_tflite.export_tflite_fp16, _TF, "train"),
    ExportFormat("tflite-dynamic", "_dynamic.tflite", to_tflite.export_tflite_dynamic, _TF, "train",
                 quantized=True, default=False),
    ExportFormat("tflite-int8", "_int8.tflite", to_tflite.export_tflite_int8, _TF, "train",
                 ("io_type", "calibration", "float_layers"), quantized=True),
    ExportFormat("tflite-qat-int8", "_qat_int8.tflite", to_tflite.export_tflite_qat_int8, _TF,
                 "train", ("io_type", "calibration"), quantized=True, needs_qat=True, uses_qat=True),
    ExportFormat("onnx", ".onnx", to_onnx.export_onnx, _ORT, "export", ("onnx_opset",)),
    ExportFormat("onnx-qat-int8", "_qat_int8.onnx", to_onnx.export_onnx_qat_int8, _ORT, "export",
                 ("onnx_opset", "calibration"), quantized=True, needs_qat=True, uses_qat=True),
    ExportFormat("openvino-fp32", "_fp32.xml", to_openvino.export_openvino_fp32, _OV, "export",
                 ("onnx_opset",), companions=(".bin",)),
    ExportFormat("openvino-fp16", "_fp16.xml", to_openvino.export_openvino_fp16, _OV, "export",
                 ("onnx_opset",), companions=(".bin",)),
    ExportFormat("openvino-int8", "_int8.xml", to_openvino.export_openvino_int8, (*_OV, "nncf"),
                 "export", ("onnx_opset", "calibration", "nncf_subset", "float_layers"), quantized=True,
                 companions=(".bin",)),
    ExportFormat("openvino-qat-int8", "_qat_int8.xml", to_openvino.export_openvino_qat_int8, _OV,
                 "export", ("onnx_opset", "calibration"), quantized=True, needs_qat=True,
                 uses_qat=True, companions=(".bin",)),
    ExportFormat("c-array", ".cc", to_carray.export_c_array, _TF, "train",
                 ("io_type", "carray_source"), quantized=True, default=False, uses_qat=True,
                 companions=(".h",), runnable=to_carray.runnable_tflite),
]}
"""Format name -> row; ``default`` rows make up :func:`default_formats` (``--formats all``)."""


def format_of(path: str | Path) -> ExportFormat | None:
    """The format whose main-file ending ``path`` has (the longest that matches), or ``None``."""
    name = Path(path).name
    rows = [f for f in FORMATS.values() if name.endswith(f.suffix)]
    return max(rows, key=lambda f: len(f.suffix)) if rows else None


@dataclass
class Artifact:
    """What one format wrote: its files and the time it took."""

    format: str
    files: list[Path]
    seconds: float

    @property
    def path(self) -> Path:
        """The main file (``.tflite``, ``.onnx``, ``.xml``, ``.cc``)."""
        suffix = FORMATS[self.format].suffix
        return next(f for f in self.files if f.name.endswith(suffix))

    @property
    def size(self) -> int:
        """Bytes of all its files together."""
        return sum(f.stat().st_size for f in self.files)

    def runnable(self, workdir: Path) -> Path | None:
        """The file a ``firmware_bridge`` backend opens (written into ``workdir`` if need be)."""
        opener = FORMATS[self.format].runnable
        return None if opener is None else opener(self.path, workdir)


def default_formats(with_qat: bool) -> list[str]:
    """The formats exported when none are named (QAT int8 only with a QAT model)."""
    return [f.name for f in FORMATS.values() if f.default and (with_qat or not f.needs_qat)]


def parse_formats(text: str | list[str], with_qat: bool = True) -> list[ExportFormat]:
    """Look formats up by name, comma-separated or a list.

    ``all`` stands for the default formats (``all,c-array`` adds the C array to them).

    Raises:
        EdgesegError: For an unknown name (listing the valid ones) or a repeated one.
    """
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    if "all" in names:
        i = names.index("all")
        names[i : i + 1] = [n for n in default_formats(with_qat) if n not in names]
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        raise EdgesegError(f"unknown export format {', '.join(unknown) or '(none)'}; valid formats: "
                           f"{', '.join(FORMATS)} (or 'all')")
    if len(set(names)) != len(names):
        raise EdgesegError(f"a format is named twice in {','.join(names)}")
    return [FORMATS[n] for n in names]


def check_dependencies(formats: list[ExportFormat]) -> None:
    """Import every module the formats need, before any conversion starts.

    Raises:
        MissingDependencyError: Naming the extra to install.
    """
    tensorflow()  # first, so that tf2onnx and NNCF find tf-keras selected
    for fmt in formats:
        for module in fmt.modules:
            require(module, fmt.extra)


class CheckFailed(EdgesegError):
    """The check of :func:`export_formats` refused the artifacts (none was moved into place)."""


def export_formats(ctx: ExportContext, formats: list[ExportFormat], out_dir: str | Path,
                   log: Callable[[str], None] | None = None,
                   check: Callable[[list[Artifact]], str | None] | None = None) -> list[Artifact]:
    """Write each format into ``out_dir`` (atomically, see the module docstring).

    Args:
        ctx: The models, metadata and calibration images (``workdir`` is set here).
        formats: Rows from :func:`parse_formats`.
        out_dir: Output folder (created when missing).
        log: Called with one line per finished format, and the lines it noted
            (``ctx.notes``: what its runtime runs on integer kernels).
        check: Called with the artifacts while they are still staged; returns ``None`` to
            accept them, or the reason to refuse them.

    Returns:
        One :class:`Artifact` per format, with paths inside ``out_dir``.

    Raises:
        CheckFailed: When ``check`` refused the artifacts; none is under its final name.
        EdgesegError: For a missing QAT model or dependency, or a failed conversion; the
            output folder is then unchanged.
    """
    check_dependencies(formats)
    if any(f.needs_qat for f in formats) and ctx.qat_model is None:
        names = ", ".join(f.name for f in formats if f.needs_qat)
        raise EdgesegError(f"{names} need(s) a QAT model: run 'edgeseg qat RUN' first")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".edgeseg-export-", dir=out))
    done: list[Artifact] = []
    try:
        ctx.workdir = stage / ".work"
        ctx.workdir.mkdir()
        for fmt in formats:
            t0 = time.monotonic()
            files = fmt.fn(ctx, stage / f"{ctx.options.stem}{fmt.suffix}")
            done.append(Artifact(fmt.name, files, time.monotonic() - t0))
            if log:
                log(f"{fmt.name}: {', '.join(f.name for f in files)} ({time.monotonic() - t0:.1f} s)")
                for note in ctx.notes:
                    log(f"{fmt.name}: {note}")
            ctx.notes.clear()
        refused = check(done) if check is not None else None
        if refused:
            raise CheckFailed(refused)
        for artifact in done:
            moved = []
            for f in artifact.files:
                os.replace(f, out / f.name)
                moved.append(out / f.name)
            artifact.files = moved
        return done
    finally:
        ctx.workdir = None
        ctx.cache.clear()
        ctx.notes.clear()
        shutil.rmtree(stage, ignore_errors=True)
