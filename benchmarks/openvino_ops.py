"""Where OpenVINO spends a tile, float32 against int8, by operation type.

Builds the README recipe's network (MobileUNet on MobileNetV2-0.35, 256 px input, 6 classes,
random weights, seed 0), exports ``openvino-fp32`` and ``openvino-int8`` with the functions of
``edgeseg export`` (int8 calibrated on random inputs), compiles both on the CPU with OpenVINO's
per-node performance counters on, runs a batch of tiles repeatedly and sums each node's
``real_time`` by operation type. Prints the machine, then a markdown table: per type, the
milliseconds per tile in float32 and in int8, their ratio, and the kernels OpenVINO chose
(``exec_type``; ``*_I8`` / ``*_U8`` are integer kernels), so that a reader sees which part of
the graph int8 speeds up and which it does not.

Usage: ``.venv/bin/python benchmarks/openvino_ops.py [--threads 2] [--batch 4] [--runs 30]``
(about two minutes on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from throughput import machine  # noqa: E402


def profile(xml: Path, batch: int, threads: int, runs: int) -> tuple[dict, dict, float]:
    """Milliseconds per tile by node type, the kernels per type, and the total per tile."""
    import numpy as np
    import openvino as ov

    core = ov.Core()
    model = core.read_model(xml)
    dims = model.input(0).get_partial_shape()  # batch is dynamic in the exported model
    shape = [1, *(dims[i].get_length() for i in range(1, len(dims)))]
    model.reshape({model.input(0).get_any_name(): [batch, *shape[1:]]})
    compiled = core.compile_model(model, "CPU", {"PERF_COUNT": "YES", "INFERENCE_NUM_THREADS": threads,
                                                 "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    x = np.random.default_rng(0).uniform(-1, 1, (batch, *shape[1:])).astype(np.float32)
    for _ in range(5):
        request.infer({0: x})
    times: dict[str, float] = defaultdict(float)
    kernels: dict[str, Counter] = defaultdict(Counter)
    for _ in range(runs):
        request.infer({0: x})
        for node in request.profiling_info:
            if node.status != node.Status.EXECUTED:
                continue
            times[node.node_type] += node.real_time.total_seconds() * 1e3 / runs / batch
            kernels[node.node_type][node.exec_type] += 1
    return dict(times), dict(kernels), sum(times.values())


def main() -> None:
    """Export both, profile both, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4, help="tiles per call")
    parser.add_argument("--runs", type=int, default=30, help="profiled calls per model")
    args = parser.parse_args()

    import numpy as np

    from edgeseg.models import build_model
    from export import ExportContext, ExportOptions, export_formats, parse_formats
    from export.context import tensorflow
    from firmware_bridge.runtime.metadata import ModelMetadata

    tf = tensorflow()
    tf.keras.utils.set_random_seed(0)
    model = build_model("mobileunet", "mobilenetv2_035", 6, input_size=(256, 256))
    meta = ModelMetadata(classes=[f"c{i}" for i in range(6)], input_size=(256, 256), tile_size=256,
                         tile_overlap=32, arch="mobileunet", backbone="mobilenetv2_035")
    calib = np.random.default_rng(0).uniform(-1, 1, (16, 256, 256, 3)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="edgeseg-ovops-") as tmp:
        ctx = ExportContext(model, meta, calib, None, ExportOptions())
        artifacts = export_formats(ctx, parse_formats("openvino-fp32,openvino-int8", with_qat=False),
                                   Path(tmp), log=lambda s: print(s, file=sys.stderr))
        xml = {a.format: next(f for f in a.files if str(f).endswith(".xml")) for a in artifacts}
        fp32 = profile(xml["openvino-fp32"], args.batch, args.threads, args.runs)
        int8 = profile(xml["openvino-int8"], args.batch, args.threads, args.runs)
    import openvino as ov

    print(f"machine: {machine()}; OpenVINO {ov.get_version()}; MobileUNet-0.35, 256 px tiles, "
          f"batch {args.batch}, {args.threads} threads, {args.runs} profiled calls")
    print("| operation type | float32 ms per tile | int8 ms per tile | float32 / int8 | int8 kernels |")
    print("|---|---|---|---|---|")
    kinds = sorted(set(fp32[0]) | set(int8[0]), key=lambda k: -(fp32[0].get(k, 0) + int8[0].get(k, 0)))
    for kind in kinds:
        f, i = fp32[0].get(kind, 0.0), int8[0].get(kind, 0.0)
        if f + i < 0.01:
            continue
        ratio = f"{f / i:.2f}x" if f and i else ""
        used = ", ".join(k for k, _ in int8[1].get(kind, Counter()).most_common(3))
        print(f"| {kind} | {f:.3f} | {i:.3f} | {ratio} | {used} |")
    print(f"| **all** | {fp32[2]:.3f} | {int8[2]:.3f} | {fp32[2] / int8[2]:.2f}x | |")


if __name__ == "__main__":
    main()
