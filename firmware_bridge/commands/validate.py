"""``edgeseg-run validate MODEL --data DIR``: Dice/IoU of a model on the device itself."""

from __future__ import annotations

import argparse

from firmware_bridge.commands.modelargs import add_model_args


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``validate`` command."""
    p = sub.add_parser(
        "validate", help="per-class IoU, Dice, precision, recall on images/ + masks/ (tiled)"
    )
    p.add_argument("model", help=".tflite, .xml (OpenVINO IR) or .onnx model")
    p.add_argument("--data", required=True, help="dataset folder holding images/ and masks/")
    p.add_argument("--json", help="write the scores and confusion matrix to this JSON file")
    p.add_argument("--unknown-to-ignore", action="store_true",
                   help="treat mask colours/values missing from the class table as ignore")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_args(p)
    p.set_defaults(func=run_validate)


def _table(args: argparse.Namespace, seg):
    from pathlib import Path

    from firmware_bridge.io.classes import ClassTable
    from firmware_bridge.io.raster import class_table

    if args.class_names and Path(args.class_names).suffix.lower() == ".csv":
        table = ClassTable.load(args.class_names)
        if getattr(seg, "multilabel", False) and table.num_classes == seg.num_classes - 1:
            # one row per channel: label 0 (none) goes first, without a colour
            table = ClassTable([seg.class_names[0], *table.names], [None, *table.colours],
                               table.ignore_colours, table.ignore_names)
        return table
    return class_table(seg)


def run_validate(args: argparse.Namespace) -> int:
    """Validate; prints the score table, returns 0 (1 when some pairs were unusable)."""
    import json
    import sys

    from firmware_bridge.commands.modelargs import load_segmenter
    from firmware_bridge.errors import EdgesegError
    from firmware_bridge.evaluate import validate_folder
    from firmware_bridge.fsutil import atomic_write_bytes, check_output_file
    from firmware_bridge.io.pairs import find_pairs

    if args.json:
        check_output_file(args.json, "--json")  # before the work, not after it
    pairing = find_pairs(args.data)
    for problem in pairing.problems:
        print(f"warning: {problem}", file=sys.stderr)
    if not pairing.pairs:
        raise EdgesegError(f"{args.data}: no image/mask pairs to validate on")
    seg = load_segmenter(args)
    show = not args.quiet and sys.stderr.isatty()
    scored, _ = validate_folder(seg, pairing, _table(args, seg), args.unknown_to_ignore, show,
                                args.bands)
    for note in scored.notes:
        print(note, file=sys.stderr)
    scores = scored.scores
    print(scores.table())
    if scored.nodata:
        print(f"note: {scored.nodata} pixels without data in the images (NaN, infinite or the "
              "nodata value) are left out of the scores", file=sys.stderr)
    if args.json:
        report = {"model": str(args.model), "backend": seg.backend.name, "data": str(args.data),
                  "images": len(pairing.pairs), "tile": list(seg.tile), "overlap": seg.overlap,
                  "problems": pairing.problems, "nodata_pixels": scored.nodata, **scores.to_dict()}
        atomic_write_bytes(args.json, (json.dumps(report, indent=2) + "\n").encode())
    return 1 if pairing.problems else 0
