"""A runtime is one row of the backend table: a throw-away numpy backend, registered here and
nowhere else, runs through ``Segmenter``, the scoring loop and the ``edgeseg-run`` commands."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_models import smooth_image

from firmware_bridge.cli import main
from firmware_bridge.errors import EdgesegError
from firmware_bridge.evaluate import score
from firmware_bridge.runtime.backends import BACKENDS, Backend, BackendEntry, TensorSpec, backend_for
from firmware_bridge.runtime.segmenter import Segmenter, SegmenterOptions


class PixelMatmul(Backend):
    """A ``.npz`` holding ``w`` (C x K): logits are each pixel's bands times ``w``."""

    name = "numpy"

    def __init__(self, path: Path, options) -> None:
        with np.load(path) as data:
            self.w = data["w"].astype(np.float32)
        c, k = self.w.shape
        f32 = np.dtype(np.float32)
        super().__init__(path, TensorSpec("x", (None, None, None, c), f32),
                         TensorSpec("y", (None, None, None, k), f32))

    def _infer(self, x: np.ndarray) -> np.ndarray:
        return x @ self.w


@pytest.fixture
def numpy_model(tmp_path, monkeypatch):
    monkeypatch.setitem(BACKENDS, "numpy", BackendEntry("numpy", PixelMatmul, (".npz",), ("np",)))
    path = tmp_path / "red_or_not.npz"
    np.savez(path, w=np.array([[1.0, -1.0], [-0.5, 0.5], [-0.25, 0.25]], np.float32))
    return path


FOREIGN = ["--classes", "red,other", "--output-kind", "logits", "--tile", "32", "--overlap", "8"]


def truth_of(image: np.ndarray) -> np.ndarray:
    """What the model computes: class 1 where ``4 r - 2 g - b < 127.5`` (the logits of pixels
    normalised as ``(p - 127.5) / 127.5``). The left side is an integer, so no pixel is a tie
    that float rounding would decide."""
    rgb = image.astype(np.int32)
    return (4 * rgb[..., 0] - 2 * rgb[..., 1] - rgb[..., 2] < 127.5).astype(np.uint8)


def test_a_registered_row_is_all_a_backend_needs(numpy_model, tmp_path, capsys):
    assert backend_for(numpy_model) == "numpy" and backend_for("m.bin", "np") == "numpy"
    seg = Segmenter(numpy_model, options=SegmenterOptions(classes=["red", "other"], output="logits",
                                                          tile=32, overlap=8, batch=3))
    assert seg.backend.name == "numpy" and seg.num_classes == 2
    image = smooth_image(70, 90, seed=5)
    mask = seg.predict_tiled(image).mask
    assert 0.1 < truth_of(image).mean() < 0.9  # both classes, with borders between them
    np.testing.assert_array_equal(mask, truth_of(image))  # per pixel: tiling changes nothing
    scored = score(seg, [(image, truth_of(image))], reference=[mask])
    assert scored.scores.miou == 1.0 and scored.agreement == 1.0

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    for i in range(2):
        im = smooth_image(60, 80, seed=10 + i)
        Image.fromarray(im).save(data / "images" / f"s{i}.png")
        Image.fromarray(truth_of(im)).save(data / "masks" / f"s{i}.png")
    report = tmp_path / "v.json"
    assert main(["validate", str(numpy_model), "--data", str(data), *FOREIGN,
                 "--json", str(report), "--quiet"]) == 0
    result = json.loads(report.read_text())
    assert result["backend"] == "numpy" and result["miou"] == 1.0 and result["images"] == 2
    out = tmp_path / "out"
    assert main(["predict", str(numpy_model), str(data / "images" / "s0.png"), "--out", str(out),
                 *FOREIGN, "--quiet"]) == 0
    written = np.asarray(Image.open(out / "s0_mask.png"))
    np.testing.assert_array_equal(written, np.asarray(Image.open(data / "masks" / "s0.png")))


def test_unknown_backend_lists_the_table(numpy_model):
    with pytest.raises(EdgesegError, match="litert, openvino, onnxruntime, numpy"):
        backend_for("m.tflite", "tensorrt")
    with pytest.raises(EdgesegError, match=r"\.tflite/\.xml/\.onnx/\.npz"):
        backend_for("m.pt")
