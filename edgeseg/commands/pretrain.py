"""``edgeseg pretrain --images DIR --out DIR``: denoising-autoencoder pretraining of an encoder."""

from __future__ import annotations

import argparse

from edgeseg.training.pretrain import PretrainConfig, pretrain_folder
from firmware_bridge.cliutil import non_negative_float, positive_float, positive_int, share


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``pretrain`` command."""
    p = sub.add_parser(
        "pretrain", help="self-supervised encoder pretraining on unlabelled images (denoising AE)"
    )
    p.add_argument("--images", required=True, help="folder of unlabelled 8-bit RGB images")
    p.add_argument("--out", required=True, help="output folder (encoder.h5 + pretrain.json)")
    p.add_argument("--backbone", default="mobilenetv2_035")
    p.add_argument("--encoder-weights", default="none",
                   help="start from these weights (no-top .h5 file or 'imagenet'), or 'none'")
    p.add_argument("--crop", type=positive_int, default=128, help="crop edge (multiple of 32)")
    p.add_argument("--batch", type=positive_int, default=16)
    p.add_argument("--epochs", type=positive_int, default=10)
    p.add_argument("--steps-per-epoch", type=positive_int, default=100)
    p.add_argument("--lr", type=positive_float, default=1e-3)
    p.add_argument("--noise", type=non_negative_float, default=0.2,
                   help="Gaussian noise std (normalised range)")
    p.add_argument("--mask-ratio", type=share, default=0.4, help="share of patches blanked")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=positive_float, help="time budget")
    p.set_defaults(func=run_pretrain)


def run_pretrain(args: argparse.Namespace) -> int:
    """Read the images, pretrain, report where the encoder weights are."""
    config = PretrainConfig(
        backbone=args.backbone, crop=args.crop, batch=args.batch, epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch, lr=args.lr, noise=args.noise,
        mask_ratio=args.mask_ratio, seed=args.seed,
        encoder_weights=None if args.encoder_weights == "none" else args.encoder_weights,
        time_budget_s=args.minutes * 60 if args.minutes else None,
    )
    result = pretrain_folder(args.images, args.out, config)
    print(f"encoder weights: {result.encoder_path} (use --encoder-weights {args.out})")
    return 0
