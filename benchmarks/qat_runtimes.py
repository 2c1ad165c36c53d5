"""The same QAT int8 model on every runtime: mIoU and pixel agreement with its TFLite artifact.

Runs every model file of an export folder through ``firmware_bridge``'s ``Segmenter`` (each
artifact's own metadata: tile, overlap, normalisation) over the images of a dataset folder that
match a pattern, and prints, per artifact, its mIoU, its difference to the TFLite QAT int8
artifact's, and the share of pixels whose class equals that artifact's, with the machine's CPU
(model name, cores, ISA flags) and the runtimes' versions.

Usage: ``.venv/bin/python benchmarks/qat_runtimes.py EXPORT_DIR DATA_DIR --classes CSV
[--pattern 'tile7_*'] [--reference model_qat_int8.tflite] [--threads 2]``.
"""

from __future__ import annotations

import argparse
from importlib.metadata import version
from pathlib import Path

from machine import cpu

from edgeseg.data import load_split
from export.formats import format_of
from firmware_bridge.evaluate import score
from firmware_bridge.io.classes import ClassTable
from firmware_bridge.runtime.backends import model_suffixes
from firmware_bridge.runtime.segmenter import Segmenter, SegmenterOptions


def main(argv: list[str] | None = None) -> None:
    """Score every artifact; print the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path, help="export folder")
    parser.add_argument("data", type=Path, help="dataset folder (images/ and masks/)")
    parser.add_argument("--classes", required=True, help="class table CSV")
    parser.add_argument("--pattern", default="tile7_*", help="images to score")
    parser.add_argument("--reference", default="model_qat_int8.tflite", help="artifact to agree with")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    _, samples = load_split(str(args.data), ClassTable.load(args.classes), args.pattern, need_train=False)
    files = sorted(p for p in args.export.iterdir()
                   if p.suffix in model_suffixes() and not p.name.startswith("."))
    files.sort(key=lambda p: p.name != args.reference)
    masks: dict[str, list] = {}
    rows = []
    for path in files:
        seg = Segmenter(path, options=SegmenterOptions(threads=args.threads))
        reference = masks.get(args.reference)
        scored = score(seg, ((s.image, s.mask) for s in samples), reference=reference, keep_masks=True)
        masks[path.name] = scored.masks
        row = format_of(path)
        rows.append((row.name if row else path.name, path.name, scored.scores.miou, scored.agreement))
    base = rows[0][2]
    print(f"{len(samples)} images matching {args.pattern!r} in {args.data}; {cpu()}; onnxruntime "
          f"{version('onnxruntime')}, openvino {version('openvino')}, ai-edge-litert "
          f"{version('ai-edge-litert')}\n")
    print(f"| format | file | mIoU | against {args.reference} | pixels agreeing with it |")
    print("|---|---|---|---|---|")
    for fmt, name, miou, agreement in rows:
        agree = "-" if agreement is None else f"{100 * agreement:.2f} %"
        print(f"| {fmt} | {name} | {miou:.4f} | {100 * (miou - base):+.2f} | {agree} |")


if __name__ == "__main__":
    main()
