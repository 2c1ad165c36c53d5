"""The README's Python examples run as scripts: train and export on the workstation, then
predict a GeoTIFF on the device side with the model they wrote."""

import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

pytestmark = pytest.mark.slow


def run(script, *args):
    proc = subprocess.run([sys.executable, str(REPO / "examples" / script), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_examples_train_export_then_predict_a_geotiff(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    out = run("train_and_export.py", tmp_path / "ws", "--steps", "6")
    model = tmp_path / "ws" / "export" / "model_int8.tflite"
    assert model.is_file() and f"{model}: int8 mIoU" in out
    printed = run("predict_geotiff.py", model, tmp_path / "device")
    mask = tmp_path / "device" / "scene_mask.tif"
    assert f"{mask}:" in printed and "building" in printed
    with rasterio.open(tmp_path / "device" / "scene.tif") as src, rasterio.open(mask) as dst:
        assert (dst.width, dst.height, dst.count) == (1024, 1024, 1)
        assert dst.crs == src.crs and dst.transform == src.transform
        values = np.unique(dst.read(1))
    assert set(values.tolist()) <= set(range(5))
