"""``edgeseg train --data DIR --classes FILE --out RUN [...]``: two-stage transfer learning."""

from __future__ import annotations

import argparse
import dataclasses

from edgeseg.run import Run
from edgeseg.training.config import TrainConfig
from firmware_bridge.cliutil import count, non_negative_float, positive_float, positive_int, share
from firmware_bridge.runtime.standardise import MODES as STANDARDISE_MODES


def _defaults() -> dict:
    """The command's defaults: :class:`edgeseg.training.config.TrainConfig`'s field defaults."""
    return {f.name: f.default for f in dataclasses.fields(TrainConfig)
            if f.default is not dataclasses.MISSING}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` command."""
    d = _defaults()
    p = sub.add_parser("train", help="train a segmentation model (two-stage transfer learning)")
    p.add_argument("--data", required=True, help="dataset folder holding images/ and masks/")
    p.add_argument("--classes", required=True, help="class table CSV (name,colour,ignore)")
    p.add_argument("--out", required=True,
                   help="run folder: new or empty (or an earlier run, continued with --resume)")
    p.add_argument("--arch", default=d["arch"], help="mobileunet or deeplabv3plus")
    p.add_argument("--backbone", default=d["backbone"], help="e.g. mobilenetv2_035")
    p.add_argument("--upsampling", default=d["upsampling"],
                   help="bilinear, nearest, transpose or unpool (SegNet-style max-unpooling)")
    p.add_argument("--encoder-weights", default="none",
                   help="no-top .h5 file, 'imagenet' (Keras cache), a run or pretrain dir, or 'none'")
    p.add_argument("--val-pattern",
                   help="file stems that validate: globs, comma-separated (e.g. 'tile7_*'); default: "
                        "every 5th image by name, printed and kept in the run")
    p.add_argument("--crop", type=positive_int, default=d["crop"], help="training crop edge (multiple of 32)")
    p.add_argument("--batch", type=positive_int, default=d["batch"])
    p.add_argument("--stage1-epochs", type=count,
                   help="epochs with the encoder frozen (default: 1 with encoder weights, 0 without)")
    p.add_argument("--stage2-epochs", type=count, default=d["stage2_epochs"],
                   help="a cap on the fine-tuning epochs, which the learning-rate decay then spans "
                        "(default: none; with --minutes the decay spans the budget and the run "
                        "uses all of it, without --minutes it trains until the validation score "
                        "stops improving: the rate halves after each epoch without a better score, "
                        "--patience such epochs end it)")
    p.add_argument("--steps-per-epoch", type=positive_int, default=d["steps_per_epoch"])
    p.add_argument("--lr", type=positive_float, default=d["lr_head"], help="decoder and head learning rate")
    p.add_argument("--encoder-lr-factor", type=non_negative_float, default=d["encoder_lr_factor"],
                   help="encoder learning rate as a fraction of --lr in stage 2")
    p.add_argument("--unfreeze",
                   help="encoder part trained in stage 2: 'top' (blocks at stride 32; default with "
                        "encoder weights), 'all' (default without), or a first block, e.g. block_6")
    p.add_argument("--loss", default=d["loss"], help="e.g. ce+dice, 0.5*focal+dice")
    p.add_argument("--class-weighting", default=d["class_weighting"] or "none",
                   choices=["median", "inverse", "none"],
                   help="class weights of the loss from the training masks' pixel shares (default "
                        "none: an unweighted loss)")
    p.add_argument("--balance", type=share, default=d["balance"],
                   help="share of crops centred on a pixel of a rarely-seen class (default 0: "
                        "uniform crops; balanced crops can over-predict the rare classes on an unseen "
                        "scene)")
    p.add_argument("--no-augment", action="store_true", help="no flips, rotations or colour jitter")
    p.add_argument("--colour-jitter", type=non_negative_float, default=d["colour_jitter"],
                   help="strength of the colour jitter (1: brightness 0.1, contrast 0.2, channel "
                        "gain 0.05, gamma 0.1; 0: none)")
    p.add_argument("--scale-jitter", type=non_negative_float, default=d["scale_jitter"],
                   help="crops zoomed by a factor between 1/(1+s) and 1+s (0: none)")
    p.add_argument("--standardise", choices=STANDARDISE_MODES, default=d["standardise"],
                   help="image: normalise every image by its own band means and deviations "
                        "(training, validation and the device alike); none: fixed (default "
                        "%(default)s)")
    p.add_argument("--ema", type=share, default=d["ema"],
                   help="decay per step of the moving average of the weights that is validated "
                        "and saved (0: the raw weights)")
    p.add_argument("--val-tile", type=positive_int,
                   help="tile edge of the validation prediction and saved model (default: --crop)")
    p.add_argument("--val-images", type=count, default=d["val_images"],
                   help="validation images scored after each epoch, spread over the set (0: all); "
                        "fewer leave more of --minutes for training")
    p.add_argument("--patience", type=positive_int, default=d["patience"],
                   help="epochs without a better val mIoU that end stage 1, and stage 2 when "
                        "it has neither --minutes nor --stage2-epochs")
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--minutes", type=positive_float,
                   help="time budget for the whole run (training + validation), > 0; default: none")
    p.add_argument("--strategy", default="default", choices=["default", "mirrored", "multiworker"],
                   help="default: one device; mirrored: every GPU of this machine; multiworker: "
                        "several processes or machines described by TF_CONFIG, each running this "
                        "same command (docs/cluster.md). --batch is the global batch, split over "
                        "the replicas; --lr is not rescaled. Only the chief writes --out")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out where it stopped (every worker of a "
                        "multiworker run must see --out)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Train (:meth:`edgeseg.Run.train`), print the best validation scores."""
    run = Run.train(
        args.data, args.classes, args.out, val_pattern=args.val_pattern, minutes=args.minutes,
        resume=args.resume, strategy=args.strategy, verbose=not args.quiet,
        arch=args.arch, backbone=args.backbone, upsampling=args.upsampling, crop=args.crop,
        batch=args.batch, stage1_epochs=args.stage1_epochs, stage2_epochs=args.stage2_epochs,
        steps_per_epoch=args.steps_per_epoch, lr_head=args.lr, encoder_lr_factor=args.encoder_lr_factor,
        loss=args.loss, class_weighting=None if args.class_weighting == "none" else args.class_weighting,
        encoder_weights=args.encoder_weights, unfreeze=args.unfreeze, balance=args.balance,
        augment=not args.no_augment, colour_jitter=args.colour_jitter, scale_jitter=args.scale_jitter,
        standardise=args.standardise,
        ema=args.ema, seed=args.seed, patience=args.patience, val_tile=args.val_tile,
        val_images=args.val_images)
    result = run.result
    if not result.chief:
        print(f"done (stopped by {result.stopped}); the chief wrote the run")
        return 0
    on = f" on {result.val_images} validation images" if result.val_images else ""
    print(f"best val mIoU {result.best_miou:.4f}{on} at epoch {result.best_epoch} "
          f"({result.epochs} epochs, stopped by {result.stopped}, {result.elapsed_s:.0f} s); "
          f"model: {result.run_dir}/model.keras")
    return 0
