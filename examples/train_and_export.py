"""The workstation side in Python: train a MobileUNet, export it to int8 TFLite, score it.

Generates a small aerial-like dataset (``edgeseg.data.synthetic``), trains by two-stage transfer
learning (no pretrained weights here: pass ``encoder_weights`` a Keras-applications ``.h5`` for
ImageNet), exports a post-training int8 TFLite model calibrated on training crops, and scores
that file with the device runtime's ``Segmenter`` and scoring loop on the validation scene.

Usage: python examples/train_and_export.py OUT_DIR [--crop 64] [--steps 10]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edgeseg.data import load_split, synthetic
from edgeseg.data.calibration import calibration_crops
from edgeseg.spec import run_spec
from edgeseg.training.config import TrainConfig
from edgeseg.training.runs import load_run
from edgeseg.training.train import train
from export import ExportContext, export_formats, parse_formats
from firmware_bridge.evaluate import score
from firmware_bridge.io.classes import ClassTable
from firmware_bridge.runtime.segmenter import Segmenter


def main(argv: list[str] | None = None) -> Path:
    """Train, export, score; returns the int8 model's path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--crop", type=int, default=64, help="training crop and model input edge")
    parser.add_argument("--steps", type=int, default=10, help="batches per epoch")
    args = parser.parse_args(argv)

    data = synthetic.write_dataset(args.out / "data", 6, (160, 160), seed=0)
    table = ClassTable.load(data / "classes.csv")
    val_pattern = "scene_005"
    train_samples, val_samples = load_split(str(data), table, val_pattern)
    config = TrainConfig(num_classes=table.num_classes, class_names=list(table.names),
                         class_colours=table.hex_colours(), crop=args.crop, batch=8,
                         stage1_epochs=1, stage2_epochs=1, steps_per_epoch=args.steps,
                         val_pattern=val_pattern)
    result = train(config, train_samples, val_samples, args.out / "run", verbose=False)
    print(f"trained: val mIoU {result.best_miou:.3f} after {result.epochs} epochs")

    model, _ = load_run(args.out / "run")
    calibration = calibration_crops(data, val_pattern, args.crop, count=16)
    context = ExportContext(model, run_spec(args.out / "run"), calibration)
    (artifact,) = export_formats(context, parse_formats("tflite-int8"), args.out / "export")

    scored = score(Segmenter(artifact.path), [(s.image, s.mask) for s in val_samples])
    print(f"{artifact.path}: int8 mIoU {scored.scores.miou:.3f} on the validation scene")
    return artifact.path


if __name__ == "__main__":
    main()
