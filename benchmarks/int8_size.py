"""Where the bytes of an int8 TFLite segmentation model go, per backbone width.

This script builds the
default MobileUNet on each MobileNetV2 width (random weights: a file's size depends on tensor
shapes, not values), exports ``tflite-fp32`` and ``tflite-int8`` through the same export
functions as ``edgeseg export`` (PTQ on random calibration inputs), and splits each int8 file
into int8 weights, int32 biases, quantization parameters (per-channel tensors carry a float32
scale and an int64 zero point per output channel, weights and biases alike) and the rest
(graph, metadata).

Usage: ``.venv/bin/python benchmarks/int8_size.py [--backbones mobilenetv2_035,...] [--size 256]``
(prints a markdown table; about a minute per backbone on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def breakdown(data: bytes) -> dict[str, int]:
    """Bytes of an int8 flatbuffer by kind, read with TFLite's flatbuffer schema.

    Args:
        data: The TFLite flatbuffer (metadata appended or not).

    Returns:
        ``{"weights", "biases", "qparams", "rest", "total"}`` in bytes: the constant buffers
        operators take as their second (weights) and third (bias) input, the quantization
        scales (float32) and zero points (int64) of all tensors, and everything else.
    """
    from firmware_bridge.errors import require

    schema = require("ai_edge_litert.schema_py_generated", "device")  # as export.tflite_ops
    model = schema.Model.GetRootAsModel(data, 0)
    graph = model.Subgraphs(0)
    out = {"weights": 0, "biases": 0, "qparams": 0}
    seen: set[int] = set()
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        for position in (1, 2):
            if position >= op.InputsLength() or op.Inputs(position) < 0:
                continue
            buffer = graph.Tensors(op.Inputs(position)).Buffer()
            if buffer in seen:
                continue
            seen.add(buffer)
            out["weights" if position == 1 else "biases"] += model.Buffers(buffer).DataLength()
    for i in range(graph.TensorsLength()):
        q = graph.Tensors(i).Quantization()
        if q is not None:
            out["qparams"] += 4 * q.ScaleLength() + 8 * q.ZeroPointLength()
    out["total"] = len(data)
    out["rest"] = out["total"] - out["weights"] - out["biases"] - out["qparams"]
    return out


def randomise_statistics(model, seed: int = 0) -> None:
    """Give every batch-norm and bias distinct values, as training would.

    Fresh layers have all-zero biases and identity batch norms, whose folded biases the
    converter stores once and shares; a trained model has one buffer per layer.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        if layer.__class__.__name__ == "BatchNormalization":  # gamma, beta, mean, variance
            gamma, beta, mean, var = (0.1 * rng.standard_normal(w.shape) for w in weights)
            weights = [1 + gamma, beta, mean, 1 + np.abs(var)]
        elif len(weights) == 2:  # kernel, bias
            weights = [weights[0], 0.1 * rng.standard_normal(weights[1].shape)]
        layer.set_weights([w.astype(np.float32) for w in weights])


def measure(backbone: str, size: int, workdir: Path) -> dict:
    """Export one random-weight MobileUNet to fp32 and int8 TFLite and measure both files."""
    import numpy as np

    from edgeseg.models import build_model
    from export.context import ExportContext
    from export.formats import export_formats, parse_formats
    from firmware_bridge.runtime.metadata import ModelMetadata

    model = build_model("mobileunet", backbone, 5, input_size=(size, size))
    randomise_statistics(model)
    calib = np.random.default_rng(0).uniform(-1, 1, (8, size, size, 3)).astype(np.float32)
    ctx = ExportContext(model, ModelMetadata(classes=[f"c{i}" for i in range(5)]), calib)
    out = workdir / backbone
    arts = {a.format: a.path for a in export_formats(ctx, parse_formats("tflite-fp32,tflite-int8"), out)}
    fp32 = arts["tflite-fp32"].stat().st_size
    parts = breakdown(arts["tflite-int8"].read_bytes())
    return {"backbone": backbone, "params": model.count_params(), "fp32": fp32, **parts}


def main() -> None:
    """Measure the chosen backbones and print the markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbones", default="mobilenetv2_035,mobilenetv2_050,mobilenetv2_075,mobilenetv2_100")
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for backbone in args.backbones.split(","):
            print(f"[int8-size] {backbone} ...", file=sys.stderr, flush=True)
            rows.append(measure(backbone, args.size, Path(tmp)))
    kb = lambda n: f"{n / 1024:.0f}"  # noqa: E731
    print(f"MobileUNet, 5 classes, {args.size}x{args.size} input, PTQ int8 (int8 in/out), sizes in KiB\n")
    print("| backbone | params | fp32 file | int8 file | int8 / fp32 | int8 weights | int32 biases "
          "| scales + zero points | graph + metadata |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['backbone']} | {r['params']:,} | {kb(r['fp32'])} | {kb(r['total'])} | "
              f"{r['total'] / r['fp32']:.3f}x | {kb(r['weights'])} | {kb(r['biases'])} | "
              f"{kb(r['qparams'])} ({r['qparams'] / r['total']:.0%}) | {kb(r['rest'])} |")


if __name__ == "__main__":
    main()
