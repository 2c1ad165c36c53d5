"""Score an edgeseg run and the plain tf-keras peer the same way, on images neither has seen.

Both Keras models go through the same tiled ``Segmenter`` (256 px tiles, 32 px overlap) and the
same confusion matrix (``firmware_bridge.evaluate.score``); the table has each model's mIoU and
per-class IoU.

Usage: ``.venv/bin/python benchmarks/peer_compare.py --run RUN --peer peer.keras --data TEST_DIR
--classes CSV`` (``TEST_DIR`` holds ``images/`` and ``masks/``; see ``benchmarks/peer_keras.py``
for the peer and the README for ``edgeseg train``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


def main() -> None:
    """Score both models and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="edgeseg run folder")
    parser.add_argument("--peer", required=True, help="the peer's saved .keras model")
    parser.add_argument("--data", required=True, help="test images/ and masks/")
    parser.add_argument("--classes", required=True, help="class table CSV")
    args = parser.parse_args()

    from edgeseg.tf_env import tf_keras
    from edgeseg.training.runs import load_run, run_metadata
    from export.keras_backend import keras_segmenter
    from firmware_bridge.evaluate import score
    from firmware_bridge.io.classes import ClassTable
    from firmware_bridge.io.images import read_image, read_mask
    from firmware_bridge.io.pairs import find_pairs

    _, keras = tf_keras()
    table = ClassTable.load(args.classes)
    pairs = find_pairs(args.data).pairs
    data = [(read_image(p.image), table.decode_mask(read_mask(p.mask), str(p.mask))) for p in pairs]
    meta = run_metadata(args.run)
    ours, _ = load_run(args.run, (256, 256))
    peer = keras.models.load_model(args.peer, compile=False)
    inp = keras.Input((256, 256, 3))
    peer_fixed = keras.Model(inp, peer(inp))  # the same 256 px tiles as ours
    rows = {}
    for name, model in (("edgeseg train", ours), ("plain tf-keras peer", peer_fixed)):
        rows[name] = score(keras_segmenter(model, meta, overlap=32), iter(data), table.names).scores
    print(f"{len(data)} test images ({args.data}); 256 px tiles, 32 px overlap")
    print("| model | mIoU | " + " | ".join(table.names) + " |")
    print("|---|---|" + "---|" * len(table.names))
    for name, s in rows.items():
        print(f"| {name} | {s.miou:.4f} | " + " | ".join(f"{v:.3f}" for v in s.iou) + " |")


if __name__ == "__main__":
    main()
