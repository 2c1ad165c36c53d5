"""Device throughput of every format against TensorFlow, through the same tiled path, in one run.

Builds the README recipe's network (MobileUNet on MobileNetV2-0.35, 256 px input or ``--tile``, 6 classes;
random weights, seed 0: speed does not depend on the values), exports it with the same
functions as ``edgeseg export`` (int8 formats calibrated on random inputs), generates one
GeoTIFF, and for each artifact and for the Keras model in TensorFlow measures:

* the runtime alone: the backend's own call on a prepared batch (p50 per tile);
* a large scene streamed to a mask GeoTIFF through ``predict_geotiff`` (new megapixels per
  second), and its share of the runtime's own rate of new pixels (``(tile - overlap)^2`` per
  tile);
* speed-ups against TensorFlow through the same tiling, and int8 against fp32 on one backend.

Usage: ``.venv/bin/python benchmarks/throughput.py [--size 8192] [--threads 2] [--batch 4]
[--tile 256] [--overlap 32]``
(prints the machine, then a markdown table; about five minutes on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from machine import cpu  # noqa: E402 -- the script's own folder

FORMATS = "tflite-fp32,tflite-int8,onnx,openvino-fp32,openvino-int8"


def measure(seg, scene: Path, out: Path, batch: int, runs: int = 40) -> dict:
    """Runtime-alone latency per tile and the streamed scene's rate for one Segmenter."""
    import numpy as np

    from firmware_bridge.io.raster import predict_geotiff

    th, tw = seg.tile
    tiles = np.random.default_rng(0).integers(0, 256, (batch, th, tw, seg.channels), np.uint8)
    x = seg.preprocess(tiles)
    for _ in range(5):
        seg.backend.run(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        seg.backend.run(x)
        times.append((time.perf_counter() - start) / batch)
    per_tile = float(np.percentile(times, 50))
    predict_geotiff(seg, scene, out, block=1024)  # warm: file cache, thread pools
    start = time.perf_counter()
    predict_geotiff(seg, scene, out, block=1024)
    seconds = time.perf_counter() - start
    import rasterio

    with rasterio.open(scene) as ds:
        mpix = ds.width * ds.height / 1e6
    new_px = (th - seg.overlap) * (tw - seg.overlap)
    runtime_rate = new_px / per_tile / 1e6
    return {"tile_ms": per_tile * 1e3, "streamed": mpix / seconds, "seconds": seconds,
            "share": mpix / seconds / runtime_rate}


def main() -> None:
    """Export, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192, help="edge of the generated scene")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4, help="tiles per call")
    parser.add_argument("--tile", type=int, default=256, help="tile edge: the exported input size")
    parser.add_argument("--overlap", type=int, default=32, help="overlap between tiles, pixels")
    args = parser.parse_args()
    t = args.tile

    import numpy as np

    from edgeseg.models import build_model
    from export import ExportContext, ExportOptions, export_formats, parse_formats
    from export.context import tensorflow
    from export.keras_backend import keras_segmenter
    from firmware_bridge.io.synthetic_raster import write_synthetic_raster_in_child
    from firmware_bridge.runtime.metadata import ModelMetadata
    from firmware_bridge.runtime.segmenter import Segmenter, SegmenterOptions

    tf = tensorflow()
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.keras.utils.set_random_seed(0)
    model = build_model("mobileunet", "mobilenetv2_035", 6, input_size=(t, t))
    meta = ModelMetadata(classes=[f"c{i}" for i in range(6)], input_size=(t, t), tile_size=t,
                         tile_overlap=args.overlap, arch="mobileunet", backbone="mobilenetv2_035")
    calib = np.random.default_rng(0).uniform(-1, 1, (16, t, t, 3)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="edgeseg-throughput-") as tmp:
        tmp = Path(tmp)
        ctx = ExportContext(model, meta, calib, None, ExportOptions())
        artifacts = export_formats(ctx, parse_formats(FORMATS, with_qat=False), tmp / "models",
                                   log=lambda s: print(s, file=sys.stderr))
        scene = tmp / "scene.tif"
        write_synthetic_raster_in_child(scene, args.size, 3)
        rows = {}
        keras = keras_segmenter(model, meta, batch=args.batch)
        rows["tensorflow (Keras)"] = measure(keras, scene, tmp / "m.tif", args.batch)
        for a in artifacts:
            seg = Segmenter(a.files[0], options=SegmenterOptions(threads=args.threads, batch=args.batch))
            rows[a.format] = measure(seg, scene, tmp / "m.tif", args.batch)
            print(f"{a.format}: {rows[a.format]}", file=sys.stderr)
    tf_rate = rows["tensorflow (Keras)"]["streamed"]
    print(f"machine: {cpu()}; {args.size} x {args.size} scene, {t} px tiles, {args.overlap} px overlap, "
          f"batch {args.batch}, {args.threads} threads")
    print("| format | runtime alone, ms per tile | streamed MPix/s | streamed / runtime's own rate "
          "| streamed vs TensorFlow | int8 vs fp32 per tile |")
    print("|---|---|---|---|---|---|")
    pairs = {"tflite-int8": "tflite-fp32", "openvino-int8": "openvino-fp32"}
    for name, r in rows.items():
        fp32 = rows.get(pairs.get(name, ""))
        ratio = f"{fp32['tile_ms'] / r['tile_ms']:.2f}x" if fp32 else ""
        print(f"| {name} | {r['tile_ms']:.2f} | {r['streamed']:.2f} | {r['share']:.2f} | "
              f"{r['streamed'] / tf_rate:.2f}x | {ratio} |")


if __name__ == "__main__":
    main()
