"""``edgeseg qat RUN --data DIR --classes FILE [--epochs N]``: quantization-aware fine-tuning.

The work is :meth:`edgeseg.Run.qat`; this module parses and prints.
``edgeseg export RUN --formats tflite-qat-int8`` converts the result.

The activation ranges start from the float model's (as a post-training int8 calibration sets
them), so the QAT model's epoch 0 is what post-training int8 gives, and the best epoch is
kept: QAT never ends worse than that start. When it still loses more than ``--max-drop``
mIoU points against the float model, the command says so, names the layers that lose the
most to quantization (``qat.json`` keeps the whole list) and exits 1; the QAT weights are
still written, for a user who accepts the loss.
"""

from __future__ import annotations

import argparse
import sys

from edgeseg.quantization.run import QatOptions
from edgeseg.run import Run
from firmware_bridge.cliutil import count, non_negative_float, positive_float, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``qat`` command."""
    p = sub.add_parser(
        "qat", help="quantization-aware fine-tuning of a trained run (for int8 export)",
        description="Quantization-aware fine-tuning of a trained run, in one process on one "
                    "device: models under quantization-aware training give results that depend "
                    "on the replica count under tf.distribute "
                    "(github.com/tensorflow/model-optimization/issues/1068). A run trained "
                    "with --strategy mirrored or multiworker is fine-tuned here unchanged.")
    p.add_argument("run", help="run directory from 'edgeseg train'")
    p.add_argument("--data", required=True, help="the run's dataset folder (images/ and masks/)")
    p.add_argument("--classes", required=True, help="class table CSV (name,colour,ignore)")
    p.add_argument("--epochs", type=count, default=2, help="QAT epochs (default 2)")
    p.add_argument("--steps-per-epoch", type=positive_int, help="batches per epoch (default: the run's)")
    p.add_argument("--batch", type=positive_int, help="crops per batch (default: the run's)")
    p.add_argument("--lr", type=positive_float, default=1e-4, help="Adam learning rate (cosine decay)")
    p.add_argument("--max-drop", type=non_negative_float, default=1.0,
                   help="mIoU points the QAT model may lose against the float model before the "
                        "command fails and names the worst layers (default 1)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    p.set_defaults(func=run_qat)


def run_qat(args: argparse.Namespace) -> int:
    """Fine-tune (:meth:`edgeseg.Run.qat`); print float vs QAT mIoU."""
    def show(row: dict) -> None:
        if not args.quiet:
            loss = "ranges calibrated" if row["loss"] is None else f"loss {row['loss']:.4f}"
            miou = row["val_miou"] if row["val_miou"] is not None else float("nan")
            print(f"QAT epoch {row['epoch']}/{args.epochs}: {loss}, val mIoU {miou:.4f}", flush=True)

    options = QatOptions(args.epochs, args.steps_per_epoch, args.batch, args.lr, args.max_drop)
    result = Run.open(args.run).qat(args.data, args.classes, options, on_epoch_end=show)
    line = f"QAT model: {result.folder}"
    if result.qat_miou is not None:
        line += f"; val mIoU {result.qat_miou:.4f}"
    if result.drop is not None:
        line += f" (float {result.float_miou:.4f}, {-result.drop:+.2f} points)"
    print(line)
    if result.passed:
        return 0
    print(f"error: the QAT model loses {result.drop:.2f} mIoU points against the float model (more "
          f"than --max-drop {args.max_drop:g}), and that is its best epoch (epoch 0 is what "
          f"post-training int8 gives).\n{result.report.text()}\nThe first layers listed lose the "
          "most; a range stretched by outliers, or a signal much smaller than its tensor's range, "
          "is the usual cause. Train the float model longer or from better weights, try more "
          "QAT epochs, or accept the loss (the weights are written).", file=sys.stderr)
    return 1
