"""``edgeseg export RUN --formats LIST --out DIR --data DIR --classes FILE``: artifacts + parity.

Exports the run's model (and its QAT model, when ``edgeseg qat`` made one) in each format,
calibrated on crops of the training images, then checks every artifact through
``firmware_bridge`` against the Keras model on the validation images (``parity.json`` and a
table), each in a child process so that a runtime crash fails only that artifact. The
artifacts get their final names only when every one passed. When an int8 artifact fails,
the layers that lose the most to quantization are named (``quant_report.json``). Exit status
1 when an artifact misses its parity threshold, 2 on errors.
"""

from __future__ import annotations

import argparse

from export.formats import FORMATS
from firmware_bridge.cliutil import non_negative_float, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` command."""
    p = sub.add_parser("export", help="export a run to TFLite/ONNX/OpenVINO/C and check parity")
    p.add_argument("run", help="run directory from 'edgeseg train'")
    p.add_argument("--formats", default="all",
                   help=f"comma-separated: {', '.join(FORMATS)}; 'all' = the defaults")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--data", help="the run's dataset folder (calibration and parity images)")
    p.add_argument("--classes", help="class table CSV (with --data)")
    p.add_argument("--val-pattern", help="validation stems (default: the run's)")
    p.add_argument("--input-size", type=positive_int,
                   help="square input size to export at (default: the run's)")
    p.add_argument("--tile", choices=["run", "auto"], default="run",
                   help="tile recommended in the artifacts' metadata, which edgeseg-run predict uses: "
                        "'run': the run's validation tile and overlap; 'auto': the float model "
                        "measured on the validation images at 1x, 1.5x and 2x the run's tile and "
                        "two overlaps, the fastest within 0.3 mIoU points of the best (exported at "
                        "that input size; the table goes to tile_choice.json)")
    p.add_argument("--calibration", type=positive_int, default=64,
                   help="calibration crops from training images")
    p.add_argument("--io-type", default="int8", choices=["int8", "uint8", "float"],
                   help="input/output type of the int8 TFLite models")
    p.add_argument("--opset", type=positive_int, default=17, help="ONNX opset")
    p.add_argument("--c-array-source", default="auto", choices=["auto", "qat", "ptq"],
                   help="int8 model behind the C array (auto: the QAT one when there is one)")
    p.add_argument("--float-layers", default="",
                   help="comma-separated Keras layers kept in float by tflite-int8 and openvino-int8 "
                        "(the worst layers of a failed int8 parity); for CPUs and GPUs, not for "
                        "integer-only NPUs")
    p.add_argument("--stem", default="model", help="file name stem of the artifacts")
    p.add_argument("--min-agreement", type=non_negative_float, default=99.5,
                   help="float formats: minimum %% of pixels agreeing with Keras")
    p.add_argument("--max-miou-drop", type=non_negative_float, default=3.0,
                   help="quantized formats: maximum mIoU points lost against Keras")
    p.add_argument("--min-quantized-agreement", type=non_negative_float, default=90.0,
                   help="quantized formats: minimum %% of pixels agreeing with Keras")
    p.add_argument("--no-parity", action="store_true", help="skip the parity check")
    p.add_argument("--keep-failing", action="store_true",
                   help="write the artifacts even when one fails parity (exit status still 1; "
                        "parity.json says which failed), e.g. to benchmark them")
    p.add_argument("--threads", type=positive_int, help="CPU threads of the runtimes in the parity check")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    """Export, check parity, print the table; 1 when parity fails."""
    import dataclasses
    import sys
    from pathlib import Path

    from edgeseg.quantization.store import has_qat, load_qat
    from edgeseg.training.runs import CONFIG, MODEL, is_run_dir, load_run, run_metadata
    from export import ExportContext, ExportOptions, export_formats, parse_formats
    from export.formats import CheckFailed
    from firmware_bridge.errors import EdgesegError
    from firmware_bridge.io.classes import ClassTable, hex_colour

    run = Path(args.run)
    if not is_run_dir(run):
        raise EdgesegError(f"{run}: not a run folder of 'edgeseg train' (needs {CONFIG} and {MODEL})")
    with_qat = has_qat(run)
    formats = parse_formats(args.formats, with_qat=with_qat)  # a bad name fails before loading
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise EdgesegError(f"{out_dir}: exists and is not a folder: pass a folder to --out")
    if args.data is None and not args.no_parity:
        raise EdgesegError("parity needs validation images: pass --data DIR --classes FILE "
                           "(or --no-parity)")
    if (args.data is None) != (args.classes is None):
        raise EdgesegError("--data and --classes go together")
    if args.classes:
        ClassTable.load(args.classes)  # a broken table fails before the model loads
    float_layers = tuple(n.strip() for n in args.float_layers.split(",") if n.strip())
    if float_layers and not any("float_layers" in f.options for f in formats):
        raise EdgesegError("--float-layers applies to the post-training formats tflite-int8 and "
                           "openvino-int8 (a QAT model quantizes every layer)")
    size = (args.input_size, args.input_size) if args.input_size else None
    choice, trials = _choose_tile(args, run) if args.tile == "auto" else (None, [])
    if choice is not None:
        size = (choice.tile, choice.tile)
    model, config = load_run(run, size)
    edge = int(model.input_shape[1])
    wants_qat = any(f.needs_qat or (f.name == "c-array" and args.c_array_source != "ptq")
                    for f in formats)
    qat = load_qat(run, config, model.input_shape[1:3]) if with_qat and wants_qat else None
    meta = run_metadata(run)
    if args.classes and not meta.ignore_colours:  # a run trained before ignore rows were kept
        table = ClassTable.load(args.classes)
        meta = dataclasses.replace(meta, ignore_names=list(table.ignore_names),
                                   ignore_colours=[hex_colour(c) for c in table.ignore_colours])
    if size:
        meta = dataclasses.replace(meta, tile_size=edge)
    if choice is not None:
        meta = dataclasses.replace(meta, tile_overlap=choice.overlap)
    val_pattern = args.val_pattern or config.val_pattern
    calib = _calibration(args, val_pattern, edge) if args.data else _no_images(edge)
    ctx = ExportContext(model, meta, calib, qat, ExportOptions(
        stem=args.stem, io_type=args.io_type, onnx_opset=args.opset,
        carray_source=args.c_array_source, float_layers=float_layers))
    failed: list[str] = []

    def check(staged) -> str | None:
        report = _parity(args, model, meta, staged, val_pattern)
        out = Path(args.out)
        report.write(out / "parity.json")
        print(report.table())
        for line in report.failures():
            print(f"parity failed: {line}", file=sys.stderr)
        if report.ok:
            return None
        _explain_int8_loss(report, model, qat, calib, out)
        failed.extend(report.failures())
        if args.keep_failing:
            return None
        return (f"{len(report.failures())} artifact(s) failed parity; none was written "
                f"(the report is {out / 'parity.json'}; --keep-failing writes them anyway)")

    try:
        artifacts = export_formats(ctx, formats, args.out, log=lambda s: print(s, file=sys.stderr),
                                   check=None if args.no_parity else check)
    except CheckFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for a in artifacts:
        print(f"{a.format:<16} {a.size / 1e6:8.2f} MB  {', '.join(str(f) for f in a.files)}")
    if choice is not None:
        from edgeseg.training.runs import write_json

        write_json(Path(args.out) / "tile_choice.json",
                   {"chosen": choice.to_dict(), "trials": [t.to_dict() for t in trials],
                    "measured_with": "the float Keras model, TensorFlow on this machine"})
        print(f"recommended tile {choice.tile} px, overlap {choice.overlap} px "
              f"({Path(args.out) / 'tile_choice.json'})")
    return 1 if failed else 0


def _choose_tile(args, run):
    """Measure the tile candidates on the validation images; return ``(chosen, every trial)``."""
    import sys

    from edgeseg.data import load_split
    from edgeseg.training.runs import load_run, run_metadata
    from export.tile_choice import candidates, choose_tile, sweep_tiles
    from firmware_bridge.errors import EdgesegError
    from firmware_bridge.io.classes import ClassTable

    if args.input_size:
        raise EdgesegError("--tile auto chooses the input size: leave --input-size out")
    if not args.data:
        raise EdgesegError("--tile auto measures the candidates on the validation images: "
                           "pass --data DIR --classes FILE")
    _, config = load_run(run)
    _, val = load_split(args.data, ClassTable.load(args.classes), args.val_pattern or config.val_pattern,
                        need_train=False)
    if not val:
        raise EdgesegError(f"no validation images in {args.data} to choose the tile on")
    print(f"choosing the tile on {len(val)} validation images (float model)", file=sys.stderr)
    trials = sweep_tiles(lambda e: load_run(run, (e, e))[0], run_metadata(run),
                                   [v.image for v in val], [v.mask for v in val],
                                   candidates(int(config.val_tile)),
                                   log=lambda line: print(line, file=sys.stderr, flush=True))
    return choose_tile(trials), trials


def _explain_int8_loss(report, model, qat, calib, out) -> None:
    """Name the layers that lose the most when a quantized artifact failed its parity.

    QAT-based artifacts are explained by the QAT model; the post-training ones by a
    range-calibrated quantized twin of the float model (:func:`edgeseg.quantization.debug.simulated_int8`).
    """
    import json
    import sys

    from edgeseg.quantization import debug as quant_debug
    from export.formats import FORMATS

    failed = [r.format for r in report.rows if not r.passed and not r.error
              and FORMATS[r.format].quantized]
    if not failed or len(calib) == 0:
        return
    probe = calib[:8]
    found = {}
    if qat is not None and any(FORMATS[f].needs_qat or f == "c-array" for f in failed):
        found["qat"] = quant_debug.layer_errors(model, qat, probe)
    if any(not FORMATS[f].needs_qat for f in failed):
        found["post-training"] = quant_debug.layer_errors(
            model, quant_debug.simulated_int8(model, calib[:32]), probe)
    for route, rep in found.items():
        print(f"\n{route} int8: {rep.text()}", file=sys.stderr)
    print("to keep the worst layers in float (CPUs and GPUs, not integer-only NPUs): edgeseg export "
          "RUN --formats tflite-int8,openvino-int8 --float-layers NAME,NAME ...", file=sys.stderr)
    (out / "quant_report.json").write_text(json.dumps(
        {"failed": failed, **{k: v.to_dict() for k, v in found.items()}}, indent=2))


def _no_images(edge: int):
    import numpy as np

    return np.zeros((0, edge, edge, 3), np.float32)


def _calibration(args, val_pattern: str | None, edge: int):
    """Normalised crops of the training images (the validation stems left out)."""
    from pathlib import Path

    from edgeseg.data.calibration import calibration_crops

    return calibration_crops(Path(args.data), Path(args.classes), val_pattern or "", edge,
                             count=args.calibration)


def _parity(args, model, meta, artifacts, val_pattern):
    """Keras reference masks on the validation images, then each artifact's parity."""
    import sys

    from edgeseg.data import load_split
    from export.parity import ParityThresholds, check_parity, keras_reference
    from firmware_bridge.errors import EdgesegError
    from firmware_bridge.io.classes import ClassTable

    table = ClassTable.load(args.classes)
    _, val = load_split(args.data, table, val_pattern, need_train=False)
    if not val:
        raise EdgesegError(f"no validation images match {val_pattern!r} in {args.data}")
    images, truths = [s.image for s in val], [s.mask for s in val]
    reference, keras_miou = keras_reference(model, meta, images, truths)
    thresholds = ParityThresholds(args.min_agreement / 100.0, args.max_miou_drop,
                                  args.min_quantized_agreement / 100.0)
    return check_parity(artifacts, images, truths, reference, keras_miou, thresholds, args.threads,
                        log=lambda line: print(line, file=sys.stderr, flush=True))
