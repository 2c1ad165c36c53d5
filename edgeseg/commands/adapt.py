"""``edgeseg adapt RUN --images DIR --data DIR --out NEWRUN``: self-training on unlabelled scenes.

The work is :meth:`edgeseg.Run.adapt`; this module parses and prints.
"""

from __future__ import annotations

import argparse

from edgeseg.run import Run
from firmware_bridge.cliutil import count, non_negative_float, positive_float, positive_int, share


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``adapt`` command."""
    p = sub.add_parser(
        "adapt", help="adapt a trained run to unlabelled scenes from the deployment (self-training)",
        description="Adapt a trained run to unlabelled scenes: the run's model labels them "
                    "(confident pixels only, class by class), then fine-tunes on those "
                    "pseudo-labels and the run's labelled training crops together, in rounds "
                    "that label the scenes again with the improved model. The run's validation "
                    "images choose the best epoch. The result is a new run folder that "
                    "evaluate, qat and export take like any other.")
    p.add_argument("run", help="run directory from 'edgeseg train'")
    p.add_argument("--images", required=True,
                   help="folder of unlabelled 8-bit RGB images from the deployment")
    p.add_argument("--data", required=True,
                   help="the run's dataset folder (images/ and masks/): its training images "
                        "are mixed in, its validation images choose the best epoch")
    p.add_argument("--classes", help="class table CSV of --data (default: the run's classes)")
    p.add_argument("--out", required=True, help="new or empty folder for the adapted run")
    p.add_argument("--minutes", type=non_negative_float, default=10.0,
                   help="time budget of the whole adaptation, labelling included (default 10; "
                        "0: none, with --epochs)")
    p.add_argument("--epochs", type=positive_int,
                   help="epochs per round (default: the rounds split the time budget evenly)")
    p.add_argument("--rounds", type=positive_int, default=3,
                   help="times the images are labelled, the first by the run's model (default 3)")
    p.add_argument("--threshold", type=share, default=0.9,
                   help="confidence above which a pixel keeps its predicted class (default 0.9)")
    p.add_argument("--portion", type=share, default=0.4,
                   help="share of each class's pixels kept in round 1 whatever their confidence, "
                        "its most confident ones, so that rare classes keep pseudo-labels "
                        "(default 0.4)")
    p.add_argument("--portion-step", type=share, default=0.1,
                   help="added to --portion in each further round (default 0.1)")
    p.add_argument("--mix", type=share, default=0.5,
                   help="share of each batch's crops taken from the unlabelled images (default 0.5)")
    p.add_argument("--lr-factor", type=positive_float, default=0.2,
                   help="starting learning rates as a fraction of the run's (default 0.2)")
    p.add_argument("--steps-per-epoch", type=positive_int, help="batches per epoch (default: the run's)")
    p.add_argument("--seed", type=count, help="crop seed (default: the run's)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    p.set_defaults(func=run_adapt)


def run_adapt(args: argparse.Namespace) -> int:
    """Adapt (:meth:`edgeseg.Run.adapt`); print the validation scores before and after."""
    run = Run.open(args.run).adapt(
        args.images, args.out, data=args.data, classes=args.classes, verbose=not args.quiet,
        minutes=args.minutes or None, epochs=args.epochs, rounds=args.rounds,
        threshold=args.threshold, portion=args.portion, portion_step=args.portion_step,
        mix=args.mix, lr_factor=args.lr_factor, steps_per_epoch=args.steps_per_epoch,
        seed=args.seed)
    done, result = run.adaptation, run.result
    line = (f"adapted to {len(done.images)} images in {len(done.rounds)} rounds, {result.epochs} "
            f"epochs ({result.elapsed_s:.0f} s)")
    if done.source_miou is not None:
        line += (f"; best val mIoU {result.best_miou:.4f} at epoch {result.best_epoch} "
                 f"(the run's model: {done.source_miou:.4f})")
    print(f"{line}; model: {run.path}/model.keras")
    return 0
