"""Train a tiny model on generated scenes and export it for the device checks.

Usage: python scripts/make_tiny_models.py OUT [--crop 64] [--seed 0]

Writes into OUT:

- ``data/``: generated scenes (train and validation) with their masks and class table;
- ``run/``: a MobileUNet-0.35 trained for a few steps, then quantisation-aware fine-tuned;
- ``export/``: ``model_fp32.tflite``, ``model_qat_int8.tflite`` and the C array of the QAT
  int8 model (``model.h``, ``model.cc``), each checked against the Keras model by the export;
- ``images/``: larger generated scenes that the checks predict on (tiled);
- ``tile.png``: one tile of the model's input size, cut from the first of those scenes.

The model is small and barely trained: it is there to compare runtimes on the same bytes, not
to segment well. An existing ``OUT/export/model_qat_int8.tflite`` is kept (delete OUT to
start again).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

from edgeseg.cli import main as edgeseg
from edgeseg.data import synthetic


def make(out: Path, crop: int, seed: int) -> int:
    """Build the data, the run and the export under ``out``; 0 on success."""
    data, run, export = out / "data", out / "run", out / "export"
    images = out / "images"
    if not (export / "model_qat_int8.tflite").is_file():
        synthetic.write_dataset(data, 6, (128, 160), seed=seed, prefix="train")
        synthetic.write_dataset(data, 2, (96, 128), seed=seed + 100, prefix="val")
        common = ["--data", str(data), "--classes", str(data / "classes.csv")]
        steps = [
            ["train", *common, "--out", str(run), "--crop", str(crop), "--val-tile", str(crop),
             "--batch", "8", "--stage1-epochs", "1", "--stage2-epochs", "2",
             "--steps-per-epoch", "12", "--lr", "3e-3", "--val-pattern", "val_*",
             "--seed", str(seed), "--quiet"],
            ["qat", str(run), *common, "--epochs", "1", "--steps-per-epoch", "8",
             "--max-drop", "10", "--quiet"],
            ["export", str(run), *common, "--formats", "tflite-fp32,tflite-qat-int8,c-array",
             "--out", str(export), "--calibration", "16", "--max-miou-drop", "10"],
        ]
        for argv in steps:
            code = edgeseg(argv)
            if code != 0:
                print(f"edgeseg {argv[0]} failed ({code})", file=sys.stderr)
                return code
    images.mkdir(parents=True, exist_ok=True)
    for i, (h, w) in enumerate([(200, 240), (150, 310), (300, 420)]):
        image, _ = synthetic.generate_scene(h, w, seed + 200 + i)
        Image.fromarray(image).save(images / f"scene_{i}.png")
    first = Image.open(images / "scene_0.png")
    first.crop((17, 23, 17 + crop, 23 + crop)).save(out / "tile.png")
    print(f"models in {export}, images in {images}, tile {out / 'tile.png'}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--crop", type=int, default=64, help="training crop and input size")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    sys.exit(make(args.out, args.crop, args.seed))
