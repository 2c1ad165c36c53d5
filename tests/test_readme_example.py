"""The README's Python example runs as written, on generated scenes instead of the Dubai set."""

import re

import numpy as np
import pytest
from conftest import REPO

from edgeseg.data import synthetic

pytestmark = pytest.mark.slow


def readme_block() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("### The same in Python"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_goes_from_data_to_a_validated_int8_model(tmp_path, monkeypatch):
    rasterio = pytest.importorskip("rasterio")
    from affine import Affine

    data = tmp_path / "data"
    synthetic.write_dataset(data, 4, (128, 160), seed=0, prefix="train")
    synthetic.write_dataset(data, 2, (128, 160), seed=10, prefix="tile7")
    image, _ = synthetic.generate_scene(200, 260, seed=3)
    h, w = image.shape[:2]
    with rasterio.open(tmp_path / "scene.tif", "w", driver="GTiff", height=h, width=w, count=3,
                       dtype="uint8", crs="EPSG:32640",
                       transform=Affine(0.5, 0, 500000, 0, -0.5, 2700000)) as dst:
        dst.write(np.moveaxis(image[..., :3], -1, 0))
    code = readme_block()
    small = {  # the same calls at the size of a test: no weights file, a tiny budget
        '"examples/dubai_classes.csv"': repr(str(data / "classes.csv")),
        'encoder_weights="mobilenet_v2_0.35_224_no_top.h5", minutes=15':
            'encoder_weights="none", crop=64, batch=8, stage1_epochs=0, stage2_epochs=4, '
            'steps_per_epoch=12, val_tile=64, verbose=False',
        'run.qat("data/dubai_aerial")': 'run.qat("data/dubai_aerial", epochs=2, steps_per_epoch=8)',
    }
    for old, new in small.items():
        assert old in code, old
        code = code.replace(old, new)
    code = code.replace('"data/dubai_aerial"', repr(str(data)))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    outcome = namespace["outcome"]
    assert outcome.ok, outcome.parity.table() and outcome.parity.rows[0].format == "tflite-qat-int8"
    assert outcome.parity.rows[0].passed and outcome.artifact("tflite-qat-int8").path.is_file()
    with rasterio.open(tmp_path / "scene_mask.tif") as mask:
        assert (mask.width, mask.height) == (w, h)
        assert set(np.unique(mask.read(1)).tolist()) <= set(range(5))
