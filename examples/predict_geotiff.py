"""The device side in Python: predict a GeoTIFF of any size with an exported model.

Needs only ``pip install 'edgeseg[device,geo]'`` (numpy, LiteRT, pillow, rasterio; no
TensorFlow). The scene is read and the mask written block by block, so memory does not grow
with the scene; the mask GeoTIFF keeps the scene's CRS and transform. Without a scene, a
generated 1024 x 1024 GeoTIFF is written first.

Usage: python examples/predict_geotiff.py MODEL OUT_DIR [--scene SCENE.tif]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from firmware_bridge.io.raster import predict_geotiff
from firmware_bridge.io.synthetic_raster import write_synthetic_raster
from firmware_bridge.runtime.segmenter import Segmenter, SegmenterOptions


def main(argv: list[str] | None = None) -> Path:
    """Predict the scene; returns the mask GeoTIFF's path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help=".tflite, .xml or .onnx model from edgeseg export")
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--scene", type=Path, help="input GeoTIFF (default: a generated one)")
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    scene = args.scene
    if scene is None:
        scene = args.out / "scene.tif"
        write_synthetic_raster(scene, 1024, 3)
    segmenter = Segmenter(args.model, options=SegmenterOptions(threads=2, batch=4))
    print(f"{args.model.name}: {segmenter.backend.name}, tiles {segmenter.tile}, "
          f"overlap {segmenter.overlap}, classes {', '.join(segmenter.class_names)}")
    mask_path = predict_geotiff(segmenter, scene, args.out / f"{scene.stem}_mask.tif", block=512).mask

    import rasterio

    with rasterio.open(mask_path) as mask:
        counts = np.bincount(mask.read(1).ravel(), minlength=segmenter.num_classes)
    shares = ", ".join(f"{name} {100 * c / counts.sum():.1f} %"
                       for name, c in zip(segmenter.class_names, counts, strict=False))
    print(f"{mask_path}: {shares}")
    return mask_path


if __name__ == "__main__":
    main()
