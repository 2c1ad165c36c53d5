"""``edgeseg evaluate RUN_OR_MODEL --data DIR [--classes FILE] [--val-pattern] [--json OUT]``."""

from __future__ import annotations

import argparse
import json
import sys

from edgeseg.evaluate import evaluate
from firmware_bridge.cliutil import count, positive_int
from firmware_bridge.fsutil import atomic_write_bytes
from firmware_bridge.io.classes import ClassTable


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` command."""
    p = sub.add_parser(
        "evaluate", help="per-class IoU/Dice of a model on full images (tiled, device metric core)"
    )
    p.add_argument("model", help="run directory from 'edgeseg train', or a .keras/.h5 model file")
    p.add_argument("--data", required=True, help="dataset folder holding images/ and masks/")
    p.add_argument("--classes", help="class table CSV (name,colour,ignore); default: the run's classes")
    p.add_argument("--val-pattern",
                   help="evaluate only stems matching these globs, e.g. 'tile7_*' (default: the run's "
                        "validation images; every image for a model file)")
    p.add_argument("--tile", type=positive_int,
                   help="tile edge (rebuilds a run's model at this size; default: the run's)")
    p.add_argument("--overlap", type=count, help="tile overlap in pixels (default: the run's)")
    p.add_argument("--json", help="also write the scores as JSON to this file")
    p.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    """Evaluate and print the per-class table; optionally write JSON."""
    table = ClassTable.load(args.classes) if args.classes else None
    result = evaluate(args.model, args.data, table, args.val_pattern, args.tile, args.overlap,
                      progress=sys.stderr.isatty())
    print(f"{result.images} images, tiles {result.tile}px with {result.overlap}px overlap")
    print(result.scores.table())
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(result.to_dict(), indent=2) + "\n").encode())
    return 0
