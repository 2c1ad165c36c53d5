"""``edgeseg demo``: the whole path on generated scenes (or ``--data DIR --classes FILE``)."""

from __future__ import annotations

import argparse

from edgeseg.demo import DemoOptions, run_demo
from firmware_bridge.cliutil import positive_float, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` command."""
    d = DemoOptions()
    p = sub.add_parser("demo", help="train -> QAT -> export -> tiled device inference -> validation")
    p.add_argument("--out", default=d.out, help=f"output folder, replaced if present (default {d.out})")
    p.add_argument("--data", help="a real dataset folder instead of generated scenes")
    p.add_argument("--classes", help="class table CSV for --data")
    p.add_argument("--val-pattern", help="validation stems of --data (default: edgeseg train's split)")
    p.add_argument("--weights", help="ImageNet no-top .h5 (default: Keras's cached ImageNet weights, "
                   "else denoising pretraining on the training images; 'pretrain' forces that)")
    p.add_argument("--train-minutes", type=positive_float, default=d.train_minutes)
    p.add_argument("--scenes", type=positive_int, default=d.scenes, help="generated training scenes")
    p.add_argument("--large-size", type=positive_int, default=d.large_size, help="edge of the tiled scene")
    p.add_argument("--seed", type=int, default=d.seed)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo."""
    run_demo(DemoOptions(out=args.out, data=args.data, classes=args.classes,
                         val_pattern=args.val_pattern, weights=args.weights,
                         train_minutes=args.train_minutes, scenes=args.scenes,
                         large_size=args.large_size, seed=args.seed))
    return 0
