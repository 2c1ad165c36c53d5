"""``edgeseg export RUN --formats LIST --out DIR --data DIR``: artifacts + parity.

The workflow is :meth:`edgeseg.Run.export` (:mod:`edgeseg.exporting`); this module parses and
prints. Exit status 1 when an artifact misses its parity threshold, 2 on errors.
"""

from __future__ import annotations

import argparse
import sys

from edgeseg.exporting import TILE_CHOICES, TILE_FILE, ExportRequest
from edgeseg.run import Run
from export.formats import FORMATS
from export.parity import ParityThresholds
from firmware_bridge.cliutil import non_negative_float, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` command."""
    p = sub.add_parser("export", help="export a run to TFLite/ONNX/OpenVINO/C and check parity")
    p.add_argument("run", help="run directory from 'edgeseg train'")
    p.add_argument("--formats", default="all",
                   help=f"comma-separated: {', '.join(FORMATS)}; 'all' = the defaults")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--data", help="the run's dataset folder (calibration and parity images)")
    p.add_argument("--classes", help="class table CSV of --data (default: the run's classes)")
    p.add_argument("--val-pattern", help="validation stems (default: the run's)")
    p.add_argument("--input-size", type=positive_int,
                   help="square input size to export at (default: the run's)")
    p.add_argument("--tile", choices=TILE_CHOICES, default="run",
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
    request = ExportRequest(
        formats=args.formats, data=args.data, classes=args.classes, val_pattern=args.val_pattern,
        input_size=args.input_size, tile=args.tile, calibration=args.calibration,
        io_type=args.io_type, opset=args.opset, c_array_source=args.c_array_source,
        float_layers=tuple(n.strip() for n in args.float_layers.split(",") if n.strip()),
        stem=args.stem, thresholds=ParityThresholds(args.min_agreement / 100.0, args.max_miou_drop,
                                                    args.min_quantized_agreement / 100.0),
        parity=not args.no_parity, keep_failing=args.keep_failing, threads=args.threads)
    outcome = Run.open(args.run).export(args.out, request,
                                         log=lambda line: print(line, file=sys.stderr, flush=True))
    if outcome.parity is not None:
        print(outcome.parity.table())
        for line in outcome.parity.failures():
            print(f"parity failed: {line}", file=sys.stderr)
    if outcome.refused:
        print(f"error: {outcome.refused}", file=sys.stderr)
        return 1
    for a in outcome.artifacts:
        print(f"{a.format:<16} {a.size / 1e6:8.2f} MB  {', '.join(str(f) for f in a.files)}")
    if outcome.tile is not None:
        print(f"recommended tile {outcome.tile.tile} px, overlap {outcome.tile.overlap} px "
              f"({outcome.out / TILE_FILE})")
    return 0 if outcome.ok else 1
