import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
from PIL import Image

from edgeseg.data import synthetic
from edgeseg.training.pretrain import corrupt


def test_corrupt_blanks_whole_patches_and_adds_noise():
    x = np.full((2, 32, 48, 3), 0.5, np.float32)
    rng = np.random.default_rng(0)
    out = corrupt(x, rng, noise=0.0, mask_ratio=0.5, patch=16)
    cells = out[:, ::16, ::16, 0]
    assert set(np.unique(cells)) == {0.0, 0.5}
    for n in range(2):
        for i in range(2):
            for j in range(3):
                cell = out[n, 16 * i:16 * i + 16, 16 * j:16 * j + 16]
                assert np.all(cell == cell[0, 0, 0])
    noisy = corrupt(x, np.random.default_rng(1), noise=0.1, mask_ratio=0.0, patch=16)
    assert np.std(noisy - x) == pytest.approx(0.1, rel=0.05)
    np.testing.assert_array_equal(corrupt(x, rng, 0.0, 0.0, 16), x)


def test_pretrain_cli_writes_encoder_weights_that_training_accepts(tmp_path):
    from edgeseg.training.runs import initial_model
    from edgeseg.training.train import TrainConfig

    images = tmp_path / "unlabelled"
    images.mkdir()
    for i in range(2):
        Image.fromarray(synthetic.generate_scene(96, 96, i)[0]).save(images / f"s{i}.png")
    out = tmp_path / "pre"
    proc = subprocess.run(
        [sys.executable, "-m", "edgeseg.cli", "pretrain", "--images", str(images), "--out", str(out),
         "--crop", "64", "--batch", "4", "--epochs", "2", "--steps-per-epoch", "5", "--lr", "3e-3"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads((out / "pretrain.json").read_text())
    assert info["images"] == 2 and len(info["losses"]) == 2
    assert info["losses"][1] < info["losses"][0]
    config = TrainConfig(num_classes=5, crop=64, encoder_weights=str(out))
    model, note = initial_model(config, (64, 64))
    assert "encoder.h5" in note
    with h5py.File(out / "encoder.h5", "r") as f:  # loaded by order; every layer lands by name
        names = [n.decode() if isinstance(n, bytes) else n for n in f.attrs["layer_names"]]
        checked = 0
        for name in names:
            group = f[name]
            weight_names = [w.decode() if isinstance(w, bytes) else w for w in group.attrs["weight_names"]]
            if not weight_names:
                continue
            for mine, wname in zip(model.get_layer(name).get_weights(), weight_names, strict=True):
                np.testing.assert_array_equal(mine, np.asarray(group[wname]))
                checked += 1
        saved = np.asarray(f["Conv1"]["Conv1"]["kernel:0"])
    assert checked == 260  # MobileNetV2 no-top: 52 conv kernels + 52 batch-norms x 4
    scratch, _ = initial_model(TrainConfig(num_classes=5, crop=64), (64, 64))
    assert not np.array_equal(scratch.get_layer("Conv1").get_weights()[0], saved)
    # The batch-norm statistics are the data's, not the initial 0 and 1 that ten steps at
    # momentum 0.999 leave: at inference the deepest batch-norm output is normalised (per
    # channel, its spread over the images is about |gamma|), so the features vary with the
    # image. With stale statistics it was about 0.01 |gamma| everywhere.
    from edgeseg.tf_env import tf_keras

    _, keras = tf_keras()
    crops = np.stack([synthetic.generate_scene(64, 64, 10 + i)[0] for i in range(8)])
    deep = model.get_layer("block_16_project_BN")
    probe = keras.Model(model.input, deep.output)
    feats = probe((crops.astype(np.float32) - 127.5) / 127.5, training=False).numpy()
    gamma = np.abs(deep.get_weights()[0])
    ratio = feats.reshape(-1, feats.shape[-1]).std(axis=0) / gamma
    assert 0.3 < np.median(ratio) < 3.0, np.median(ratio)
