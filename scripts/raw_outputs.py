"""Raw model outputs on fixed tiles, and the comparison of two machines' runs.

Usage:
    python scripts/raw_outputs.py run MODEL IMAGES_DIR --out OUT.npz [edgeseg-run model options]
    python scripts/raw_outputs.py compare MASKS_A MASKS_B [--raw A.npz B.npz] [--name NAME]

``run`` cuts every image into non-overlapping tiles of the model's input size (from the top
left, whole tiles only; smaller images are left out), turns each into the model's input
tensor as ``edgeseg-run`` does (``Segmenter.preprocess``) and stores the backend's raw output
(int8 for an int8 model), one array per image. It needs only the device runtime
(``edgeseg[device]``).

``compare`` prints, for the masks two runs of ``edgeseg-run predict`` wrote (``*_mask.png``
of the same names), how many pixels agree, and for two ``run`` files how many raw values are
equal, one quantisation step apart, or further. Exit status 1 when the masks agree on fewer
than ``--min-agreement`` per cent of the pixels.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def run(args: argparse.Namespace) -> int:
    """Raw outputs of ``args.model`` on the tiles of every image in ``args.images``."""
    from firmware_bridge.commands.modelargs import load_segmenter
    from firmware_bridge.io.images import read_image

    segmenter = load_segmenter(args)
    th, tw = segmenter.tile
    raws = {}
    for path in sorted(Path(args.images).glob("*.png")):
        image = read_image(path)
        tiles = [image[y : y + th, x : x + tw]
                 for y in range(0, image.shape[0] - th + 1, th)
                 for x in range(0, image.shape[1] - tw + 1, tw)]
        if tiles:  # an image smaller than the model's input gives none
            raws[path.stem] = np.concatenate([segmenter.backend.run(segmenter.preprocess(t[None]))
                                              for t in tiles])
    if not raws:
        raise SystemExit(f"no image in {args.images} holds a whole {th}x{tw} tile")
    np.savez(args.out, **raws)
    print(f"{args.out}: {sum(r.size for r in raws.values())} raw values "
          f"({next(iter(raws.values())).dtype}) from {len(raws)} images")
    return 0


def compare_masks(a: Path, b: Path) -> tuple[int, int, int]:
    """``(images, pixels, agreeing pixels)`` of the ``*_mask.png`` files in both folders."""
    from PIL import Image

    names = sorted(p.name for p in a.glob("*_mask.png"))
    if not names or sorted(p.name for p in b.glob("*_mask.png")) != names:
        raise SystemExit(f"{a} and {b} do not hold the same masks")
    pixels = agree = 0
    for name in names:
        ma, mb = np.asarray(Image.open(a / name)), np.asarray(Image.open(b / name))
        if ma.shape != mb.shape:
            raise SystemExit(f"{name}: mask shapes differ, {ma.shape} and {mb.shape}")
        pixels += ma.size
        agree += int(np.count_nonzero(ma == mb))
    return len(names), pixels, agree


def compare_raw(a: Path, b: Path) -> str:
    """One line: how far apart the raw outputs in two ``run`` files are."""
    ra, rb = np.load(a), np.load(b)
    if sorted(ra.files) != sorted(rb.files):
        raise SystemExit(f"{a} and {b} hold different images")
    if np.issubdtype(ra[ra.files[0]].dtype, np.integer):
        d = np.concatenate([np.abs(ra[k].astype(np.int64) - rb[k].astype(np.int64)).ravel()
                            for k in ra.files])
        return (f"raw {ra[ra.files[0]].dtype} outputs: {d.size} values, {np.count_nonzero(d == 0)} "
                f"equal, {np.count_nonzero(d == 1)} one step apart, {np.count_nonzero(d > 1)} "
                f"further (max {int(d.max())})")
    d = np.concatenate([np.abs(ra[k].astype(np.float64) - rb[k]).ravel() for k in ra.files])
    return (f"raw {ra[ra.files[0]].dtype} outputs: {d.size} values, {np.count_nonzero(d == 0)} "
            f"bit-equal, max abs difference {d.max():.3g}")


def compare(args: argparse.Namespace) -> int:
    """Print the agreement of two runs; 1 when the masks agree too little."""
    images, pixels, agree = compare_masks(Path(args.masks_a), Path(args.masks_b))
    share = 100.0 * agree / pixels
    line = (f"{args.name or args.masks_b}: {images} masks, {pixels} pixels, {agree} agree "
            f"({share:.4f} %), {pixels - agree} differ")
    if args.raw:
        line += "; " + compare_raw(Path(args.raw[0]), Path(args.raw[1]))
    print(line)
    return 0 if share >= args.min_agreement else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    from firmware_bridge.commands.modelargs import add_model_args

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="raw outputs on the tiles of a folder of PNG images")
    r.add_argument("model")
    r.add_argument("images")
    r.add_argument("--out", required=True, help=".npz file to write")
    add_model_args(r, tiling=False)
    c = sub.add_parser("compare", help="agreement of two folders of masks (and raw outputs)")
    c.add_argument("masks_a")
    c.add_argument("masks_b")
    c.add_argument("--raw", nargs=2, metavar=("A_NPZ", "B_NPZ"))
    c.add_argument("--name", help="label of the printed line")
    c.add_argument("--min-agreement", type=float, default=99.0, help="per cent of pixels")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    sys.exit(run(args) if args.command == "run" else compare(args))
