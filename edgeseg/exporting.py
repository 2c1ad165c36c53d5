"""Export a training run: every format, calibrated, checked for parity, with the tile chosen.

:func:`export_run` is the workflow behind ``edgeseg export`` and :meth:`edgeseg.Run.export`:
it loads the run's model (and its QAT model, when ``edgeseg qat`` made one) at the tile the
artifacts will recommend, calibrates on crops of the training images, writes each format
through the dispatcher (:func:`export.formats.export_formats`), and checks every artifact
through ``firmware_bridge`` against the Keras model on the validation images (each in a child
process, so that a runtime crash fails only that artifact). The artifacts get their final
names only when every one passed; when an int8 artifact fails, the layers that lose the most
to quantization are named (``quant_report.json``). The run-time settings (classes,
normalisation, tile, overlap) come from :func:`edgeseg.spec.run_spec`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeseg.data import load_split
from edgeseg.data.calibration import CALIBRATION_IMAGES, calibration_crops
from edgeseg.quantization import debug as quant_debug
from edgeseg.quantization.store import has_qat, load_qat
from edgeseg.spec import at_tile, run_spec, spec_table
from edgeseg.training import runs
from export import ExportContext, ExportOptions
from export.formats import FORMATS, Artifact, CheckFailed, ExportFormat, export_formats, parse_formats
from export.parity import ParityReport, ParityThresholds, check_parity, keras_reference
from export.tile_choice import TileTrial, candidates, choose_tile, sweep_tiles
from firmware_bridge.errors import EdgesegError
from firmware_bridge.io.classes import ClassTable, hex_colour
from firmware_bridge.runtime.metadata import ModelMetadata

PARITY_FILE, TILE_FILE, QUANT_REPORT = "parity.json", "tile_choice.json", "quant_report.json"
TILE_CHOICES = ("run", "auto")


@dataclass
class ExportRequest:
    """What to export and how to check it.

    Attributes:
        formats: Format names, a list or comma-separated; ``"all"``: the default formats.
        data: The run's dataset folder (calibration crops and parity images); ``None``:
            float formats only, no parity.
        classes: Class table CSV of ``data`` (``None``: the run's own classes and colours).
        val_pattern: Validation stems for parity (``None``: the run's).
        input_size: Square input edge to export at (``None``: the run's tile).
        tile: ``"run"``: the run's validation tile and overlap; ``"auto"``: measure the float
            model at 1x, 1.5x and 2x the run's tile and two overlaps on the validation
            images, and export at the fastest within 0.3 mIoU points of the best.
        calibration: Calibration crops from the training images.
        io_type: Input/output type of the int8 TFLite models.
        opset: ONNX opset.
        c_array_source: Int8 model behind the C array: ``auto``, ``qat`` or ``ptq``.
        float_layers: Keras layers the post-training int8 formats keep in float.
        stem: File name stem of the artifacts.
        thresholds: Parity limits.
        parity: Check parity (needs ``data``).
        keep_failing: Write the artifacts even when one fails parity.
        threads: CPU threads of the runtimes in the parity check.
    """

    formats: str | list[str] = "all"
    data: str | Path | None = None
    classes: str | Path | None = None
    val_pattern: str | None = None
    input_size: int | None = None
    tile: str = "run"
    calibration: int = CALIBRATION_IMAGES
    io_type: str = "int8"
    opset: int = 17
    c_array_source: str = "auto"
    float_layers: tuple[str, ...] = ()
    stem: str = "model"
    thresholds: ParityThresholds = field(default_factory=ParityThresholds)
    parity: bool = True
    keep_failing: bool = False
    threads: int | None = None


@dataclass
class ExportOutcome:
    """What :func:`export_run` wrote and measured.

    Attributes:
        out: The output folder.
        artifacts: One per format, with their final paths (empty when parity refused them).
        parity: The parity report (``None`` without a check).
        tile: The chosen tile with ``tile="auto"``.
        trials: Every tile candidate measured.
        refused: Why no artifact was written (a failed parity), else ``None``.
    """

    out: Path
    artifacts: list[Artifact] = field(default_factory=list)
    parity: ParityReport | None = None
    tile: TileTrial | None = None
    trials: list[TileTrial] = field(default_factory=list)
    refused: str | None = None

    @property
    def ok(self) -> bool:
        """Every artifact written and within its parity limits."""
        return self.refused is None and (self.parity is None or self.parity.ok)

    def artifact(self, fmt: str) -> Artifact:
        """The artifact of one format.

        Raises:
            EdgesegError: When that format was not written.
        """
        for a in self.artifacts:
            if a.format == fmt:
                return a
        raise EdgesegError(f"no {fmt} artifact in {self.out} (written: "
                           f"{', '.join(a.format for a in self.artifacts) or 'none'})")


def _check_request(run: Path, request: ExportRequest, with_qat: bool) -> list[ExportFormat]:
    """Refuse a bad request before any model loads; return the format rows."""
    formats = parse_formats(request.formats, with_qat=with_qat)
    if request.tile not in TILE_CHOICES:
        raise EdgesegError(f"tile must be one of {', '.join(TILE_CHOICES)}, got {request.tile!r}")
    if request.data is None and request.parity:
        raise EdgesegError("parity needs validation images: pass --data DIR (or --no-parity)")
    if request.classes is not None and request.data is None:
        raise EdgesegError("--classes describes the masks of --data: pass --data too")
    if request.classes is not None:
        ClassTable.load(request.classes)  # a broken table fails before the model loads
    if request.float_layers and not any("float_layers" in f.options for f in formats):
        raise EdgesegError("--float-layers applies to the post-training formats tflite-int8 and "
                           "openvino-int8 (a QAT model quantizes every layer)")
    if request.tile == "auto" and request.input_size:
        raise EdgesegError("--tile auto chooses the input size: leave --input-size out")
    if request.tile == "auto" and request.data is None:
        raise EdgesegError("--tile auto measures the candidates on the validation images: pass --data DIR")
    return formats


def export_run(run_dir, out, request: ExportRequest | None = None,
               log: Callable[[str], None] | None = None) -> ExportOutcome:
    """Export a run (see the module docstring).

    Args:
        run_dir: Run folder from ``edgeseg train``.
        out: Output folder (created when missing; files of other names are left alone).
        request: Formats, data, tile, thresholds (``None``: the defaults, no data: float
            formats without parity need ``ExportRequest(parity=False)``).
        log: Progress lines (conversion, parity, tile choice).

    Returns:
        The outcome; ``outcome.ok`` is false when an artifact missed its parity limits.

    Raises:
        EdgesegError: For a bad request, a run folder without a model, a missing QAT model,
            dependency or image, or a failed conversion (the output folder is then unchanged).
    """
    req = request or ExportRequest()
    say = log or (lambda line: None)
    run = Path(run_dir)
    if not runs.is_run_dir(run):
        raise EdgesegError(f"{run}: not an edgeseg run directory (needs the {runs.CONFIG} and "
                           f"{runs.MODEL} that 'edgeseg train' writes)")
    with_qat = has_qat(run)
    formats = _check_request(run, req, with_qat)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EdgesegError(f"{out}: exists and is not a folder: pass a folder to --out")
    spec = run_spec(run)
    config = runs.load_config(run)
    table = ClassTable.load(req.classes) if req.classes else spec_table(spec)
    val_pattern = req.val_pattern or config.val_pattern
    outcome = ExportOutcome(out)
    if req.tile == "auto":
        outcome.tile, outcome.trials = choose_run_tile(run, spec, req.data, table, val_pattern, say)
        spec = at_tile(spec, outcome.tile.tile, outcome.tile.overlap)
    elif req.input_size:
        spec = at_tile(spec, req.input_size)
    edge = spec.tile_size
    model, _ = runs.load_run(run, (edge, edge))
    options = ExportOptions(stem=req.stem, io_type=req.io_type, onnx_opset=req.opset,
                            carray_source=req.c_array_source, float_layers=tuple(req.float_layers))
    qat = (load_qat(run, config, (edge, edge))
           if with_qat and any(f.wants_qat(options) for f in formats) else None)
    spec = _with_ignore_rows(spec, table)
    calib = (calibration_crops(Path(req.data), val_pattern or "", edge, count=req.calibration,
                               standardise=config.per_image)
             if req.data else np.zeros((0, edge, edge, 3), np.float32))
    ctx = ExportContext(model, spec, calib, qat, options)

    def check(staged: list[Artifact]) -> str | None:
        report = parity_report(model, spec, staged, req.data, table, val_pattern, req.thresholds,
                               req.threads, say)
        outcome.parity = report
        report.write(out / PARITY_FILE)
        if report.ok:
            return None
        explain_int8_loss(report, model, qat, calib, out, say)
        if req.keep_failing:
            return None
        return (f"{len(report.failures())} artifact(s) failed parity; none was written "
                f"(the report is {out / PARITY_FILE}; --keep-failing writes them anyway)")

    try:
        outcome.artifacts = export_formats(ctx, formats, out, log=say,
                                           check=check if req.parity else None)
    except CheckFailed as exc:
        outcome.refused = str(exc)
        return outcome
    if outcome.tile is not None:
        runs.write_json(out / TILE_FILE, {
            "chosen": outcome.tile.to_dict(), "trials": [t.to_dict() for t in outcome.trials],
            "measured_with": "the float Keras model, TensorFlow on this machine"})
    return outcome


def _with_ignore_rows(spec: ModelMetadata, table: ClassTable) -> ModelMetadata:
    """The spec with the class table's ignore rows when the run kept none."""
    if spec.ignore_colours or not table.ignore_colours:
        return spec
    return dataclasses.replace(spec, ignore_names=list(table.ignore_names),
                               ignore_colours=[hex_colour(c) for c in table.ignore_colours])


def validation_samples(data, table: ClassTable, val_pattern: str | None) -> list:
    """The validation images of ``data`` (full images with masks).

    Raises:
        EdgesegError: When none match.
    """
    _, val = load_split(str(data), table, val_pattern, need_train=False)
    if not val:
        raise EdgesegError(f"no validation images match {val_pattern!r} in {data}")
    return val


def choose_run_tile(run: Path, spec: ModelMetadata, data, table: ClassTable, val_pattern: str | None,
                    log: Callable[[str], None]) -> tuple[TileTrial, list[TileTrial]]:
    """Measure the tile candidates on the validation images; return ``(chosen, every trial)``."""
    val = validation_samples(data, table, val_pattern)
    log(f"choosing the tile on {len(val)} validation images (float model)")
    trials = sweep_tiles(lambda e: runs.load_run(run, (e, e))[0], spec, [v.image for v in val],
                         [v.mask for v in val], candidates(int(spec.tile_size)), log=log)
    return choose_tile(trials), trials


def parity_report(model, spec: ModelMetadata, artifacts: list[Artifact], data, table: ClassTable,
                  val_pattern: str | None, thresholds: ParityThresholds, threads: int | None,
                  log: Callable[[str], None]) -> ParityReport:
    """Keras reference masks on the validation images, then each artifact's parity."""
    val = validation_samples(data, table, val_pattern)
    images, truths = [s.image for s in val], [s.mask for s in val]
    reference, keras_miou = keras_reference(model, spec, images, truths)
    return check_parity(artifacts, images, truths, reference, keras_miou, thresholds, threads, log=log)


def explain_int8_loss(report: ParityReport, model, qat, calib: np.ndarray, out: Path,
                      log: Callable[[str], None]) -> None:
    """Name the layers that lose the most when a quantized artifact failed its parity.

    QAT-based artifacts are explained by the QAT model; the post-training ones by a
    range-calibrated quantized twin of the float model
    (:func:`edgeseg.quantization.debug.simulated_int8`). Writes ``quant_report.json``.
    """
    failed = [r.format for r in report.rows if not r.passed and not r.error and FORMATS[r.format].quantized]
    if not failed or len(calib) == 0:
        return
    probe = calib[:8]
    found = {}
    if qat is not None and any(FORMATS[f].uses_qat for f in failed):
        found["qat"] = quant_debug.layer_errors(model, qat, probe)
    if any(not FORMATS[f].uses_qat for f in failed):
        found["post-training"] = quant_debug.layer_errors(
            model, quant_debug.simulated_int8(model, calib[:32]), probe)
    for route, rep in found.items():
        log(f"\n{route} int8: {rep.text()}")
    log("to keep the worst layers in float (CPUs and GPUs, not integer-only NPUs): edgeseg export "
        "RUN --formats tflite-int8,openvino-int8 --float-layers NAME,NAME ...")
    runs.write_json(out / QUANT_REPORT, {"failed": failed, **{k: v.to_dict() for k, v in found.items()}})


def read_parity(out) -> dict:
    """The ``parity.json`` an export wrote into ``out``."""
    return json.loads((Path(out) / PARITY_FILE).read_text())
