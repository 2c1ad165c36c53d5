"""Per-tile latency of several models measured side by side, the models taking turns.

Opens each model file through ``firmware_bridge``'s ``Segmenter`` (each file's own metadata)
and times one tile at a time through every model in turn, round after round, so that whatever
else the machine does falls on all of them alike; prints the median milliseconds per tile of
each, its ratio to the first, and the machine (``lscpu`` model name, cores, ISA flags) and the
runtimes' versions.

Usage: ``.venv/bin/python benchmarks/latency_side_by_side.py A.tflite B.tflite ... [--rounds 40]
[--threads 2]``.
"""

from __future__ import annotations

import argparse
from importlib.metadata import version
from pathlib import Path

from machine import cpu

from firmware_bridge.runtime.segmenter import Segmenter, SegmenterOptions
from firmware_bridge.runtime.variants import measure_ms


def main(argv: list[str] | None = None) -> None:
    """Time every model; print the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path, help="model files (the first is the reference)")
    parser.add_argument("--rounds", type=int, default=40, help="timed rounds (median kept)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    segs = [Segmenter(m, options=SegmenterOptions(batch=1, threads=args.threads)) for m in args.models]
    tiles = {s.tile for s in segs}
    if len(tiles) != 1:
        raise SystemExit(f"the models take different tiles ({sorted(tiles)}): compare like with like")
    ms = measure_ms(segs, rounds=args.rounds, warmup=5)
    print(f"{cpu()}; {args.threads} threads; tile {segs[0].tile[0]}x{segs[0].tile[1]}, batch 1, "
          f"median of {args.rounds} rounds taking turns; ai-edge-litert {version('ai-edge-litert')}\n")
    print("| model | backend | ms per tile | against the first |\n|---|---|---|---|")
    for path, seg, t in zip(args.models, segs, ms, strict=True):
        print(f"| {path} | {seg.backend.name} | {t:.2f} | {t / ms[0]:.2f}x |")


if __name__ == "__main__":
    main()
